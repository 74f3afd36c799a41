"""Every bench/exp_*.py script: no arguments -> usage on stderr, exit 2; a missing DATA_DIR -> `skip:`, exit 0.

Each case is its own subprocess (cwd a tmp dir); they run a few at a time because most scripts import torch first.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("exp_*.py"))
EXTRA = {"exp_cv.py": ["tf_efficientnet_lite0", "224"]}  # DATA_DIR ARCH SIZE: all three are required


def run(script: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_bench_scripts_without_data(tmp_path):
    assert len(SCRIPTS) >= 14
    missing = tmp_path / "no_such_data"
    cases = [(s, []) for s in SCRIPTS] + [(s, [str(missing), *EXTRA.get(s.name, [])]) for s in SCRIPTS]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: run(*c, tmp_path), cases))
    problems = []
    for (script, args), r in zip(cases, results, strict=True):
        out = f"{script.name} {' '.join(args)}: rc {r.returncode}\nstdout: {r.stdout[-800:]}\nstderr: {r.stderr[-800:]}"
        if "Traceback" in r.stdout + r.stderr:
            problems.append(out)
        elif not args and (r.returncode != 2 or not r.stderr.lstrip().startswith("usage:")):
            problems.append(out)
        elif args and (r.returncode != 0 or f"skip: {missing} not found" not in r.stdout):
            problems.append(out)
    assert not problems, "\n\n".join(problems)
