"""Score every image of a class-folder dataset for cleaning, then review, apply, undo and compare.

    python -m train.clean DATA_DIR                  # scores -> DATA_DIR/.clean/scores.csv, queue tops printed
    python -m train.clean DATA_DIR --ui             # the Gradio workbench (queues, keep/delete/relabel/not a snake)
    python -m train.clean DATA_DIR --undo 3         # reverse the last 3 decisions
    python -m train.clean DATA_DIR --replay LOG     # re-apply a decisions.jsonl onto this copy
    python -m train.clean DATA_DIR --compare BEFORE_ARTIFACT AFTER_ARTIFACT

Label issues come from out-of-sample probabilities: k-fold cross-validation of a logistic regression on
cached frozen backbone features, so a wrong label cannot hide by being memorised; cleanlab ranks them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from snake_model.mdtext import md_text, one_line
from train.cli import int_at_least
from train.data import SKIP_DIRS, DatasetError, image_files, write_problem
from train.decisions import MANIFEST, NOT_SNAKE_DIR, DecisionError, Decisions
from train.quality import DUP_COS, DUP_HAMMING, Thresholds, duplicate_clusters, image_checks, quality_severity

log = logging.getLogger(__name__)

FOLDS = 5
C = 0.02  # inverse L2 strength of the per-fold head; the best out-of-fold log loss on in11 among 0.01-1
IMAGE_SIZE = 224
SEED = 0
LOW_CONF = 0.35  # max out-of-fold probability below which an image is an outlier candidate
NOT_SNAKE_PROB = 0.10  # ImageNet snake-class probability below which an image is "maybe not a snake"
OOD_QUANTILE = 0.03  # the least typical share of images by feature-space kNN distance are outlier candidates
IMAGENET_SNAKES = slice(52, 69)  # ImageNet-1k classes 52 (thunder snake) .. 68 (sidewinder)
SCORES_FILE = Path(".clean") / "scores.csv"
QUEUES = ("label", "duplicates", "outliers", "quality")
QUEUE_TITLES = {
    "label": "likely wrong label",
    "duplicates": "near-duplicates",
    "outliers": "outliers / not a snake",
    "quality": "quality",
}
MANIFEST_FIELDS = ("source", "licence", "author")
MANIFEST_FIX = 're-save it as UTF-8 (in a spreadsheet: "Save as" > "CSV UTF-8") and try again'

FeatureFn = Callable[[Sequence[Path]], tuple[np.ndarray, np.ndarray]]


def list_dataset(root: Path, not_snake_dir: str = NOT_SNAKE_DIR) -> tuple[list[str], list[Path], list[int]]:
    """Classes, image paths and labels; like train.data.list_images but tolerant of tiny classes for cleaning."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory; give a folder with one sub-folder of images per class")
    skip = SKIP_DIRS | {not_snake_dir}
    classes, paths, labels = [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in skip and not p.name.startswith(".")):
        files = image_files(d)
        if files:
            labels += [len(classes)] * len(files)
            classes.append(d.name)
            paths += files
    if len(classes) < 2:
        raise DatasetError(f"{root} has {len(classes)} class folder(s) with images; need at least 2")
    return classes, paths, labels


def manifest_text(f: Path) -> str:
    """The text of a manifest.csv, which must be UTF-8 (a leading byte order mark is allowed): decisions rewrite its
    rows, so a file in another encoding is refused with a DatasetError that names it, not read half-decoded."""
    data = f.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(
            f"{f} is not UTF-8 text (line {line} has the byte 0x{data[e.start]:02X}; it was probably saved by a "
            f"spreadsheet in another encoding such as Windows-1252). It must be UTF-8: {MANIFEST_FIX}"
        ) from e


def check_manifest(root: Path) -> None:
    """Raise DatasetError now, before anything is scored or moved, when DATA_DIR/manifest.csv is not UTF-8."""
    f = Path(root) / MANIFEST
    if f.is_file():
        manifest_text(f)


def read_manifest(root: Path) -> dict[str, dict]:
    """Rows of DATA_DIR/manifest.csv by relative path ({} when there is none); DatasetError naming the file when it is
    not UTF-8 or not a CSV table."""
    f = root / MANIFEST
    if not f.is_file():
        return {}
    text = manifest_text(f)
    try:
        return {r["path"]: r for r in csv.DictReader(io.StringIO(text, newline="")) if r.get("path")}
    except csv.Error as e:
        raise DatasetError(f"{f} is not a CSV table that can be read ({e}); fix or remove it and run again") from e


def writable_dir(d: Path) -> bool:
    """Whether files can be created in folder d, or d can be made where it does not exist yet (data.write_problem)."""
    return write_problem(d) is None


