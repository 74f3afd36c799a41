"""manifest.csv (one row per kept image, with provenance), atomic file writes, reconciliation, ATTRIBUTION.md."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from snake_model.text import is_utf8, utf8_safe
from train.data import SKIP_DIRS, class_dirs

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
ATTRIBUTION = "ATTRIBUTION.md"
QUARANTINE = "_quarantine"
COLUMNS = [
    "class",
    "source",
    "query",
    "page_url",
    "image_url",
    "licence",
    "author",
    "attribution",
    "use",
    "sha256",
    "phash",
    "width",
    "height",
    "fetched_at",
    "path",
]
PUBLISHABLE = frozenset({"cc0", "cc-by", "cc-by-sa"})
TMP_PREFIX = ".gather-"
TMP_SUFFIX = ".part"
# The names gather gives the files it writes: 16 hex digits of the sha256 and the real format's suffix.
OWN_NAME = re.compile(r"^[0-9a-f]{16}\.(jpg|png|webp|gif|bmp)$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------- licences


def normalise_licence(text: str | None) -> str:
    """Map 'CC BY-SA 4.0', 'cc_by_nc', 'CC0 1.0', None ... to a short code: cc0, cc-by, cc-by-nc-sa, unknown."""
    t = (text or "").strip().lower().replace("_", "-").replace(" ", "-")
    if not t or t in ("unknown", "none", "null", "?"):
        return "unknown"
    if t.startswith(("cc0", "cc-0")):
        return "cc0"
    t = re.sub(r"-?\d+(\.\d+)?$", "", t)  # version numbers
    if t in ("public-domain", "pd", "pdm", "cc-pdm"):
        return "cc0"
    if t.startswith("cc-") or t.startswith("by"):
        parts = [p for p in t.removeprefix("cc-").split("-") if p]
        order = [p for p in ("by", "nc", "nd", "sa") if p in parts]
        if order and order[0] == "by":
            return "cc-" + "-".join(order)
    if "all-rights" in t or t in ("c", "copyright"):
        return "all-rights-reserved"
    return t


def licence_use(licence: str, publishable: Iterable[str] = PUBLISHABLE) -> str:
    """'publishable' for CC0 / CC-BY / CC-BY-SA (by default), 'train-only' for NC, ND, unknown and the rest."""
    return "publishable" if normalise_licence(licence) in set(publishable) else "train-only"


def attribution_text(row: dict) -> str:
    """A one-line credit: what, who, licence, where."""
    lic = row.get("licence") or "unknown"
    who = f"by {row['author']}" if row.get("author") else "author unknown"
    where = row.get("page_url") or row.get("image_url") or ""
    lic_text = "licence unknown" if lic == "unknown" else lic.upper().replace("CC-", "CC ")
    return f"Photo {who}, {lic_text}, via {row.get('source', '?')}" + (f": {where}" if where else "")


# ---------------------------------------------------------------- atomic writes


def fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that it either exists complete or not at all: temp file in the same dir, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}{TMP_SUFFIX}"
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


# Cells matched against the disk or against later candidates: their text is kept exactly (a label or a file
# name may hold two spaces in a row); every other cell is free text and its whitespace is collapsed.
EXACT_COLUMNS = frozenset({"class", "path", "image_url", "sha256"})
# Characters that would break a row over two lines (csv, str.splitlines) or are invisible controls.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control_chars(text: str) -> bool:
    return bool(_BREAKS.search(text))


def shown(name: str) -> str:
    """A file name as it can be printed and searched for: undecodable bytes as \\xNN, controls escaped."""
    text = utf8_safe(name)
    return repr(text)[1:-1] if has_control_chars(text) else text


def usable_name(rel: str) -> bool:
    """Whether a relative path can be a manifest `path` cell as it is: UTF-8, on one line, no control characters."""
    return is_utf8(rel) and not has_control_chars(rel)


def cell(v: object, exact: bool = False) -> str:
    """One manifest cell on one physical line; exact cells keep their spaces, free text has them collapsed."""
    text = _BREAKS.sub(" ", str(v if v is not None else ""))
    return text if exact else " ".join(text.split())


def rows_to_csv(rows: Iterable[dict], columns: list[str] = COLUMNS) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: cell(r.get(c, ""), c in EXACT_COLUMNS) for c in columns})
    return buf.getvalue().encode("utf-8")


# ---------------------------------------------------------------- the manifest


class ManifestError(ValueError):
    """manifest.csv is not in gather's format, so nothing that depends on it can be trusted to change the disk."""


def _manifest_text(f: Path) -> str:
    """The file's text without a torn last line (a kill in the middle of an append)."""
    text = f.read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return text


