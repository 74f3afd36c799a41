"""Training time and validation error: the original lesson-2 recipe vs the default recipe, in one run.

python bench/train_speed.py [DATA_DIR] [--quick]
Both recipes see the same split (seed 42, 20 % valid, or DATA_DIR/splits.csv) on this machine, one after the
other, each in a fresh process. Prints wall times, validation errors and the ratio (target: default <= 0.3x).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "na4"


def run(data: Path, out: Path, extra: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "train.fit", str(data), "--out", str(out), "--quiet", *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads((out / "metrics.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--quick", action="store_true", help="original recipe with 1 epoch (a smoke run, not the target)")
    a = ap.parse_args()
    if not a.data.is_dir():
        print(f"skip: {a.data} not found (the benchmark needs a class-folder dataset such as ../shared/data/na4)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        orig_args = ["--recipe", "original"] + (["--epochs", "1"] if a.quick else [])
        t_orig, m_orig = run(a.data, Path(tmp) / "original", orig_args)
        t_fast, m_fast = run(a.data, Path(tmp) / "fast", [])
    print(f"data: {a.data} ({m_fast['n_train']} train / {m_fast['n_valid']} valid)")
    print(f"{'recipe':<34}{'wall s':>8}{'valid error':>13}{'ECE (cal.)':>12}")
    print(
        f"{'original (RRC+aug, fine_tune)':<34}{t_orig:>8.0f}{m_orig['valid_error']:>13.1%}{m_orig['ece_after']:>12.3f}"
    )
    print(f"{'default (fast)':<34}{t_fast:>8.0f}{m_fast['valid_error']:>13.1%}{m_fast['ece_after']:>12.3f}")
    print(f"time ratio default/original: {t_fast / t_orig:.2f}x (target <= 0.30x)")
    print(
        f"error ratio default/original: {m_fast['valid_error'] / max(m_orig['valid_error'], 1e-9):.2f}x (target <= 0.50x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
