"""Clean, retrain, compare (issue 7's run report), with a scripted reviewer.

python bench/clean_retrain.py [DATA_DIR] [--work DIR] [--top N]
Copies DATA_DIR (default ../shared/data/in11) to a work folder, scores it with train.clean, then plays a
reviewer who accepts the tool's top suggestions: deletes the first N of the wrong-label queue that cleanlab
flags, and every near-duplicate that is not its cluster's kept copy. It trains train.fit's default recipe on
the data before and after (same seed) and prints train.clean's before/after table. A person reviewing in the
UI would relabel some images instead of deleting them; this is the fully automatic lower bound of effort.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train import clean, fit  # noqa: E402
from train.decisions import Decisions  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=ROOT.parent / "shared" / "data" / "in11")
    ap.add_argument("--work", type=Path, default=Path("/tmp/clean_retrain"))
    ap.add_argument("--top", type=int, default=60, help="wrong-label suggestions to accept")
    a = ap.parse_args()
    if a.top < 0:
        ap.error(f"--top must not be negative, not {a.top}")
    if not a.data.is_dir():
        print(f"skip: {a.data} not found")
        return 0
    data = a.work / "data"
    if a.work.exists():
        shutil.rmtree(a.work)
    shutil.copytree(a.data, data)
    if fit.main([str(data), "--out", str(a.work / "before"), "--quiet", "--no-photo-previews"]) != 0:
        return 1
    rows = clean.score_dataset(data)
    q = clean.queues(rows)
    dec = Decisions(data)
    flagged = [r for r in q["label"] if r.get("label_issue") in (True, "True")][: a.top]
    dups = [r for r in q["duplicates"] if r.get("dup_of") and r["dup_of"] != r["path"]]
    done = set()
    for r in flagged + dups:
        if r["path"] not in done:
            dec.decide(r["path"], "delete")
            done.add(r["path"])
    print(f"deleted {len(done)} images ({len(flagged)} flagged wrong labels, {len(dups)} duplicates) into _trash/")
    if fit.main([str(data), "--out", str(a.work / "after"), "--quiet", "--no-photo-previews"]) != 0:
        return 1
    print(clean.compare_metrics(a.work / "before", a.work / "after"), end="")
    print(
        "note: the two validation sets differ (the cleaned one lost flagged images), so part of the change "
        "is an easier validation set, not only a better model."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