def read_manifest(out: Path, strict: bool = False) -> list[dict]:
    """Rows of out/manifest.csv; a torn last line (a kill mid-append) is dropped.

    Malformed rows (not gather's columns, a bad sha256) are dropped with a warning, or, with strict, make it
    raise ManifestError: a caller that deletes or moves files by the manifest must not act on a half-read one.
    """
    f = Path(out) / MANIFEST
    if not f.is_file():
        return []
    rows, bad = [], 0
    for r in csv.DictReader(io.StringIO(_manifest_text(f))):
        if None in r or any(r.get(c) is None for c in COLUMNS) or not _SHA.match(r["sha256"] or ""):
            log.warning("dropping a malformed manifest row: %s", r)
            bad += 1
            continue
        rows.append(r)
    if strict and bad:
        raise ManifestError(
            f"{f}: {bad} of {bad + len(rows)} rows are not in gather's format (comma-separated, with the columns "
            f"{', '.join(COLUMNS)}). Nothing was changed. Restore the file from a backup, or move it aside to "
            "re-import the images with --folder."
        )
    return rows


def drop_rows(out: Path, paths: set[str]) -> bool:
    """Remove the rows of `paths` from out/manifest.csv, keeping every other row and column exactly as it was.

    Returns whether the file is in gather's format (then the caller may rewrite ATTRIBUTION.md from it). A file
    without a `path` column is left alone.
    """
    f = Path(out) / MANIFEST
    if not f.is_file():
        return False
    reader = csv.DictReader(io.StringIO(_manifest_text(f)))
    fields = list(reader.fieldnames or [])
    if "path" not in fields:
        log.warning("%s has no 'path' column; left unchanged", f)
        return False
    kept = [r for r in reader if r.get("path") not in paths]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", restval="", lineterminator="\n")
    w.writeheader()
    w.writerows(kept)
    atomic_write(f, buf.getvalue().encode("utf-8"))
    return set(COLUMNS) <= set(fields)


def write_manifest(out: Path, rows: list[dict]) -> None:
    atomic_write(Path(out) / MANIFEST, rows_to_csv(rows))


def append_row(out: Path, row: dict) -> None:
    """Append one row with a single write() on an O_APPEND file, then fsync: a kill leaves it whole or absent."""
    f = Path(out) / MANIFEST
    if not f.exists() or f.stat().st_size == 0:
        write_manifest(out, [])
    line = rows_to_csv([row]).split(b"\n", 1)[1]
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine(out: Path, rel: str, why: str) -> Path:
    """Move out/rel to out/_quarantine/why/rel (never delete a file the user may want back)."""
    dest = Path(out) / QUARANTINE / why / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest = dest.with_name(f"{dest.stem}-{uuid.uuid4().hex[:6]}{dest.suffix}")
    shutil.move(str(Path(out) / rel), dest)
    return dest


_TMP_NAME = re.compile(rf"^{re.escape(TMP_PREFIX)}.+{re.escape(TMP_SUFFIX)}$")  # what atomic_write leaves
# Folders the clean workbench moves decided images into (train.decisions): _trash/<class>/..., _not_snake/...
DECIDED_DIRS = ("_trash", "_not_snake")


def top_folder(rel: str) -> str:
    """'viper/ab.jpg' -> 'viper'; '_trash/viper/ab.jpg' -> '_trash'."""
    return rel.split("/", 1)[0] if "/" in rel else ""


def in_class_folder(row: dict) -> bool:
    """Whether the row's file sits in a class folder (not moved to _trash, _not_snake or _quarantine)."""
    top = top_folder(row.get("path") or "")
    return bool(top) and top not in SKIP_DIRS and not top.startswith(".")


def _holds_own_files(d: Path) -> bool:
    """Whether a folder holds files named like the ones gather writes (then it is one of gather's class folders)."""
    try:
        return any(OWN_NAME.match(p.name) for p in d.iterdir())
    except OSError:  # an unreadable folder of the user's: not ours, left alone
        return False


