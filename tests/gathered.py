"""Helpers for tests that read what gather wrote: manifest rows, file hashes, a folder of class sub-folders."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from tests.servers import image_bytes


def rows_of(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def shas_in(folder: Path) -> set[str]:
    return {sha(p) for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()


def make_tree(root: Path, spec: dict[str, list[int]]) -> Path:
    """root/<label>/img<seed>.jpg for every seed of every label: a folder to import or a gathered one to edit."""
    for label, seeds in spec.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for s in seeds:
            (root / label / f"img{s}.jpg").write_bytes(image_bytes("JPEG", seed=s))
    return root
