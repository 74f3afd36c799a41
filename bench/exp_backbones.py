"""Do the Lite1/Lite2 wheels pay for their cost, alone or next to Lite0? 5-fold CV of the default head.

python bench/exp_backbones.py DATA_DIR [DATA_DIR ...]: the default head (288-px centre crop, served features of the
photo and its mirrored zoom-0.8 view averaged, logistic head fitted on those plus 4 random resized crops per training
image, `bench.exp_cv.cv_scores`) on the features of each offline ImageNet backbone (Lite0, the default; Lite1;
Lite2), then on two backbones' features concatenated (one head, twice the features and the serving compute) and on
two heads' probabilities averaged. Also prints each backbone's feature time per photo (served view pair + 4 crops)
through the ONNX Runtime path train.fit uses, on this machine. Features are cached under /tmp/exp_backbones.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cached_npz, cv_scores, data_args, labelled_sets  # noqa: E402

CS = (0.001, 0.003, 0.01)
CACHE = Path("/tmp/exp_backbones")
ARCHS = {"lite0": "tf_efficientnet_lite0", "lite1": "tf_efficientnet_lite1", "lite2": "tf_efficientnet_lite2"}


def backbone_features(paths, short: str, size: int = 288) -> dict[str, np.ndarray]:
    """{"served": (N, nf), "crops": (N, 4, nf), "secs": seconds} for one backbone, as train.fit computes them."""
    import torch

    from snake_model.network import build_network
    from snake_model.spec import ModelSpec
    from train.recipe_fast import FAST, augmented_features, full_pass

    arch = ARCHS[short]

    def compute() -> dict[str, np.ndarray]:
        z = FAST["tta_zoom"]
        net = build_network(arch, 1, pretrained=True, tta_flip=True, tta_zoom=z).eval()
        spec = ModelSpec(labels=["x"], arch=arch, image_size=size, resize_method="crop", tta_flip=True, tta_zoom=z)
        t = time.time()
        served = full_pass(net, paths, spec, device=torch.device("cpu"))[1]
        views = augmented_features(net, paths, spec, FAST["aug_views"], seed=42, device=torch.device("cpu"))
        return {"served": served, "crops": views, "secs": np.array(time.time() - t)}

    name = Path(paths[0]).parent.parent.name
    return cached_npz(CACHE / f"{name}_{short}_{size}.npz", compute)


def best(x, y, v) -> tuple[float, float, float, np.ndarray]:
    """(error, NLL, C, out-of-fold probabilities) at the C with the lowest out-of-fold NLL."""
    rows = []
    for C in CS:
        oof = np.zeros((len(y), y.max() + 1))
        err, nll = cv_scores(x, y, C, extra=v, oof=oof)
        rows.append((nll, err, C, oof))
    nll, err, C, oof = min(rows, key=lambda r: r[0])
    return err, nll, C, oof


def main() -> int:
    for data, ds, y in labelled_sets(data_args(sys.argv[1:], __doc__)):
        feats = {s: backbone_features(ds.paths, s) for s in ARCHS}
        for s, f in feats.items():
            print(f"{data.name:5s} {s}: {1000 * float(f['secs']) / len(y):.0f} ms of features per photo", flush=True)
        oofs = {}
        for s, f in feats.items():
            err, nll, C, oofs[s] = best(f["served"], y, f["crops"])
            print(f"{data.name:5s} {s:14s} error {err:.3f}  NLL {nll:.3f}  (C={C})", flush=True)
        for a, b in (("lite0", "lite1"), ("lite0", "lite2")):
            x = np.concatenate([feats[a]["served"], feats[b]["served"]], 1)
            v = np.concatenate([feats[a]["crops"], feats[b]["crops"]], 2)
            err, nll, C, _ = best(x, y, v)
            print(f"{data.name:5s} {a}‖{b:8s} error {err:.3f}  NLL {nll:.3f}  (C={C}, concatenated)", flush=True)
            p = (oofs[a] + oofs[b]) / 2
            err = float((p.argmax(1) != y).mean())
            nll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
            print(f"{data.name:5s} {a}+{b:8s} error {err:.3f}  NLL {nll:.3f}  (probabilities averaged)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
