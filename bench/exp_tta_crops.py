"""Would averaging random crops at serving time (multi-crop TTA) pay? 5-fold CV on the default's cached features.

python bench/exp_tta_crops.py DATA_DIR [DATA_DIR ...]: the default head (centre crop + 4 random resized crops per
training image, `bench.exp_resize`'s caches), evaluated on each held-out photo four ways: as served (plain +
mirror averaged, 2 forward passes); probabilities averaged over the served view and the photo's own 4 crops
(6 passes); the same with the served view weighted 1/2; features averaged over the 5 rows before the head.
Prints error / NLL per C. Also fits one multinomial head per fold with a linear SVM and an LDA to show whether
the head, rather than the features, limits the error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import data_args, labelled_sets  # noqa: E402
from bench.exp_resize import crops, served  # noqa: E402

CS = (0.001, 0.003, 0.01)


def evaluate(x: np.ndarray, v: np.ndarray, y: np.ndarray, C: float) -> dict[str, tuple[float, float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    ways = ("served", "probs + 4 crops", "served 1/2 + crops 1/2", "features + 4 crops")
    wrong, nll = dict.fromkeys(ways, 0), dict.fromkeys(ways, 0.0)
    for tr, va in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        xt = np.concatenate([x[tr], v[tr].reshape(-1, v.shape[2])])
        yt = np.concatenate([y[tr], np.repeat(y[tr], v.shape[1])])
        sc = StandardScaler().fit(xt)
        m = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(xt), yt)
        p0 = m.predict_proba(sc.transform(x[va]))
        pc = np.stack([m.predict_proba(sc.transform(v[va][:, j])) for j in range(v.shape[1])], 1)
        probs = {
            "served": p0,
            "probs + 4 crops": (p0 + pc.sum(1)) / (1 + v.shape[1]),
            "served 1/2 + crops 1/2": (p0 + pc.mean(1)) / 2,
            "features + 4 crops": m.predict_proba(sc.transform((x[va] + v[va].sum(1)) / (1 + v.shape[1]))),
        }
        for k, p in probs.items():
            wrong[k] += int((p.argmax(1) != y[va]).sum())
            nll[k] -= float(np.log(np.clip(p[np.arange(len(va)), y[va]], 1e-12, 1)).sum())
    return {k: (wrong[k] / len(y), nll[k] / len(y)) for k in ways}


def other_heads(x: np.ndarray, v: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    heads = {
        "linear SVM C=3e-4": lambda: LinearSVC(C=3e-4, max_iter=5000),
        "LDA shrinkage 0.5": lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.5),
    }
    out = {}
    for name, make in heads.items():
        wrong = 0
        for tr, va in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
            xt = np.concatenate([x[tr], v[tr].reshape(-1, v.shape[2])])
            yt = np.concatenate([y[tr], np.repeat(y[tr], v.shape[1])])
            sc = StandardScaler().fit(xt)
            wrong += int((make().fit(sc.transform(xt), yt).predict(sc.transform(x[va])) != y[va]).sum())
        out[name] = wrong / len(y)
    return out


def main() -> int:
    for data, ds, y in labelled_sets(data_args(sys.argv[1:], __doc__)):
        x, ok = served(ds.paths, "crop")
        v = crops(ds.paths, "crop")
        x, v, y = x[ok], v[ok], y[ok]
        for C in CS:
            res = evaluate(x, v, y, C)
            print(
                f"{data.name:5s} C={C:<6g} " + "  ".join(f"{k}: {e:.3f} / {n:.3f}" for k, (e, n) in res.items()),
                flush=True,
            )
        print(f"{data.name:5s} " + "  ".join(f"{k}: {e:.3f}" for k, e in other_heads(x, v, y).items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
