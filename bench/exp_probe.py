"""Probe experiments: frozen-feature heads at several input sizes, with and without flip averaging.

python bench/exp_probe.py DATA_DIR [SIZES] : SIZES comma-separated (default 224,288,352); same stratified 80/20 split (seed 42) as train.fit's default.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import data_args, labelled_sets, parse_arg  # noqa: E402
from train.data import random_split  # noqa: E402


def main() -> int:
    args = data_args(sys.argv[1:], __doc__, most=2)
    sizes = parse_arg(
        __doc__,
        "SIZES",
        args[1] if len(args) > 1 else "224,288,352",
        lambda t: [int(s) for s in t.split(",")],
        lambda v: min(v) > 0,
        "comma-separated positive numbers of pixels such as 224,288",
    )
    sets = list(labelled_sets(args[:1]))
    if not sets:
        return 0
    data, ds, y = sets[0]
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from train.features import extract_features

    tr, va = random_split(ds, 0.2, 42)
    for size in sizes:
        for flip in (False, True):
            t = time.time()
            f, _ = extract_features(ds.paths, image_size=size, flip=flip, cache_dir="/tmp/featcache", progress=False)
            secs = time.time() - t
            sc = StandardScaler().fit(f[tr])
            res = []
            for C in (0.003, 0.01, 0.03):
                lr = LogisticRegression(C=C, max_iter=5000).fit(sc.transform(f[tr]), y[tr])
                res.append(f"C={C}: {(lr.predict(sc.transform(f[va])) != y[va]).mean():.3f}")
            print(f"size {size} flip {flip} ({secs:.0f}s): " + "  ".join(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
