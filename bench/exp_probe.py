"""Probe experiments: frozen-feature heads at several input sizes, with and without flip averaging.

python bench/exp_probe.py DATA_DIR : same stratified 80/20 split (seed 42) as train.fit's default.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.data import list_images, random_split  # noqa: E402
from train.features import extract_features  # noqa: E402


def main() -> int:
    data = Path(sys.argv[1])
    sizes = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "224,288,352").split(",")]
    if not data.is_dir():
        print(f"skip: {data} not found")
        return 0
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ds = list_images(data)
    tr, va = random_split(ds, 0.2, 42)
    y = np.array(ds.labels)
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
