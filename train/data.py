"""Class-folder datasets: listing, verification through the one loader, and the train/valid split."""

from __future__ import annotations

import csv
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from snake_model.loader import ImageLoadError, load_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".jfif"}
# Folders inside a dataset that are never classes (cleaning trash, gather bookkeeping).
SKIP_DIRS = {"_trash", "_not_snake", "_quarantine", "_tmp", ".clean", "__pycache__"}
SPLITS_FILE = "splits.csv"
# The decoy class train.fit --background adds: not one of the species, left out of the card's species counts.
BACKGROUND_LABEL = "not_a_snake"


class DatasetError(ValueError):
    """The data directory cannot be used for training; the message says how to fix it."""


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    paths: list[Path]
    labels: list[int]
    skipped: dict[str, str] = field(default_factory=dict)  # relative path -> reason

    def rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()


def write_problem(d: str | Path) -> OSError | None:
    """Why files cannot be created in folder d (or d be made, where it does not exist yet), or None when they can.
    Probed with an unnamed temporary file in d or its nearest existing parent, so nothing is left behind (a read-only
    mount refuses even root, where permission bits would not)."""
    import errno
    import tempfile

    p = Path(d).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return NotADirectoryError(errno.ENOTDIR, "not a folder", str(p))
    try:
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        return e
    return None


def class_dirs(root: str | Path) -> list[Path]:
    """The sub-folders of a dataset that can be classes, sorted (hidden and bookkeeping folders left out)."""
    return sorted(
        d for d in Path(root).iterdir() if d.is_dir() and d.name not in SKIP_DIRS and not d.name.startswith(".")
    )


def image_files(folder: str | Path) -> list[Path]:
    """Every file under folder (sub-folders and hidden files included) with an image suffix, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_images(root: str | Path, verify: bool = False, min_classes: int = 2, min_per_class: int = 2) -> Dataset:
    """One sub-folder per class; files are found by suffix and, with verify, decoded by the loader."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory; give a folder with one sub-folder of images per class")
    paths, labels, classes, skipped = [], [], [], {}
    for d in class_dirs(root):
        files = image_files(d)
        if not files:
            continue
        ci = len(classes)
        classes.append(d.name)
        for p in files:
            if verify:
                try:
                    load_image(p)
                except ImageLoadError as e:
                    skipped[p.relative_to(root).as_posix()] = str(e)
                    continue
            paths.append(p)
            labels.append(ci)
    if len(classes) < min_classes:
        raise DatasetError(
            f"{root} has {len(classes)} class folder(s) with images; need at least {min_classes} "
            "(layout: DATA_DIR/<class name>/<image files>)"
        )
    for ci, c in enumerate(classes):
        if labels.count(ci) < min_per_class:
            raise DatasetError(
                f"class {c!r} has {labels.count(ci)} usable image(s); need at least {min_per_class} per class"
            )
    return Dataset(root, classes, paths, labels, skipped)


