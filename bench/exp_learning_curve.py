"""Would training on every image (no validation split) pay? A learning curve of the default in k-fold CV.

python bench/exp_learning_curve.py DATA_DIR [DATA_DIR ...] : the default's features (centre crop 288 px, plain +
mirror averaged, plus its 4 random resized crops per training image; cached by bench/exp_resize.py, which must
run first) through 3-, 5- and 10-fold CV at C=0.003, two fold seeds each: the training share grows from 67 % to
90 % of the images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cv_scores, data_args, labelled_sets  # noqa: E402
from bench.exp_resize import crops  # noqa: E402


def main() -> int:
    sets = list(labelled_sets(data_args(sys.argv[1:], __doc__)))
    from train.features import extract_features

    for data, ds, y in sets:
        x, ok = extract_features(
            ds.paths, image_size=288, resize_method="crop", flip=True, cache_dir="/tmp/exp_resize", progress=False
        )
        views = crops(ds.paths, "crop")
        for k in (3, 5, 10):
            errs = [cv_scores(x[ok], y[ok], 0.003, seed, extra=views[ok], folds=k)[0] for seed in (0, 1)]
            print(f"{data.name:5s} {k:2d}-fold (train {int(ok.sum() * (k - 1) / k)}): {np.mean(errs):.3f} {errs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
