"""Where should the temperature be fitted? Nested check on held-out photos, 5 outer folds over a whole set.

python bench/exp_temperature.py [--tta-zoom Z] DATA_DIR [DATA_DIR ...]: each outer fold holds out a fifth of the
images as a test set. On the other four fifths the default recipe's own steps run as `train.fit` runs them: an 80/20
train/valid split, the logistic head fitted on the training images plus their 4 crops, C chosen by grouped 5-fold
log-loss (`train.recipe_fast.fit_linear_head`, which also gives the out-of-fold predictions on the training images).
The temperature is then fitted four ways (none, the validation split alone, the out-of-fold training predictions
alone, both pooled), and each is applied to the held-out fifth. The test ECE, NLL and error are pooled over all five
folds, so every image is a test image once. Features: Lite0, 288 px centre crop, mirror averaged, cached; with
--tta-zoom Z (0.3 to 1) first, averaged with the mirrored central part instead, as train.fit --tta-zoom Z serves them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import arg_error, data_args, labelled_sets, parse_arg  # noqa: E402
from bench.exp_resize import crops, served  # noqa: E402


def run(data: Path, ds, y: np.ndarray, zoom: float = 1.0) -> None:
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from bench.exp_zoom_view import network_view
    from snake_model.predictor import softmax
    from train import metrics as M
    from train.recipe_fast import fit_linear_head

    n = len(ds.classes)
    x, ok = served(ds.paths, "crop")
    if zoom < 1:
        x = network_view(ds.paths, zoom)
    v = crops(ds.paths, "crop")
    x, v, y = x[ok], v[ok], y[ok]
    ways = ("none", "valid", "oof", "valid+oof")
    test_logits = {k: np.zeros((len(y), n)) for k in ways}
    temps: dict[str, list[float]] = {k: [] for k in ways}
    for fo, (dev, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y)):
        tr, va = train_test_split(dev, test_size=0.2, stratify=y[dev], random_state=fo)
        views = v.shape[1]
        xx = np.concatenate([x[tr], v[tr].reshape(-1, x.shape[1])])
        yy = np.concatenate([y[tr], np.repeat(y[tr], views)])
        groups = np.concatenate([np.arange(len(tr)), np.repeat(np.arange(len(tr)), views)])
        w, b, log = fit_linear_head(xx, yy, groups, n, 42, np.arange(len(yy)) < len(tr))
        lva = x[va] @ w.T + b
        loof = np.log(np.clip(log["oof_probs"], 1e-12, 1))
        t = {
            "none": 1.0,
            "valid": M.fit_temperature(lva, y[va]),
            "oof": M.fit_temperature(loof, y[tr]),
            "valid+oof": M.fit_temperature(np.concatenate([lva, loof]), np.concatenate([y[va], y[tr]])),
        }
        for k in ways:
            test_logits[k][test] = (x[test] @ w.T + b) / t[k]
            temps[k].append(t[k])
        print(f"  fold {fo}: C={log['C']}  " + "  ".join(f"T[{k}]={t[k]:.3f}" for k in ways), flush=True)
    for k in ways:
        p = softmax(test_logits[k])
        print(
            f"{data.name:5s} T from {k:9s}: T = {np.mean(temps[k]):.2f} ± {np.std(temps[k]):.2f}  "
            f"test error {np.mean(p.argmax(1) != y):.3f}  NLL {M.nll(test_logits[k], y):.3f}  "
            f"ECE {M.ece(p, y):.3f} (noise floor {M.ece_noise_floor(p):.3f})",
            flush=True,
        )


def main() -> int:
    args, zoom = sys.argv[1:], 1.0
    if args[:1] == ["--tta-zoom"]:
        if len(args) < 2:
            arg_error(__doc__, "--tta-zoom needs a value Z")
        zoom = parse_arg(__doc__, "--tta-zoom", args[1], float, lambda v: 0.3 <= v <= 1, "a number from 0.3 to 1")
        args = args[2:]
    for data, ds, y in labelled_sets(data_args(args, __doc__)):
        run(data, ds, y, zoom)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