def _image_files(d: Path, deep: bool = False) -> list[Path]:
    from train.data import IMAGE_SUFFIXES

    found = d.rglob("*") if deep else d.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def reconcile(out: Path, adopt=None, classes: Iterable[str] = ()) -> tuple[list[dict], dict[str, int]]:
    """Make the manifest match the disk after any interruption; returns (rows, counts of what was fixed).

    Only gather's own folders are looked at: the class folders (`classes`, and the folders manifest rows point
    into). Files that are not named like images (.jpg, .png, ...) and every other folder are never touched.

    With a manifest (gather's earlier output): stale temp files are deleted; rows whose file is gone are dropped;
    a file gather wrote but had no time to record (an orphan named like ours) is moved to _quarantine/orphans/
    so it is fetched again with its provenance; any other unrecorded image is adopted through
    `adopt(path, rel, label) -> row | None` (None, it does not decode: moved to _quarantine/unrecorded/).

    Without a manifest (a folder gather did not make, or one whose manifest was lost): nothing is moved or
    deleted. Images in the class folders (and in folders holding files named like gather's) are adopted as they
    are, and so are images the clean workbench moved to _trash/ or _not_snake/, so that its decisions stand.

    No image is ever deleted. A manifest with rows not in gather's format raises ManifestError before anything
    is touched (it may be a hand-edited file, and every image would look unrecorded).
    """
    out = Path(out)
    fixed: Counter[str] = Counter()
    if not out.is_dir():
        return [], {}
    had_manifest = (out / MANIFEST).is_file()
    on_disk = read_manifest(out, strict=True)
    if had_manifest:
        folders = set(classes) | {top_folder(r["path"]) for r in on_disk if in_class_folder(r)}
    else:
        folders = set(classes) | {d.name for d in class_dirs(out) if _holds_own_files(d)}
    folders = sorted(f for f in folders if (out / f).is_dir())
    for d in [out, *(out / f for f in folders)]:
        for tmp in d.iterdir():
            if _TMP_NAME.match(tmp.name) and tmp.is_file():
                tmp.unlink(missing_ok=True)
                fixed["temp_files_removed"] += 1
    raw_lines = max(0, len((out / MANIFEST).read_bytes().splitlines()) - 1) if had_manifest else 0
    rows, seen = [], set()
    for r in on_disk:
        if r["path"] in seen or not (out / r["path"]).is_file():
            fixed["rows_without_file"] += 1
            continue
        seen.add(r["path"])
        rows.append(r)

    def unrecorded(files: list[Path]) -> Iterable[tuple[Path, str]]:
        for p in files:
            rel = p.relative_to(out).as_posix()
            if rel in seen:
                continue
            if not usable_name(rel):
                log.warning(
                    "left %s where it is: its name is not UTF-8 text on one line, so manifest.csv cannot record it; "
                    "rename it (letters, digits, spaces, - and _) and run gather again",
                    shown(str(out / rel)),
                )
                fixed["unusable_names_left"] += 1
                continue
            yield p, rel

    for f in folders:
        for p, rel in unrecorded(_image_files(out / f)):
            if had_manifest and OWN_NAME.match(p.name):
                quarantine(out, rel, "orphans")
                fixed["orphans_quarantined"] += 1
                continue
            row = adopt(p, rel, f) if adopt else None
            if row is not None:
                rows.append(row)
                seen.add(rel)
                fixed["adopted" if had_manifest else "adopted_without_manifest"] += 1
            elif had_manifest:
                quarantine(out, rel, "unrecorded")
                fixed["quarantined"] += 1
            else:
                log.warning("left %s where it is: it is named like an image but does not decode", shown(rel))
                fixed["not_images_left"] += 1
    if not had_manifest and adopt:
        for top in DECIDED_DIRS:
            if not (out / top).is_dir():
                continue
            for p, rel in unrecorded(_image_files(out / top, deep=True)):
                parts = rel.split("/")
                label = parts[1] if top == "_trash" and len(parts) > 2 else top
                row = adopt(p, rel, label)
                if row is not None:
                    rows.append(row)
                    seen.add(rel)
                    fixed["adopted_without_manifest"] += 1
    if rows != on_disk or raw_lines != len(rows) or not had_manifest:
        write_manifest(out, rows)
    for k, v in fixed.items():
        log.info("reconcile %s: %s %d", out, k, v)
    return rows, dict(fixed)


# ---------------------------------------------------------------- ATTRIBUTION.md


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def attribution_markdown(rows: list[dict]) -> str:
    pub = [r for r in rows if r.get("use") == "publishable"]
    lines = [
        "# Image attribution",
        "",
        "Generated from `manifest.csv` by `python -m train.gather`; do not edit by hand.",
        "",
        f"{len(rows)} images: {len(pub)} publishable (CC0, CC BY, CC BY-SA), "
        f"{len(rows) - len(pub)} train-only (non-commercial, no-derivatives or unknown licence: used to train the "
        "model, never redistributed).",
        "",
    ]
    for cls in sorted({r["class"] for r in rows}):
        mine = [r for r in rows if r["class"] == cls]
        lines += [
            f"## {cls} ({len(mine)} images)",
            "",
            "| file | licence | use | author | source |",
            "|---|---|---|---|---|",
        ]
        for r in sorted(mine, key=lambda r: r["path"]):
            link = r.get("page_url") or r.get("image_url") or ""
            src = f"[{_md(r['source'])}]({link})" if link.startswith("http") else _md(f"{r.get('source', '')} {link}")
            lines.append(
                f"| `{_md(r['path'])}` | {_md(r.get('licence') or 'unknown')} | {r.get('use', '')} | {_md(r.get('author') or '?')} | {src} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_attribution(out: Path, rows: list[dict]) -> None:
    atomic_write(Path(out) / ATTRIBUTION, attribution_markdown(rows).encode("utf-8"))
