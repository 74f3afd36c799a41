"""Which input size for the default recipe? 5-fold CV over three fold seeds.

python bench/exp_size.py DATA_DIR [DATA_DIR ...] [--sizes 256,288,320,352,384]: per size, the default's features
(Lite0, centre crop, the photo and its zoomed mirror view averaged, as `SnakeNet` serves them, plus the 4 random
resized crops per training image, seed 42) and the default head in stratified 5-fold CV (`bench.exp_cv.cv_scores`)
with fold seeds 0, 1 and 2. Prints error / out-of-fold NLL per C and their means over the seeds, and the feature
time per set (the default's dominant training cost). Features come from `bench.exp_backbones.backbone_features`
(cached under /tmp/exp_backbones).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_backbones import backbone_features  # noqa: E402
from bench.exp_cv import arg_error, cv_scores, data_args, labelled_sets  # noqa: E402

CS = (0.003, 0.01)
SEEDS = (0, 1, 2)


def parse_sizes(argv: list[str]) -> tuple[list[str], list[int]]:
    sizes = [256, 288, 320, 352, 384]
    if "--sizes" in argv:
        i = argv.index("--sizes")
        if i + 1 >= len(argv):
            arg_error(__doc__, "--sizes needs a value such as 288,320")
        try:
            sizes = [int(s) for s in argv[i + 1].split(",")]
        except ValueError:
            sizes = []
        if not sizes or any(s < 32 or s > 1024 for s in sizes):
            arg_error(__doc__, f"--sizes must be comma-separated pixel counts from 32 to 1024, not {argv[i + 1]!r}")
        argv = argv[:i] + argv[i + 2 :]
    return argv, sizes


def main() -> int:
    argv, sizes = parse_sizes(sys.argv[1:])
    sets = list(labelled_sets(data_args(argv, __doc__)))
    for data, ds, y in sets:
        for size in sizes:
            z = backbone_features(ds.paths, "lite0", size)  # the default's features at that size
            for C in CS:
                runs = [cv_scores(z["served"], y, C, seed=s, extra=z["crops"]) for s in SEEDS]
                each = "  ".join(f"{e:.1%} / {n:.3f}" for e, n in runs)
                mean_e, mean_n = np.mean([e for e, _ in runs]), np.mean([n for _, n in runs])
                print(
                    f"{data.name:5s} {size} px  C={C:<6g} seeds 0-2: {each}   mean {mean_e:.1%} / {mean_n:.3f}"
                    f"   (features {float(z['secs']):.0f} s)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
