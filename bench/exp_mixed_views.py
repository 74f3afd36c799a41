"""Two backbones for the price of about one: a different network on each of the two served views. 5-fold CV.

python bench/exp_mixed_views.py DATA_DIR [DATA_DIR ...]: the served network averages two views of every photo (the
288-px centre crop and the mirror image of its central 80 %, zoomed). Here each view goes through its own backbone
and its own logistic head (fitted on that view plus k of the 4 random resized crops per training image of
`bench/exp_backbones.py`, through the same backbone), and the two heads' logits (or probabilities) are averaged.
Serving costs one forward of each backbone instead of two of Lite0. Compared with the default (Lite0 on both views,
features averaged, one head) and with two full two-view models averaged (`exp_backbones.py`'s best rows, twice the
cost). Single-view features are cached under /tmp/exp_mixed; the crops come from /tmp/exp_backbones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_backbones import ARCHS, backbone_features  # noqa: E402
from bench.exp_cv import cached_npz, cv_scores, data_args, labelled_sets  # noqa: E402

CS = (0.0003, 0.001, 0.003, 0.01)
CACHE = Path("/tmp/exp_mixed")


def view_features(paths, short: str, size: int = 288) -> dict[str, np.ndarray]:
    """{"plain": (N, nf), "zoom": (N, nf)}: pooled features of the centre crop and of the network's second view."""
    import torch

    from snake_model.loader import load_image
    from snake_model.network import build_network
    from snake_model.preprocess import preprocess_batch
    from snake_model.spec import ModelSpec
    from train.features import FeatureRunner
    from train.recipe_fast import FAST

    arch = ARCHS[short]

    def compute() -> dict[str, np.ndarray]:
        net = build_network(arch, 1, pretrained=True, tta_flip=False, tta_zoom=FAST["tta_zoom"]).eval()
        spec = ModelSpec(labels=["x"], arch=arch, image_size=size, resize_method="crop")
        run = FeatureRunner(net, spec, torch.device("cpu"))
        plain, zoom = [], []
        for s in range(0, len(paths), 32):
            x = preprocess_batch(paths[s : s + 32], spec, load_image)
            plain.append(run(x)[1])
            with torch.inference_mode():
                xz = net.second_view(torch.from_numpy(x)).numpy()
            zoom.append(run(np.ascontiguousarray(xz))[1])
        return {"plain": np.concatenate(plain), "zoom": np.concatenate(zoom)}

    return cached_npz(CACHE / f"{Path(paths[0]).parent.parent.name}_{short}_{size}.npz", compute)


def head_oof(x, y, v) -> tuple[np.ndarray, float]:
    """Out-of-fold probabilities (fold seed 0) at the C with the lowest out-of-fold NLL, and that C."""
    rows = []
    for C in CS:
        oof = np.zeros((len(y), y.max() + 1))
        _, nll = cv_scores(x, y, C, extra=v, oof=oof)
        rows.append((nll, C, oof))
    nll, C, oof = min(rows, key=lambda r: r[0])
    return oof, C


def scores(p: np.ndarray, y: np.ndarray) -> str:
    err = float((p.argmax(1) != y).mean())
    nll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    return f"error {err:.3f}  NLL {nll:.3f}"


def logit_mean(*ps: np.ndarray) -> np.ndarray:
    z = np.mean([np.log(np.clip(p, 1e-12, None)) for p in ps], axis=0)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def main() -> int:
    for data, ds, y in labelled_sets(data_args(sys.argv[1:], __doc__)):
        views = {s: view_features(ds.paths, s) for s in ARCHS}
        crops = {s: backbone_features(ds.paths, s)["crops"] for s in ARCHS}
        pair = {}
        for s in ARCHS:  # the default's way: both views through one backbone, features averaged, one head
            pair[s], C = head_oof((views[s]["plain"] + views[s]["zoom"]) / 2, y, crops[s])
            print(f"{data.name:5s} {s} on both views (features averaged): {scores(pair[s], y)} (C={C})", flush=True)
        for a, b in (("lite0", "lite1"), ("lite1", "lite0"), ("lite0", "lite2")):
            for k in (2, 4):
                pa, ca = head_oof(views[a]["plain"], y, crops[a][:, :k])
                pb, cb = head_oof(views[b]["zoom"], y, crops[b][:, 4 - k :])
                print(
                    f"{data.name:5s} {a} on the photo, {b} on the zoomed mirror, {k} crops each (C={ca}, {cb}): "
                    f"logits averaged {scores(logit_mean(pa, pb), y)}; probabilities averaged {scores((pa + pb) / 2, y)}",
                    flush=True,
                )
        for a, b in (("lite0", "lite1"), ("lite0", "lite2")):
            print(f"{data.name:5s} {a} pair + {b} pair (4 forwards): {scores(logit_mean(pair[a], pair[b]), y)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
