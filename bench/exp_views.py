"""Experiments for issue 5: multi-layer features and augmented training views, in 5-fold CV.

python bench/exp_views.py DATA_DIR [SIZE] : for every image, the plain view, its mirror and N_AUG random
resized crops (scale 0.35-1, random mirror) through the frozen Lite0 body, keeping average-pooled outputs of
blocks 4, 5, 6 and the final 1x1 conv (cached under /tmp/exp_views). Then the 5-fold CV error of a
standardised logistic head for each variant:
  final           : final features, plain and mirror averaged (the current default)
  multi           : final + blocks 4-6 features concatenated
  final+aug       : final features; training folds also get one row per random crop
  multi+aug       : both
Every view of an image stays in its image's fold. Numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cached_npz, cv_scores, data_args, labelled_sets, parse_arg  # noqa: E402
from snake_model.loader import load_image  # noqa: E402
from snake_model.network import build_network  # noqa: E402
from snake_model.preprocess import preprocess  # noqa: E402
from snake_model.spec import ModelSpec  # noqa: E402
from train.recipe_fast import random_resized_crop as rrc  # noqa: E402

N_AUG = 4
TAPS = (4, 5, 6)


@torch.inference_mode()
def features(paths, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    net = build_network("tf_efficientnet_lite0", 1, pretrained=True).body.eval()
    spec = ModelSpec(labels=["x"], image_size=size, resize_method="squish")
    taps: dict[int, torch.Tensor] = {}
    for i in TAPS:
        net.blocks[i].register_forward_hook(lambda m, a, out, i=i: taps.__setitem__(i, out.mean((2, 3))))
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ["final", *[f"b{i}" for i in TAPS]]}
    t = time.time()
    for j, p in enumerate(paths):
        img = load_image(p)
        views = [img, None] + [rrc(img, rng) for _ in range(N_AUG)]
        x = np.stack([preprocess(v, spec) for v in views if v is not None])
        x = torch.from_numpy(np.concatenate([x[:1], x[:1, :, :, ::-1].copy(), x[1:]]))
        f = net(x).mean((2, 3))
        out["final"].append(f.numpy())
        for i in TAPS:
            out[f"b{i}"].append(taps[i].numpy())
        if j % 100 == 0:
            print(f"  {j}/{len(paths)} {time.time() - t:.0f}s", flush=True)
    return {k: np.stack(v) for k, v in out.items()}  # (N, nv, d)


def main() -> int:
    args = data_args(sys.argv[1:], __doc__, most=2)
    size = parse_arg(__doc__, "SIZE", args[1], int, lambda v: v > 0, "a positive number of pixels") if args[1:] else 288
    sets = list(labelled_sets(args[:1]))
    if not sets:
        return 0
    data, ds, y = sets[0]
    cache = Path("/tmp/exp_views") / f"{data.name}_{size}_{N_AUG}.npz"
    t = time.time()
    F = cached_npz(cache, lambda: features(ds.paths, size))
    print(f"{data.name} {size}px: {len(y)} images x {2 + N_AUG} views, features {time.time() - t:.0f}s", flush=True)
    fin = F["final"]
    multi = np.concatenate([F["final"], *[F[f"b{i}"] for i in TAPS]], axis=2)
    for name, arr in (("final", fin), ("multi", multi)):
        xva = arr[:, :2].mean(1)
        for aug in (False, True):
            res = []
            for C in (0.003, 0.01, 0.03):
                err, nll = cv_scores(xva, y, C, extra=arr[:, 2:] if aug else None)
                res.append(f"C={C}: {err:.3f} (nll {nll:.3f})")
            print(f"  {name + ('+aug' if aug else ''):<12} " + "  ".join(res), flush=True)
    calibration(fin, y)
    return 0


def calibration(fin: np.ndarray, y: np.ndarray) -> None:
    """ECE of the default's out-of-fold probabilities over every image, against its noise floor.

    The temperature is fitted on the out-of-fold logits of the *other* folds' images (nested), so the
    calibrated ECE is not measured on the data the temperature saw."""
    from sklearn.model_selection import StratifiedKFold

    from snake_model.predictor import softmax
    from train import metrics as M

    xva = fin[:, :2].mean(1)
    for C in (0.003, 0.01, 0.03):
        oof = np.zeros((len(y), int(y.max()) + 1))
        cv_scores(xva, y, C, extra=fin[:, 2:], oof=oof)
        logits = np.log(np.clip(oof, 1e-12, 1))
        cal = np.zeros_like(oof)
        for tr, va in StratifiedKFold(5, shuffle=True, random_state=1).split(xva, y):
            cal[va] = softmax(logits[va], M.fit_temperature(logits[tr], y[tr]))
        print(
            f"  final+aug C={C}: out-of-fold ECE {M.ece(oof, y):.3f} -> {M.ece(cal, y):.3f} after temperature "
            f"(T={M.fit_temperature(logits, y):.2f} on all); noise floor at n={len(y)}: {M.ece_noise_floor(cal):.3f}",
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
