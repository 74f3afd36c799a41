"""Cheap changes on top of the default's frozen features: element-wise transforms and served-view combinations.

python bench/exp_feature_transforms.py DATA_DIR [DATA_DIR ...]: 5-fold CV (`bench.exp_cv.cv_scores`, crops in the
training folds) of the standardised logistic head on Lite0 288-px centre-crop features (mirror averaged), with
each feature first passed through identity, signed square root, L2 normalisation, both, or log1p; then, with the
signed square root applied after combining, the served features averaged or concatenated over resize methods (centre crop, squish, pad;
each already mirror averaged, so 4-6 forward passes per photo instead of 2). Prints error / NLL per C.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cv_scores, data_args, labelled_sets  # noqa: E402
from bench.exp_resize import crops, served  # noqa: E402


def ssqrt(a: np.ndarray) -> np.ndarray:
    return np.sign(a) * np.sqrt(np.abs(a))


def l2(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


TRANSFORMS = {
    "identity": lambda a: a,
    "signed sqrt": ssqrt,
    "L2": l2,
    "sqrt + L2": lambda a: l2(ssqrt(a)),
    "log1p": lambda a: np.log1p(np.maximum(a, -0.99)),
}
CS = (0.001, 0.003, 0.01, 0.03)


def row(x: np.ndarray, y: np.ndarray, extra: np.ndarray | None) -> str:
    return "  ".join("C=%g: %.3f / %.3f" % ((C,) + cv_scores(x, y, C, extra=extra)) for C in CS)


def main() -> int:
    for data, ds, y in labelled_sets(data_args(sys.argv[1:], __doc__)):
        feats = {m: served(ds.paths, m)[0] for m in ("crop", "squish", "pad")}
        v = crops(ds.paths, "crop")
        for name, f in TRANSFORMS.items():
            print(f"{data.name:5s} {name:18s} {row(f(feats['crop']), y, f(v))}", flush=True)
        f = feats
        combos = {  # averaged first, then the signed square root
            "crop + squish avg": ((f["crop"] + f["squish"]) / 2, v),
            "crop + pad avg": ((f["crop"] + f["pad"]) / 2, v),
            "all three avg": ((f["crop"] + f["squish"] + f["pad"]) / 3, v),
            "crop | squish cat": (np.hstack([f["crop"], f["squish"]]), None),
        }
        for name, (x, extra) in combos.items():
            print(f"{data.name:5s} {name:18s} {row(ssqrt(x), y, None if extra is None else ssqrt(extra))}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
