"""Verify, dedupe and split a class-folder dataset: `python -m train.split DATA_DIR` writes DATA_DIR/splits.csv.

Exact duplicates (same sha256) within a class are moved to DATA_DIR/_quarantine/duplicates/, files that do not
decode to _quarantine/unreadable/. Near-duplicates (perceptual hashes within a Hamming distance, the photo or its
mirror image: a left-right flipped re-post counts) are grouped with union-find, across classes too, and a group
always lands wholly in train or wholly in valid, so validation never sees a re-crop or a mirrored copy of a training
picture. Images that appear under two classes are reported, not guessed at.

Running the split again (after adding photos) is stable: every photo an earlier splits.csv named keeps its side, so the
photos a model trained before learnt from stay out of valid; only new photos are assigned, stratified so each
class's valid share stays near --valid-pct. A near-duplicate group that now joins earlier train and valid photos goes
wholly to valid (those training photos are counted in the output). --reshuffle draws a fresh split instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snake_model.loader import ImageLoadError, load_image, read_image_bytes
from train import manifest as mf
from train.cli import FRACTION, int_at_least
from train.data import SPLITS_FILE, class_dirs, image_files, write_problem

log = logging.getLogger("train.split")

REPORT = "split_report.json"
DEFAULT_THRESHOLD = 10  # of 64 phash bits: on a real web scrape (in11) re-encodes, watermarks and letterboxes fall within 10, unrelated photos start at 12


@dataclass
class Item:
    path: str  # relative to the data dir, posix
    label: str
    sha256: str
    phash: int
    mirror: int  # the perceptual hash of the image flipped left to right


@dataclass
class SplitResult:
    splits: dict[str, str]  # path -> train / valid
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason
    exact_duplicates: list[tuple[str, str]] = field(default_factory=list)  # (dropped, kept)
    cross_class: list[list[str]] = field(default_factory=list)  # groups whose members carry different labels
    near_groups: list[list[str]] = field(default_factory=list)  # groups of more than one image
    bad_names: list[str] = field(default_factory=list)  # names splits.csv cannot hold, as shown (left in place)
    previous: int = 0  # photos the earlier splits.csv named (0: there was none, or --reshuffle ignored it)
    kept_side: int = 0  # of this split's photos, those on the side the earlier splits.csv gave them
    new: int = 0  # photos the earlier splits.csv did not name: assigned now
    to_valid: list[str] = field(default_factory=list)  # earlier training photos moved to valid (group joins valid)
    changed: int = 0  # with --reshuffle: earlier photos that changed side
    reshuffled: bool = False

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"train": 0, "valid": 0})
        for p, s in self.splits.items():
            out[p.split("/", 1)[0]][s] += 1
        return dict(sorted(out.items()))


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


# Mirroring a row of pixels (left to right) flips the sign of its odd-frequency DCT coefficients.
_MIRROR_SIGNS = np.array([1.0, -1.0] * 4)[None, :]


def _hash_bits(bits: np.ndarray) -> int:
    """8x8 booleans -> the 64-bit integer whose hex digits imagehash prints (row by row, first bit highest)."""
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def phash_pair(img) -> tuple[int, int]:
    """The 64-bit perceptual hash of img and of its mirror image (flipped left to right), from one decode and DCT.

    The first is imagehash.phash(img) bit for bit; the second is imagehash.phash(ImageOps.mirror(img)) (the same
    DCT with the odd columns negated; the 32-px resize is symmetric up to rounding). A mirrored copy of a photo is
    26-36 bits away from it, but within a bit or two of its mirror hash.
    """
    import imagehash
    import scipy.fftpack

    px = np.asarray(img.convert("L").resize((32, 32), imagehash.ANTIALIAS))
    dct = scipy.fftpack.dct(scipy.fftpack.dct(px, axis=0), axis=1)[:8, :8]
    flipped = dct * _MIRROR_SIGNS
    return _hash_bits(dct > np.median(dct)), _hash_bits(flipped > np.median(flipped))


def list_files(root: Path) -> list[tuple[str, str]]:
    """(relative path, class) for every image-suffixed file under the class folders, as train.data sees them
    (hidden files included: train.fit trains on them, so they must be deduplicated and split like the rest)."""
    return [(p.relative_to(root).as_posix(), d.name) for d in class_dirs(root) for p in image_files(d)]


def scan(
    root: Path, files: list[tuple[str, str]] | None = None, progress: bool = False
) -> tuple[list[Item], dict[str, str]]:
    """Decode and hash every image (sha256, and the perceptual hashes of the image and of its mirror image, so a
    manifest's stored phash, which has no mirror twin, is not reused). progress: a bar on stderr."""
    from tqdm.auto import tqdm

    items, bad = [], {}
    files = list_files(root) if files is None else files
    for rel, label in tqdm(files, desc="verify + hash", unit="img", disable=not progress, file=sys.stderr):
        try:
            data = read_image_bytes(root / rel)  # a FIFO or device among the photos must not block or fill memory
        except ImageLoadError as e:
            bad[rel] = str(e)
            continue
        try:
            ph, mirror = phash_pair(load_image(data))
        except ImageLoadError as e:
            bad[rel] = str(e)
            continue
        items.append(Item(rel, label, hashlib.sha256(data).hexdigest(), ph, mirror))
    return items, bad


# Entries of one block of the pairwise-distance matrix: about 32 MB of uint64 scratch per array.
_BLOCK_ENTRIES = 1 << 22


def near_duplicate_pairs(hashes: list[int], threshold: int, mirrors: list[int] | None = None) -> list[tuple[int, int]]:
    """Every pair (i, j), i < j, whose hashes differ in at most `threshold` bits; with mirrors (the hashes of the
    mirrored images) also a pair where one image's hash is that close to the other's mirror hash.

    Vectorised brute force over blocks of rows: exact (no banding that could miss a pair), and 10,000 images
    (50 million pairs, three distances each) take about a second.
    """
    n = len(hashes)
    if n < 2:
        return []
    h = np.array(hashes, dtype=np.uint64)
    m = np.array(mirrors, dtype=np.uint64) if mirrors is not None else None
    if m is not None and m.shape != h.shape:
        raise ValueError(f"{len(hashes)} hashes but {len(mirrors)} mirror hashes")
    rows = max(1, _BLOCK_ENTRIES // n)
    pairs = []
    for start in range(0, n - 1, rows):
        stop = min(n, start + rows)
        a = h[start:stop, None]
        rest = h[None, start:]  # the block's own rows and everything after: the upper triangle
        d = np.bitwise_count(a ^ rest)
        if m is not None:
            np.minimum(d, np.bitwise_count(a ^ m[None, start:]), out=d)
            np.minimum(d, np.bitwise_count(m[start:stop, None] ^ rest), out=d)
        ii, jj = np.nonzero(d <= threshold)
        keep = jj > ii  # jj counts from start, as ii does
        pairs += zip((ii[keep] + start).tolist(), (jj[keep] + start).tolist(), strict=True)
    return pairs


def near_duplicate_groups(hashes: list[int], threshold: int, mirrors: list[int] | None = None) -> list[int]:
    """Group id per hash: union-find over every near-duplicate pair (see near_duplicate_pairs; with mirrors a
    mirrored copy joins the group of its original)."""
    uf = UnionFind(len(hashes))
    for i, j in near_duplicate_pairs(hashes, threshold, mirrors):
        uf.union(i, j)
    return [uf.find(i) for i in range(len(hashes))]


class NotWritableError(OSError):
    """DATA_DIR cannot take new files, so splits.csv cannot be written there; the message says what to do."""


def check_writable(root: Path) -> None:
    """Raise NotWritableError when root cannot take a new file (a read-only mount, a folder without write
    permission): checked before the slow hashing, not found out after it."""
    if (e := write_problem(root)) is not None:
        raise NotWritableError(
            e.errno,
            f"cannot write {mf.shown(str(root / SPLITS_FILE))}: the folder {mf.shown(str(root))} is not writable "
            f"({e.strerror or e}). train.split writes {SPLITS_FILE} and {REPORT} there and moves duplicates and "
            "broken files to its _quarantine/ folder: make the folder writable (remount it read-write, or fix its "
            "permissions), or copy the dataset somewhere writable and split the copy",
            str(root),
        ) from e


def read_previous(root: Path) -> dict[str, str]:
    """{path: train/valid} of an earlier DATA_DIR/splits.csv; {} when there is none or it cannot be read (warned)."""
    import csv

    f = root / SPLITS_FILE
    if not f.is_file():
        return {}
    try:
        with open(f, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not {"path", "split"} <= set(reader.fieldnames or []):
                raise ValueError(f"needs the columns path,split (found {reader.fieldnames})")
            rows = {r["path"]: (r["split"] or "").strip().lower() for r in reader if r.get("path")}
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        log.warning("cannot read the earlier %s (%s): drawing a fresh split", mf.shown(str(f)), e)
        return {}
    return {p: s for p, s in rows.items() if s in ("train", "valid")}


def assign(
    items: list[Item],
    groups: list[int],
    valid_pct: float,
    seed: int,
    pinned: set[int] = frozenset(),
    previous: dict[str, str] | None = None,
) -> dict[str, str]:
    """Stratified group split: per class (the group's majority label), whole groups go to valid until valid_pct.
    Groups in pinned always go to train.

    With previous (path -> train/valid of an earlier split), a group holding earlier photos keeps their side (valid
    if it holds earlier valid photos at all, so a new near-duplicate never puts a validation photo's twin in train);
    only the groups of new photos are drawn, filling each class's valid share up to valid_pct of the whole class."""
    previous = previous or {}
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    by_class: dict[str, list[int]] = defaultdict(list)
    for g, idx in members.items():
        label = Counter(items[i].label for i in idx).most_common(1)[0][0]
        by_class[label].append(g)
    fixed: dict[int, str] = {}  # groups with earlier photos: the side they keep
    for g, idx in members.items():
        sides = {previous[items[i].path] for i in idx if items[i].path in previous}
        if sides:
            fixed[g] = "valid" if "valid" in sides else "train"
    rng = random.Random(seed)
    split = {}
    for label in sorted(by_class):
        gs = sorted(by_class[label])
        rng.shuffle(gs)
        total = sum(len(members[g]) for g in gs)
        target = max(1, round(total * valid_pct)) if total > 1 and len(gs) > 1 else 0
        valid_groups = {g for g in gs if fixed.get(g) == "valid"}
        n_valid = sum(len(members[g]) for g in valid_groups)
        free = [g for g in gs if g not in pinned and g not in fixed]
        for g in free:
            if n_valid + len(members[g]) <= target:
                valid_groups.add(g)
                n_valid += len(members[g])
        if target and not valid_groups and free:  # every group is bigger than the target: take the smallest
            smallest = min(free, key=lambda g: len(members[g]))
            if len(gs) > 1:
                valid_groups.add(smallest)
        for g in gs:
            for i in members[g]:
                split[items[i].path] = "valid" if g in valid_groups else "train"
    return split


def split_dataset(
    root: str | Path,
    valid_pct: float = 0.2,
    seed: int = 42,
    threshold: int = DEFAULT_THRESHOLD,
    move: bool = True,
    progress: bool = False,
    files: list[tuple[str, str]] | None = None,
    reshuffle: bool = False,
) -> SplitResult:
    """Verify, dedupe and split root; writes splits.csv, split_report.json and (if present) the manifest.

    An earlier splits.csv is kept: its photos stay on their side and only new photos are assigned (see assign).
    reshuffle: ignore it and draw a fresh split from seed."""
    root = Path(root)
    earlier = read_previous(root)
    previous = {} if reshuffle else earlier
    known = {r["path"]: r for r in mf.read_manifest(root)}
    files = list_files(root) if files is None else files
    # A name that is not UTF-8, or holds a line break or control character, cannot go into splits.csv as it is. Such
    # files are found before anything moves and left where they are; train.fit puts a file splits.csv does not name
    # in train, so their near-duplicates are kept in train.
    odd = {rel for rel, _ in files if not mf.usable_name(rel)}
    for rel in sorted(odd):
        log.warning(
            "%s: the file name is not UTF-8 text (or holds a control character), so splits.csv cannot name it; it stays "
            "where it is, out of the split (train.fit will train on it). Rename it to a UTF-8 name on one line and run "
            "the split again",
            mf.shown(str(root / rel)),
        )
    check_writable(root)
    items, bad = scan(root, files, progress)
    bad = {k: v for k, v in bad.items() if k not in odd}  # a badly named file is reported as such, never moved
    # Of identical files in a class, keep the one the manifest knows (its provenance and licence are recorded),
    # then a visible file over a hidden one, then the first by path; a copy dropped in by hand never displaces a
    # gathered file.
    first: dict[tuple[str, str], str] = {}
    # (An earlier split's file before a new copy of it, so the photo keeps its side.)
    order = sorted(
        items,
        key=lambda it: (
            it.path not in known,
            it.path not in previous,
            it.path.rsplit("/", 1)[-1].startswith("."),
            it.path,
        ),
    )
    for it in order:
        if it.path not in odd:
            first.setdefault((it.label, it.sha256), it.path)
    kept_items = [it for it in items if it.path in odd or first[(it.label, it.sha256)] == it.path]
    dropped = [
        (it.path, first[(it.label, it.sha256)])
        for it in items
        if it.path not in odd and first[(it.label, it.sha256)] != it.path
    ]
    if move:
        for rel in bad:
            mf.quarantine(root, rel, "unreadable")
        for rel, _ in dropped:
            mf.quarantine(root, rel, "duplicates")
        gone = set(bad) | {d for d, _ in dropped}
        if gone and mf.drop_rows(root, gone):  # other rows and columns (a hand-edited manifest) stay as they were
            mf.write_attribution(root, mf.read_manifest(root))
    else:
        kept_items = items  # nothing moves: exact duplicates simply share a group
    groups = near_duplicate_groups([it.phash for it in kept_items], threshold, [it.mirror for it in kept_items])
    members: dict[int, list[Item]] = defaultdict(list)
    for it, g in zip(kept_items, groups, strict=True):
        members[g].append(it)
    multi = [sorted(mf.shown(m.path) for m in ms) for ms in members.values() if len(ms) > 1]
    cross = [sorted(mf.shown(m.path) for m in ms) for ms in members.values() if len({m.label for m in ms}) > 1]
    pinned = {g for it, g in zip(kept_items, groups, strict=True) if it.path in odd}
    splits = {p: s for p, s in assign(kept_items, groups, valid_pct, seed, pinned, previous).items() if p not in odd}
    res = SplitResult(splits, bad, dropped, sorted(cross), sorted(multi), sorted(mf.shown(p) for p in odd))
    res.reshuffled = reshuffle and bool(earlier)
    res.previous = len(previous)
    res.new = sum(p not in previous for p in splits)
    res.kept_side = sum(previous.get(p) == s for p, s in splits.items())
    res.to_valid = sorted(mf.shown(p) for p, s in splits.items() if s == "valid" and previous.get(p) == "train")
    res.changed = sum(p in earlier and earlier[p] != s for p, s in splits.items()) if reshuffle else 0
    rows = [{"path": p, "split": s} for p, s in sorted(res.splits.items())]
    mf.atomic_write(root / SPLITS_FILE, mf.rows_to_csv(rows, ["path", "split"]))
    report = {
        "images": len(res.splits),
        "per_class": res.counts(),
        "threshold": threshold,
        "unreadable": res.unreadable,
        "exact_duplicates_dropped": [{"dropped": d, "kept": k} for d, k in res.exact_duplicates],
        "near_duplicate_groups": len(res.near_groups),
        "images_in_near_duplicate_groups": sum(len(g) for g in res.near_groups),
        "under_two_classes": res.cross_class,
        "groups": res.near_groups,
        "not_utf8_names_left_out": res.bad_names,
        "reshuffled": res.reshuffled,
        "kept_side": res.kept_side,
        "new": res.new,
        "earlier_train_moved_to_valid": res.to_valid,
        "changed_side": res.changed,
    }
    mf.atomic_write(root / REPORT, json.dumps(report, indent=2).encode())
    return res


def first_ten(items: list[str], root: Path) -> list[str]:
    """Report lines for up to ten items, indented, and how many more the split report lists."""
    more = [f"    ... {len(items) - 10} more in {root / REPORT}"] if len(items) > 10 else []
    return [f"    {x}" for x in items[:10]] + more


def format_result(res: SplitResult, root: Path, move: bool) -> str:
    where = "moved to _quarantine/" if move else "left in place (--no-move)"
    lines = [f"wrote {root / SPLITS_FILE}: {len(res.splits)} images"]
    for label, c in res.counts().items():
        lines.append(f"  {label}: {c['train']} train, {c['valid']} valid")
    if res.reshuffled:
        lines.append(
            f"  fresh split (--reshuffle): {res.changed} photo(s) of the earlier {SPLITS_FILE} changed side; evaluate "
            "models trained before with `python -m train.evaluate RUN DATA_DIR --split valid` (it uses the photos "
            "their metrics.json records)"
        )
    elif res.previous:
        lines.append(
            f"  kept the side of {res.kept_side} photo(s) from the earlier {SPLITS_FILE}; {res.new} new photo(s) "
            "assigned (--reshuffle draws a fresh split)"
        )
        if res.to_valid:
            lines.append(
                f"  earlier training photos moved to valid: {len(res.to_valid)} (their near-duplicate group now also "
                "holds validation photos; models trained before trained on them)"
            )
            lines += first_ten(res.to_valid, root)
    lines.append(f"  unreadable files: {len(res.unreadable)} ({where})")
    lines.append(f"  exact duplicates within a class: {len(res.exact_duplicates)} ({where})")
    lines.append(
        f"  near-duplicate groups: {len(res.near_groups)} holding {sum(len(g) for g in res.near_groups)} images "
        "(each group kept on one side of the split)"
    )
    lines.append(f"  groups under two or more classes: {len(res.cross_class)} (check their labels)")
    if res.bad_names:
        lines.append(
            f"  files left out because their names are not UTF-8 text on one line: {len(res.bad_names)} (rename them "
            "and run the split again; until then train.fit puts them, and the split their near-duplicates, in train)"
        )
        lines += first_ten(res.bad_names, root)
    lines += first_ten(["  ".join(g) for g in res.cross_class], root)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.split",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data_dir", type=Path, help="DATA_DIR with one sub-folder of images per class")
    p.add_argument("--valid-pct", type=FRACTION, default=0.2, help="share of each class for validation (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help="random seed of the split (default 42)")
    p.add_argument(
        "--threshold",
        type=int_at_least(0, 64),
        default=DEFAULT_THRESHOLD,
        help=f"near-duplicate Hamming distance between 64-bit perceptual hashes (default {DEFAULT_THRESHOLD})",
    )
    p.add_argument("--no-move", action="store_true", help="report duplicates and unreadable files but move nothing")
    p.add_argument(
        "--reshuffle",
        action="store_true",
        help=f"ignore the earlier {SPLITS_FILE} and draw a fresh split with --seed (photos may change sides, so a "
        "model trained before may find its training photos in valid). Without it, photos the earlier "
        f"{SPLITS_FILE} named keep their side and only new photos are assigned",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if not args.data_dir.is_dir():
        print(f"error: {args.data_dir} is not a folder; give DATA_DIR with one sub-folder per class", file=sys.stderr)
        return 1
    files = list_files(args.data_dir)
    if not files:
        print(f"error: no images found under {args.data_dir}/<class>/", file=sys.stderr)
        return 1
    try:
        res = split_dataset(
            args.data_dir,
            args.valid_pct,
            args.seed,
            args.threshold,
            move=not args.no_move,
            progress=not args.quiet,
            files=files,
            reshuffle=args.reshuffle,
        )
    except NotWritableError as e:
        print(f"error: {e.strerror}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f" ({mf.shown(str(e.filename))})" if e.filename else ""
        print(f"error: {e.strerror or e}{where} while splitting {mf.shown(str(args.data_dir))}", file=sys.stderr)
        return 1
    print(format_result(res, args.data_dir, not args.no_move))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