def feature_cache_dir(root: Path, out: Path | None = None) -> Path | None:
    """Where the feature cache goes: DATA_DIR/.clean/features; next to the scores table `out` when DATA_DIR cannot be
    written (a read-only dataset); None, computing without a cache, when neither can (warned either way)."""
    own = Path(root) / ".clean" / "features"
    if writable_dir(own):
        return own
    if out is not None:
        alt = Path(out).with_name(Path(out).stem + "_features")
        if writable_dir(alt):
            log.warning("%s cannot be written (read-only?); caching the features in %s instead", own, alt)
            return alt
    log.warning("%s cannot be written (read-only?); the features are computed without a cache", own)
    return None


def default_features(root: Path, image_size: int = IMAGE_SIZE, cache_dir: Path | None = None) -> FeatureFn:
    """Frozen Lite0 features, cached in cache_dir (default: feature_cache_dir(root), DATA_DIR/.clean/features when it
    can be written)."""
    from train.features import extract_features

    return partial(
        extract_features,
        image_size=image_size,
        resize_method="squish",
        flip=False,
        cache_dir=cache_dir if cache_dir is not None else feature_cache_dir(root),
    )


def imagenet_snake_prob(feats: np.ndarray) -> np.ndarray | None:
    """P(any ImageNet snake class) from the Lite0 ImageNet classifier applied to pooled features."""
    import torch

    from snake_model.network import lite0_weights_path

    try:
        sd = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    except (ImportError, OSError) as e:
        log.warning("no ImageNet classifier for the not-a-snake score: %s", e)
        return None
    w, b = sd["_fc.weight"].numpy(), sd["_fc.bias"].numpy()
    if w.shape[1] != feats.shape[1]:
        return None
    logits = feats @ w.T + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p[:, IMAGENET_SNAKES].sum(axis=1)


