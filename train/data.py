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
    try:
        info = json.loads(Path(f).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(
            f"{f} is not valid JSON ({e}); it should be {CLASSES_LAYOUT}: fix it or move it aside"
        ) from e
    if not isinstance(info, dict) or not all(isinstance(v, dict) for v in info.values()):
        raise DatasetError(f"{f} should be {CLASSES_LAYOUT}: fix it or move it aside")
    return info


def read_splits(ds: Dataset) -> tuple[list[int], list[int]] | None:
    """Use DATA_DIR/splits.csv (columns path,split with split in train/valid) when present."""
    f = ds.root / SPLITS_FILE
    if not f.is_file():
        return None
    redo = "delete it, or write it again with `python -m train.split DATA_DIR`"
    try:
        with open(f, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not {"path", "split"} <= set(reader.fieldnames or []):
                raise DatasetError(f"{f} needs the columns path,split (found {reader.fieldnames}); {redo}")
            rows = {r["path"]: (r["split"] or "").strip().lower() for r in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read {f} ({e}); {redo}") from e
    train, valid = [], []
    for i, p in enumerate(ds.paths):
        s = rows.get(ds.rel(p))
        if s == "valid":
            valid.append(i)
        elif s == "train":
            train.append(i)
        else:
            log.warning("%s is not in %s; putting it in train", ds.rel(p), SPLITS_FILE)
            train.append(i)
    if not valid or not train:
        raise DatasetError(f"{f} leaves an empty train or valid split; delete it or run the split stage again")
    check_every_class_trains(ds, train, f"fix {f} so that every class has training photos, or {redo}")
    return train, valid


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
