"""Does the resize method matter for the default's frozen features? 5-fold CV, Lite0 at 288 px, mirror averaged.

python bench/exp_resize.py DATA_DIR [DATA_DIR ...] : for squish (the default), pad (reflection, keeps the aspect
ratio) and crop (centre crop), the features of every image through the ONNX Runtime path (cached under
/tmp/exp_resize), then the 5-fold CV error of a standardised logistic head at three strengths; then squish
and crop again with the default's 4 random resized crops per training image added to the training folds
(`train.recipe_fast.augmented_features`, the crops resized by the method under test).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cached_npz, cv_error, cv_scores, data_args, labelled_sets  # noqa: E402


def main() -> int:
    for data, ds, y in labelled_sets(data_args(sys.argv[1:], __doc__)):
        for method in ("squish", "pad", "crop"):
            t = time.time()
            x, ok = served(ds.paths, method)
            secs = time.time() - t
            res = "  ".join(f"C={C}: {cv_error(x[ok], y[ok], C):.3f}" for C in (0.003, 0.01, 0.03))
            print(f"{data.name:5s} {method:7s} ({secs:.0f} s features)  {res}", flush=True)
        for method in ("squish", "crop"):
            x, ok = served(ds.paths, method)
            t = time.time()
            views = crops(ds.paths, method)
            secs = time.time() - t
            res = "  ".join(f"C={C}: {cv_scores(x[ok], y[ok], C, extra=views[ok])[0]:.3f}" for C in (0.003, 0.01, 0.03))
            print(f"{data.name:5s} {method + '+crops':13s} ({secs:.0f} s crops)  {res}", flush=True)
    return 0


def served(paths, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, readable) of every image as served: Lite0 at 288 px, mirror averaged; cached in /tmp/exp_resize."""
    from train.features import extract_features

    return extract_features(
        paths, image_size=288, resize_method=method, flip=True, cache_dir="/tmp/exp_resize", progress=False
    )


def crops(paths, method: str) -> np.ndarray:
    """(N, 4, nf) features of the default's 4 random resized crops per image, cached."""
    import torch

    from snake_model.network import build_network
    from snake_model.spec import ModelSpec
    from train.recipe_fast import FAST, augmented_features

    def compute() -> dict[str, np.ndarray]:
        model = build_network("tf_efficientnet_lite0", 1, pretrained=True).eval()
        spec = ModelSpec(labels=["x"], image_size=288, resize_method=method)
        views = augmented_features(model, paths, spec, FAST["aug_views"], seed=42, device=torch.device("cpu"))
        return {"crops": views}

    cache = Path("/tmp/exp_resize") / f"crops_{Path(paths[0]).parent.parent.name}_{method}.npz"
    return cached_npz(cache, compute)["crops"]


if __name__ == "__main__":
    raise SystemExit(main())