def oof_probs(feats: np.ndarray, labels: np.ndarray, n_classes: int, folds: int, seed: int, c: float) -> np.ndarray:
    """Out-of-fold class probabilities: each image is scored by a head that never saw it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels, minlength=n_classes)
    k = int(max(2, min(folds, counts[counts > 0].min())))  # clipped so the smallest class is in every fold
    probs = np.zeros((len(labels), n_classes))
    for tr, te in tqdm(list(StratifiedKFold(k, shuffle=True, random_state=seed).split(feats, labels)), desc="folds"):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        clf.fit(feats[tr], labels[tr])
        probs[np.ix_(te, clf[-1].classes_)] = clf.predict_proba(feats[te])
    probs = np.clip(probs, 1e-6, None)
    return probs / probs.sum(axis=1, keepdims=True)


def score_dataset(
    data_dir: str | Path,
    *,
    folds: int = FOLDS,
    image_size: int = IMAGE_SIZE,
    seed: int = SEED,
    c: float = C,
    dup_bits: int = DUP_HAMMING,
    dup_cos: float = DUP_COS,
    thresholds: Thresholds | None = None,
    feature_fn: FeatureFn | None = None,
    not_snake_dir: str = NOT_SNAKE_DIR,
    progress: bool = True,
    cache_dir: Path | None = None,
) -> list[dict]:
    """One row per image with label-issue, duplicate, outlier and quality scores, in wrong-label queue order.

    Nothing is written into DATA_DIR unless it can be: the backbone's feature cache goes to cache_dir (default:
    DATA_DIR/.clean/features when it can be written, else no cache), so a read-only dataset can be scored."""
    from cleanlab.filter import find_label_issues
    from cleanlab.outlier import OutOfDistribution
    from cleanlab.rank import get_label_quality_scores

    root = Path(data_dir).resolve()
    classes, paths, labels = list_dataset(root, not_snake_dir)
    manifest = read_manifest(root)
    backbone = feature_fn is None
    if backbone:  # settled before the slow checks, so an unwritable cache never costs the work
        feature_fn = default_features(root, image_size, cache_dir if cache_dir is not None else feature_cache_dir(root))
    th = thresholds or Thresholds()
    rows = []
    for p, y in tqdm(list(zip(paths, labels, strict=True)), desc="checks", unit="img", disable=not progress):
        rel = p.relative_to(root).as_posix()
        m = manifest.get(rel, {})
        row = {"path": rel, "label": classes[y]} | {k: m.get(k, "") for k in MANIFEST_FIELDS}
        row["licence"] = row["licence"] or m.get("license", "")
        row |= image_checks(p, th)
        if m.get("phash") and row.get("phash"):
            row["phash"] = m["phash"]  # the manifest's hash keeps duplicates consistent with gather's dedupe
        rows.append(row)

    feats, ok = feature_fn(paths)
    ok = np.asarray(ok, dtype=bool) & np.array([not r.get("error") for r in rows])
    idx = np.flatnonzero(ok)
    y = np.array(labels)[idx]
    present = np.unique(y)
    remap = {int(c_): i for i, c_ in enumerate(present)}  # classes whose images all failed drop out
    yy = np.array([remap[int(v)] for v in y])
    probs = oof_probs(feats[idx], yy, len(present), folds, seed, c)
    ranked = find_label_issues(yy, probs, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(yy, probs)
    ood = OutOfDistribution().fit_score(features=feats[idx]) if len(idx) > 11 else np.ones(len(idx))
    ood_cut = np.quantile(ood, OOD_QUANTILE) if len(idx) else 0.0
    snake = imagenet_snake_prob(feats[idx]) if backbone else None
    issue_rank = {int(j): r + 1 for r, j in enumerate(ranked)}
    for j, i in enumerate(idx):
        pred = int(probs[j].argmax())
        row = rows[i]
        row.update(
            pred_label=classes[present[pred]],
            pred_conf=round(float(probs[j, pred]), 4),
            given_prob=round(float(probs[j, yy[j]]), 4),
            label_quality=round(float(quality[j]), 4),
            label_issue=j in issue_rank,
            issue_rank=issue_rank.get(j, ""),
            ood_score=round(float(ood[j]), 4),
            snake_prob=round(float(snake[j]), 4) if snake is not None else "",
        )
        reasons = []
        if probs[j].max() < LOW_CONF:
            reasons.append("low confidence")
        if ood[j] <= ood_cut:
            reasons.append("atypical")
        if snake is not None and snake[j] < NOT_SNAKE_PROB:
            reasons.append("maybe not a snake")
        row["outlier"] = ";".join(reasons)
        row["outlier_score"] = round(
            float(1 - probs[j].max() + (1 - ood[j]) + (1 - snake[j] if snake is not None else 0)), 4
        )

    full = np.zeros((len(rows), feats.shape[1]), dtype=np.float32)
    full[idx] = feats[idx]  # unreadable images keep zero rows, which match nothing
    dup = duplicate_clusters([r.get("phash") for r in rows], [r["sha256"] for r in rows], dup_bits, full, dup_cos)
    for r, d in zip(rows, dup, strict=True):
        r["dup_cluster"] = d if d >= 0 else ""
    by_cluster: dict[int, list[dict]] = {}
    for r, d in zip(rows, dup, strict=True):
        if d >= 0:
            by_cluster.setdefault(d, []).append(r)
    for members in by_cluster.values():
        keeper = max(members, key=lambda r: (int(r.get("width", 0)) * int(r.get("height", 0)), -len(r["path"])))
        cross = len({r["label"] for r in members}) > 1
        for r in members:
            r["dup_size"] = len(members)
            r["dup_of"] = "" if r is keeper else keeper["path"]
            r["dup_cross_class"] = cross
    for r in rows:
        r["quality_score"] = quality_severity(r, th) if r.get("flags") else ""

    def order(r: dict) -> tuple:
        if r.get("error"):
            return (2, 0.0, r["path"])
        return (0 if r["label_issue"] else 1, float(r["label_quality"]), r["path"])

    rows.sort(key=order)
    return rows


def queues(rows: list[dict]) -> dict[str, list[dict]]:
    """The four review queues, each ordered most-suspicious first."""
    label = [
        r
        for r in rows
        if not r.get("error") and (r.get("label_issue") in (True, "True") or r["pred_label"] != r["label"])
    ]
    label.sort(key=lambda r: (r.get("label_issue") not in (True, "True"), float(r["label_quality"])))
    dups = [r for r in rows if r.get("dup_of")]
    dups.sort(
        key=lambda r: (
            r.get("dup_cross_class") not in (True, "True"),
            -int(r["dup_size"]),
            int(r["dup_cluster"]),
            r["path"],
        )
    )
    outl = [r for r in rows if r.get("outlier")]
    outl.sort(key=lambda r: -float(r["outlier_score"]))
    qual = [r for r in rows if r.get("flags")]
    qual.sort(key=lambda r: -float(r["quality_score"]))
    return {"label": label, "duplicates": dups, "outliers": outl, "quality": qual}


COLUMNS = [
    "path", "label", "pred_label", "pred_conf", "given_prob", "label_quality", "label_issue", "issue_rank",
    "outlier", "outlier_score", "ood_score", "snake_prob", "dup_cluster", "dup_size", "dup_of", "dup_cross_class",
    "flags", "quality_score", "width", "height", "brightness", "blur", "text", "error", "source", "licence",
    "author", "sha256", "phash",
]  # fmt: skip


def write_scores(rows: list[dict], out: Path) -> None:
    """Write the scores table atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(out)