def random_split(ds: Dataset, valid_pct: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified random split: valid_pct of every class goes to validation (at least one image), and every class
    of two or more images keeps at least one for training."""
    rng = random.Random(seed)
    train, valid = [], []
    for ci in range(len(ds.classes)):
        idx = [i for i, y in enumerate(ds.labels) if y == ci]
        rng.shuffle(idx)
        n_valid = max(1, round(len(idx) * valid_pct))
        if len(idx) > 1:
            n_valid = min(n_valid, len(idx) - 1)
        valid += idx[:n_valid]
        train += idx[n_valid:]
    return sorted(train), sorted(valid)


CLASSES_LAYOUT = 'an object {"label": {"display_name": ..., "scientific_name": ..., "venomous": true|false}}'


def read_class_info(f: Path) -> dict:
    """classes.json ({label: {display_name, scientific_name, venomous}}), or a DatasetError saying what is wrong."""
    from snake_model.spec import SpecError, check_class_info

    try:
        info = json.loads(Path(f).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else e
        raise DatasetError(
            f"{f} is not valid JSON ({why}); it should be {CLASSES_LAYOUT}: fix it or move it aside"
        ) from e
    if not isinstance(info, dict) or not all(isinstance(v, dict) for v in info.values()):
        raise DatasetError(f"{f} should be {CLASSES_LAYOUT}: fix it or move it aside")
    try:
        check_class_info(info)  # the same types the model's config.json must hold (venomous true/false/null, ...)
    except SpecError as e:
        raise DatasetError(f"{f}: {e}; fix it or move it aside") from e
    return info


def split_threshold(root: Path) -> int:
    """The near-duplicate threshold the last train.split used (its split_report.json), else its default."""
    from train.split import DEFAULT_THRESHOLD, REPORT

    try:
        t = json.loads((root / REPORT).read_text(encoding="utf-8")).get("threshold")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_THRESHOLD
    return t if isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= 64 else DEFAULT_THRESHOLD


def near_duplicates_of_valid(ds: Dataset, unnamed: list[int], valid: list[int]) -> dict[int, int]:
    """Of the images splits.csv does not name (unnamed), those that are near-duplicates of a validation image, as
    train.split would group them (perceptual hash or its mirror image, within the split's threshold, chains of
    unnamed images included): {unnamed index: the valid index it joins}. Only the unnamed and the valid images are
    decoded and hashed, never the training ones; an image that does not decode is left alone."""
    from train.split import UnionFind, near_duplicate_pairs, phash_pair

    idx, hashes, mirrors = [], [], []
    for i in unnamed + valid:
        try:
            h, m = phash_pair(load_image(ds.paths[i]))
        except (ImageLoadError, OSError):
            continue
        idx.append(i)
        hashes.append(h)
        mirrors.append(m)
    uf = UnionFind(len(idx))
    for a, b in near_duplicate_pairs(hashes, split_threshold(ds.root), mirrors):
        uf.union(a, b)
    valid_set = set(valid)
    root_valid = {}
    for a, i in enumerate(idx):
        if i in valid_set:
            root_valid.setdefault(uf.find(a), i)
    return {i: root_valid[uf.find(a)] for a, i in enumerate(idx) if i not in valid_set and uf.find(a) in root_valid}


def read_splits(ds: Dataset) -> tuple[list[int], list[int]] | None:
    """Use DATA_DIR/splits.csv (columns path,split with split in train/valid) when present.

    An image splits.csv does not name (added or moved after the split) goes to train, unless it is a near-duplicate
    of a validation image (a copy, re-crop or mirrored copy, as train.split groups them): then it goes to valid, so
    validation never scores a photo the model trained on. A warning gives the counts and says to re-run the split."""
    f = ds.root / SPLITS_FILE
    if not f.is_file():
        return None
    redo = "delete it, or write it again with `python -m train.split DATA_DIR`"
    try:
        with open(f, newline="", encoding="utf-8-sig") as fh:  # a spreadsheet's "CSV UTF-8" starts with a BOM
            reader = csv.DictReader(fh)
            if not {"path", "split"} <= set(reader.fieldnames or []):
                raise DatasetError(f"{f} needs the columns path,split (found {reader.fieldnames}); {redo}")
            rows = {r["path"]: (r["split"] or "").strip().lower() for r in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read {f} ({e}); {redo}") from e
    train, valid, unnamed = [], [], []
    for i, p in enumerate(ds.paths):
        s = rows.get(ds.rel(p))
        if s == "valid":
            valid.append(i)
        elif s == "train":
            train.append(i)
        else:
            unnamed.append(i)
    if unnamed:
        to_valid = near_duplicates_of_valid(ds, unnamed, valid) if valid else {}
        for i, v in sorted(to_valid.items()):
            log.warning(
                "%s is not in %s and is a near-duplicate of the validation photo %s; putting it in valid",
                _shown(ds.rel(ds.paths[i])),
                SPLITS_FILE,
                _shown(ds.rel(ds.paths[v])),
            )
        rest = [i for i in unnamed if i not in to_valid]
        if rest:
            names = ", ".join(_shown(ds.rel(ds.paths[i])) for i in rest[:10])
            more = f" and {len(rest) - 10} more" if len(rest) > 10 else ""
            log.warning("not in %s, so put in train: %s%s", SPLITS_FILE, names, more)
        log.warning(
            "%d image(s) under %s are not in %s (added or moved after the split): %d near-duplicate(s) of validation "
            "photos put in valid, %d put in train. Run `python -m train.split %s` to split them properly",
            len(unnamed),
            _shown(str(ds.root)),
            SPLITS_FILE,
            len(to_valid),
            len(rest),
            _shown(str(ds.root)),
        )
        valid = sorted(valid + list(to_valid))
        train = sorted(train + rest)
    if not valid or not train:
        raise DatasetError(f"{f} leaves an empty train or valid split; delete it or run the split stage again")
    check_every_class_trains(ds, train, f"fix {f} so that every class has training photos, or {redo}")
    return train, valid


def _shown(name: str) -> str:
    """A path as it can be printed (train.manifest.shown: undecodable bytes and control characters escaped)."""
    from train.manifest import shown

    return shown(name)


def classes_without(ds: Dataset, idx) -> list[str]:
    """The classes with no image among ds.paths[idx], in class order."""
    have = {ds.labels[i] for i in idx}
    return [c for ci, c in enumerate(ds.classes) if ci not in have]


def check_every_class_trains(ds: Dataset, train_idx, fix: str) -> None:
    """A DatasetError naming the classes that have no training image (a model cannot learn them); fix says how."""
    empty = classes_without(ds, train_idx)
    if empty:
        raise DatasetError(
            f"class(es) {', '.join(map(repr, empty))} have no training images, so the model could not learn them; "
            + fix
        )