def read_scores(path: Path) -> list[dict]:
    """Rows of a scores table written by write_scores (values as strings)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _value(d: dict, k: str) -> float | None:
    """d[k] as a float; None where it is missing or undefined (train.fit writes null for a class with no validation
    photos)."""
    v = d.get(k)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _cell(d: dict, k: str) -> str:
    v = _value(d, k)
    return "–" if k not in d else "n/a" if v is None else f"{v:.3f}"


def _delta(x: dict, z: dict, k: str) -> str:
    a, b = _value(x, k), _value(z, k)
    return f"{b - a:+.3f}" if a is not None and b is not None else "–"


def compare_metrics(before: str | Path, after: str | Path) -> str:
    """Markdown table of valid error and per-class precision/recall/F1 before and after cleaning; class names and
    supports are shown literally (md_text), so a name never becomes markup, HTML or a new table cell."""

    def load(p: str | Path) -> dict:
        p = Path(p)
        f = p / "metrics.json" if p.is_dir() else p
        if not f.is_file():
            raise DatasetError(f"{f} not found; give artifact folders written by train.fit")
        try:
            m = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{f} is not valid JSON ({e})") from e
        if not isinstance(m, dict) or not isinstance(m.get("valid_error"), int | float):
            raise DatasetError(f"{f} has no valid_error number; give metrics.json files written by train.fit")
        if not isinstance(m.get("per_class", {}), dict) or not isinstance(m.get("labels", []), list):
            raise DatasetError(f"{f}: per_class must be an object and labels a list, as train.fit writes them")
        if not all(isinstance(lab, str) for lab in m.get("labels", [])):
            raise DatasetError(f"{f}: labels must be a list of class names (text), as train.fit writes them")
        return m

    a, b = load(before), load(after)
    ea, eb = float(a["valid_error"]), float(b["valid_error"])
    lines = [
        "| | before | after | change |",
        "|---|---:|---:|---:|",
        f"| valid error | {ea:.2%} | {eb:.2%} | {(eb - ea) * 100:+.1f} pt |",
        "",
        "| class | precision before | after | change | recall before | after | change | support before | after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pa, pb = a.get("per_class", {}), b.get("per_class", {})
    labels = list(dict.fromkeys([*a.get("labels", pa), *b.get("labels", pb)]))
    for lab in labels:
        x, z = (d if isinstance(d, dict) else {} for d in (pa.get(lab, {}), pb.get(lab, {})))
        lines.append(
            f"| {md_text(lab)} | {_cell(x, 'precision')} | {_cell(z, 'precision')} | {_delta(x, z, 'precision')} | "
            f"{_cell(x, 'recall')} | {_cell(z, 'recall')} | {_delta(x, z, 'recall')} | "
            f"{md_text(x.get('support', '–'))} | {md_text(z.get('support', '–'))} |"
        )
    return "\n".join(lines) + "\n"


def summary(rows: list[dict], top: int = 5) -> str:
    """Counts and the first few entries of every queue, for the terminal (names on one line: control characters in
    a file or class name are shown as \\xNN, never sent to the terminal)."""
    out = []
    for name, q in queues(rows).items():
        out.append(f"{QUEUE_TITLES[name]}: {len(q)}")
        for r in q[:top]:
            if name == "label":
                extra = f"given {r['label']}, predicted {r['pred_label']} ({float(r['pred_conf']):.0%})"
            elif name == "duplicates":
                extra = f"duplicate of {r['dup_of']}"
            elif name == "outliers":
                extra = f"{r['outlier']} (score {float(r['outlier_score']):.2f})"
            else:
                extra = r["flags"]
            out.append(one_line(f"  {r['path']}: {extra}"))
    return "\n".join(out)


def check_moves_possible(root: Path, manifest: bool = True) -> None:
    """Raise DatasetError, before any file moves, when decisions cannot be applied to DATA_DIR: it (or its .clean log
    folder) is read-only, or (with manifest) its manifest.csv is not UTF-8 (a move would happen, then its manifest
    edit fail)."""
    for d in (root, root / ".clean"):
        if not writable_dir(d):
            raise DatasetError(
                f"{d} cannot be written (a read-only folder or mount): decisions move files and are logged in "
                f"{root / '.clean'}, so none can be applied or undone there; nothing was changed. Copy the dataset "
                "to a writable folder (or remount it read-write) to apply decisions"
            )
    if manifest:
        try:
            check_manifest(root)
        except DatasetError as e:
            raise DatasetError(f"{e}; nothing was changed") from e


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.clean",
        description="Find likely wrong labels, near-duplicates, outliers and poor images in a class-folder "
        "dataset; review them in a Gradio page; apply, undo and replay the decisions.",
    )
    p.add_argument("data_dir", type=Path, help="dataset folder: one sub-folder of images per class")
    p.add_argument(
        "--out",
        type=Path,
        help="scores table (default DATA_DIR/.clean/scores.csv); for a read-only DATA_DIR give one elsewhere, and "
        "the feature cache goes next to it",
    )
    p.add_argument("--folds", type=int_at_least(2), default=FOLDS, help=f"cross-validation folds (default {FOLDS})")
    p.add_argument(
        "--image-size", type=int_at_least(32), default=IMAGE_SIZE, help=f"feature image size (default {IMAGE_SIZE})"
    )
    p.add_argument("--seed", type=int, default=SEED, help="fold shuffling seed")
    p.add_argument(
        "--dup-bits",
        type=int_at_least(0, 64),
        default=DUP_HAMMING,
        help=f"phash Hamming distance for duplicates (default {DUP_HAMMING})",
    )
    p.add_argument(
        "--not-snake-dir", default=NOT_SNAKE_DIR, help=f"folder for 'not a snake' images (default {NOT_SNAKE_DIR})"
    )
    p.add_argument("--top", type=int_at_least(0), default=5, help="queue entries to print")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--ui", action="store_true", help="open the review workbench (scores first if missing)")
    act.add_argument("--undo", type=int_at_least(1), metavar="N", help="undo the last N decisions")
    act.add_argument("--replay", type=Path, metavar="LOG", help="re-apply a decisions.jsonl onto DATA_DIR")
    act.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BEFORE", "AFTER"),
        help="before/after table from two artifacts' metrics.json",
    )
    p.add_argument("--rescore", action="store_true", help="with --ui: recompute scores even if the table exists")
    p.add_argument("--host", default="127.0.0.1", help="with --ui: address to listen on")
    p.add_argument("--port", type=int_at_least(1, 65535), default=None, help="with --ui: port (default: gradio's)")
    p.add_argument("--share", action="store_true", help="with --ui: a public gradio.live link")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    root: Path = args.data_dir
    out = args.out or root / SCORES_FILE
    try:
        if args.compare:
            print(compare_metrics(*args.compare), end="")
            return 0
        if not root.is_dir():
            raise DatasetError(f"{root} is not a directory")
        dec = Decisions(root, not_snake_dir=args.not_snake_dir)
        for r in dec.recovered:
            print(f"recovered decision {r['id']} ({r['action']} {r['old_path']}): {r['status']}")
        if args.undo is not None or args.replay:
            check_moves_possible(root)
        if args.undo is not None:
            undone = dec.undo(args.undo)
            for r in undone:
                print(f"undid {r['undone_action']}: {r['old_path']} -> {r['new_path']}")
            if not undone:
                print(f"nothing to undo: {root} has no decisions in effect")
            elif len(undone) < args.undo:
                print(f"undid {len(undone)} of the {args.undo} asked for: there are no more decisions to undo")
            return 0
        if args.replay:
            done = dec.replay(args.replay)
            print(f"replayed {len(done)} decision(s) onto {root}")
            return 0
        if args.ui and out.is_file() and not args.rescore:
            rows = read_scores(out)
        else:
            # Before the slow work: the table and the feature cache must have somewhere to go.
            if out.is_dir():
                raise DatasetError(f"--out {out} is a folder; give the path of the scores table to write (a .csv)")
            if not writable_dir(out.parent):
                raise DatasetError(
                    f"cannot write the scores table {out}: {out.parent} is not writable (a read-only folder?); give "
                    "--out FILE in a writable folder (the feature cache then goes next to it); nothing was scored"
                )
            t0 = time.perf_counter()
            rows = score_dataset(
                root, folds=args.folds, image_size=args.image_size, seed=args.seed, dup_bits=args.dup_bits,
                not_snake_dir=args.not_snake_dir, cache_dir=feature_cache_dir(root, out),
            )  # fmt: skip
            write_scores(rows, out)
            print(f"scored {len(rows)} images in {time.perf_counter() - t0:.1f} s -> {out}")
            print(summary(rows, args.top))
        if args.ui:
            from train.clean_ui import launch

            launch(root, rows, not_snake_dir=args.not_snake_dir, host=args.host, port=args.port, share=args.share)
        return 0
    except (DatasetError, DecisionError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
