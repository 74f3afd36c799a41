"""manifest.csv (one row per kept image, with provenance), atomic file writes, reconciliation, ATTRIBUTION.md."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from snake_model.mdtext import md_code, md_text
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


# Author cells that name nobody: an image under a licence that requires attribution cannot be credited.
NO_AUTHOR = frozenset({"", "?", "unknown", "none", "null", "n/a", "-"})


def needs_attribution(licence: str | None) -> bool:
    """Whether the licence requires crediting the author: every CC BY variant (cc-by, cc-by-sa, cc-by-nc, ...)."""
    code = normalise_licence(licence)
    return code == "cc-by" or code.startswith("cc-by-")


def has_author(author: str | None) -> bool:
    """Whether an author cell names someone (not empty, '?', 'unknown', ...)."""
    return " ".join(str(author or "").split()).lower() not in NO_AUTHOR


def use_reason(licence: str | None, author: str | None, publishable: Iterable[str] = PUBLISHABLE) -> str:
    """Why an image may not be published ('' when it may): its licence is not in `publishable`, or the licence
    requires attribution and no author is recorded to credit."""
    code = normalise_licence(licence)
    if code not in {normalise_licence(p) for p in publishable}:
        if code == "unknown":
            return "licence unknown"
        return f"{code} is not a publishable licence"
    if needs_attribution(code) and not has_author(author):
        return f"no author to credit ({code} requires attribution)"
    return ""


def licence_use(licence: str, publishable: Iterable[str] = PUBLISHABLE, author: str | None = None) -> str:
    """'publishable' for CC0 / CC-BY / CC-BY-SA (by default), 'train-only' for NC, ND, unknown and the rest.

    Pass the image's `author` ("" when there is none): a licence that requires attribution (CC BY and its
    variants) with no author to credit is train-only. author=None means the caller has no author to check and
    only the licence is looked at; every caller that records or filters an image should pass it.
    """
    if author is None:
        return (
            "publishable" if normalise_licence(licence) in {normalise_licence(p) for p in publishable} else "train-only"
        )
    return "train-only" if use_reason(licence, author, publishable) else "publishable"


def is_web_url(text: str | None) -> bool:
    """Whether a link can be published: http(s) only, never a file:// URL or a local path."""
    return str(text or "").lower().startswith(("http://", "https://"))


def public_link(row: dict) -> str:
    """The row's page (else image) URL when it is a web address; '' for local files (file://, paths)."""
    for key in ("page_url", "image_url"):
        if is_web_url(row.get(key)):
            return str(row[key])
    return ""


def attribution_text(row: dict) -> str:
    """A one-line credit: what, who, licence, where (a web address; a local file is never named)."""
    lic = row.get("licence") or "unknown"
    who = f"by {row['author']}" if has_author(row.get("author")) else "author unknown"
    where = public_link(row)
    local = not where and bool(row.get("page_url") or row.get("image_url"))
    lic_text = "licence unknown" if lic == "unknown" else lic.upper().replace("CC-", "CC ")
    text = f"Photo {who}, {lic_text}, via {row.get('source', '?')}"
    return text + (f": {where}" if where else " (local file)" if local else "")


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


# gather writes its report at the end of every run that finished (or was stopped with Ctrl-C), never after a crash:
# its modification time is when the last run that completed ended.
LAST_RUN = "gather_report.json"


def last_completed_run(out: Path) -> float | None:
    """When the last gather run that completed ended (its report's mtime), or None when none has."""
    try:
        return (Path(out) / LAST_RUN).stat().st_mtime
    except OSError:
        return None


def _fetched_at(row: dict) -> float | None:
    try:
        when = datetime.fromisoformat((row.get("fetched_at") or "").strip())
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def deleted_by_hand(row: dict, completed_at: float | None) -> bool:
    """Whether a row whose file is gone was deleted by hand rather than lost in a crash.

    gather writes the image (fsynced) before its row, so a crash leaves an image without a row, never the other way
    round, except on a file system that loses a finished write: then the row is newer than the last completed run
    (or no run has completed yet). A row from before the last completed run lost its file after that run ended:
    the user removed it. A row whose time cannot be read is taken as a hand deletion (a hand-edited row).
    """
    if completed_at is None:
        return False
    when = _fetched_at(row)
    return when is None or when <= completed_at


def _sha256(p: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _label_at(rel: str, row: dict) -> str:
    """The class a row takes when its file is found at rel: the folder's name; _trash keeps the class (a delete,
    as the clean workbench records it); _not_snake becomes the class, as the workbench records it."""
    top = top_folder(rel)
    return row["class"] if top == "_trash" else top


def _free_rel(out: Path, rel: str, taken: set[str]) -> str:
    """rel, or rel with a -N suffix, that no row records and no file occupies."""
    stem, dot, ext = rel.rpartition(".")
    cand, n = rel, 1
    while cand in taken or (out / cand).exists():
        cand = f"{stem}-{n}.{ext}" if dot else f"{rel}-{n}"
        n += 1
    return cand


def reconcile(
    out: Path, adopt=None, classes: Iterable[str] = (), completed_at: float | None = None
) -> tuple[list[dict], dict[str, int]]:
    """Make the manifest match the disk after any interruption or hand edit; returns (rows, counts of what changed).

    Only gather's own folders are looked at: the class folders (`classes`, and the folders manifest rows point
    into). Files that are not named like images (.jpg, .png, ...) and every other folder are never touched.

    With a manifest (gather's earlier output):
    - stale temp files are deleted;
    - a row whose file is gone but whose image (same sha256) is found unrecorded elsewhere (another class folder,
      _trash/, _not_snake/) was moved by hand: the row follows it (path, and class: the user relabelled it);
      counted as `moved_by_hand`;
    - a row in a class folder whose file is gone and not found was deleted by hand when it is older than the last
      completed run (`completed_at`, default: the mtime of gather_report.json; see deleted_by_hand): it is kept as
      a tombstone, its path moved to _trash/<path> as the clean workbench records a delete, so its URL and image
      are never fetched again while its class's quota (files in class folders) is refilled; `deleted_by_hand`.
      A row newer than that is a crash's: dropped so it is fetched again; `rows_without_file`;
    - a row outside the class folders (_trash, _not_snake: a clean decision) whose file is gone stays as it is;
    - a file gather wrote but had no time to record (an orphan named like ours, matching no row) is moved to
      _quarantine/orphans/ so it is fetched again with its provenance; any other unrecorded image is adopted
      through `adopt(path, rel, label) -> row | None` (None, it does not decode: moved to _quarantine/unrecorded/).

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
    rows: list[dict] = []
    seen: set[str] = set()  # every path a row records
    lost: dict[str, list[dict]] = {}  # sha256 -> rows whose file is gone and is not found yet
    lost_ids: set[int] = set()
    for r in on_disk:
        if r["path"] in seen:
            fixed["rows_without_file"] += 1  # a second row for one file
            continue
        seen.add(r["path"])
        r = dict(r)
        rows.append(r)
        if not (out / r["path"]).is_file():
            lost.setdefault(r["sha256"], []).append(r)
            lost_ids.add(id(r))
    moved: set[int] = set()  # id() of the lost rows found again

    def find_moved(p: Path, rel: str, digest: str | None = None) -> bool:
        """Whether the unrecorded file p is a lost row's image, moved by hand; the row then follows it."""
        if not lost:
            return False
        named = OWN_NAME.match(p.name)
        if named and not any(sha.startswith(p.name.split(".")[0]) for sha in lost):
            return False  # gather's name is the start of the sha256: not one of the lost images
        digest = digest or _sha256(p)
        if digest not in lost:
            return False
        r = lost[digest].pop(0)
        if not lost[digest]:
            del lost[digest]
        r["path"], r["class"] = rel, _label_at(rel, r)
        seen.add(rel)
        moved.add(id(r))
        fixed["moved_by_hand"] += 1
        return True

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
            if had_manifest and find_moved(p, rel):
                continue
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
    if lost:  # moved out of gather's folders: to a new class folder, or to _trash / _not_snake by hand
        elsewhere = [d for d in class_dirs(out) if d.name not in folders] + [
            out / top for top in DECIDED_DIRS if (out / top).is_dir()
        ]
        for d in elsewhere:
            try:
                found = _image_files(d, deep=d.name in DECIDED_DIRS)
            except OSError:
                continue
            for p in found:
                rel = p.relative_to(out).as_posix()
                if lost and OWN_NAME.match(p.name) and rel not in seen and usable_name(rel):
                    find_moved(p, rel)
    completed = last_completed_run(out) if completed_at is None else completed_at
    gone: list[int] = []
    for i, r in enumerate(rows):
        if id(r) not in lost_ids or id(r) in moved or not in_class_folder(r):
            continue  # a row with its file, or a clean decision (_trash, _not_snake) whose file was removed since
        if deleted_by_hand(r, completed):
            r["path"] = _free_rel(out, f"_trash/{r['path']}", seen)
            seen.add(r["path"])
            fixed["deleted_by_hand"] += 1
        else:
            gone.append(i)
            fixed["rows_without_file"] += 1
    for i in reversed(gone):
        del rows[i]
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


def reapply_policy(out: Path, publishable: Iterable[str] = PUBLISHABLE, rows: list[dict] | None = None) -> int:
    """Recompute every row's `use` from its licence, its author and the current licence policy; returns how many
    rows changed. The manifest is rewritten when one did, and ATTRIBUTION.md is rewritten from the rows in class
    folders.

    `rows`: the manifest's rows as reconcile returned them (updated in place, so a caller holding them stays in
    step); default: read from out/manifest.csv (a malformed one raises ManifestError, nothing is changed).
    """
    out = Path(out)
    if rows is None:
        if not (out / MANIFEST).is_file():
            return 0
        rows = read_manifest(out, strict=True)
    publishable = frozenset(normalise_licence(p) for p in publishable)
    changed = 0
    for r in rows:
        use = licence_use(r.get("licence") or "", publishable, r.get("author") or "")
        if r.get("use") != use:
            r["use"] = use
            changed += 1
    if changed or not (out / MANIFEST).is_file():
        extra = [k for k in (rows[0] if rows else {}) if k not in COLUMNS and isinstance(k, str)]
        atomic_write(out / MANIFEST, rows_to_csv(rows, COLUMNS + extra))
    write_attribution(out, rows)
    return changed


# ---------------------------------------------------------------- ATTRIBUTION.md


def _md(text: object) -> str:
    """Third-party text (an author's name, a source, a licence as the site spelled it) shown literally in a table
    cell: never a link, an image, HTML, emphasis or a new cell (md_text escapes | too)."""
    return md_text(text)


def _md_path(path: object) -> str:
    """A file path as a code span in a table cell: GFM splits a row at | even inside a code span, so it is escaped."""
    return md_code(path).replace("|", "\\|")


# Characters kept as they are in a published link; every other one (space, parentheses, < > ` | [ ] " { } ^, the
# backslash, controls, non-ASCII) is percent-encoded, so the URL can end neither the link nor the table cell early.
_URL_SAFE = ":/?#@!$&'*+,;=%~-._"


def _md_link(url: str) -> str:
    """An http(s) URL the manifest recorded as a Markdown link destination that stays one. & becomes &amp;: a
    destination's entities are decoded, so a query such as ?a=1&lt;=2 keeps its literal text."""
    return quote(url, safe=_URL_SAFE).replace("&", "&amp;")


def attribution_markdown(rows: list[dict]) -> str:
    """ATTRIBUTION.md for the images in the class folders (rows moved to _trash, _not_snake, ... are left out).

    It is published with the model: a source is linked only by its web address, never by a file:// URL or a local
    path ("local file"), and a train-only image whose licence requires attribution says so when it has no author.
    """
    rows = [r for r in rows if in_class_folder(r)]
    pub = [r for r in rows if r.get("use") == "publishable"]
    pub_licences = sorted({normalise_licence(r.get("licence")) for r in pub})
    shown_licences = ", ".join(x.upper().replace("CC-", "CC ") for x in pub_licences) or "none"
    lines = [
        "# Image attribution",
        "",
        "Generated from `manifest.csv` by `python -m train.gather`; do not edit by hand.",
        "",
        f"{len(rows)} images: {len(pub)} publishable ({shown_licences}), "
        f"{len(rows) - len(pub)} train-only (non-commercial, no-derivatives or unknown licence, or no author to "
        "credit: used to train the model, never redistributed).",
        "",
    ]
    for cls in sorted({r["class"] for r in rows}):
        mine = [r for r in rows if r["class"] == cls]
        lines += [
            f"## {_md(cls)} ({len(mine)} images)",
            "",
            "| file | licence | use | author | source |",
            "|---|---|---|---|---|",
        ]
        for r in sorted(mine, key=lambda r: r["path"]):
            link = public_link(r)
            source = _md(r.get("source") or "?")
            if link:  # only an http(s) address the manifest recorded is ever a link (public_link)
                src = f"[{source}]({_md_link(link)})"
            elif r.get("page_url") or r.get("image_url"):
                src = f"{source} (local file)"
            else:
                src = source
            use = r.get("use", "")
            if use != "publishable" and needs_attribution(r.get("licence")) and not has_author(r.get("author")):
                use = f"{use} (no author to credit)"
            author = r.get("author") if has_author(r.get("author")) else "unknown"
            lines.append(
                f"| {_md_path(r['path'])} | {_md(r.get('licence') or 'unknown')} | {_md(use)} | {_md(author)} | {src} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_attribution(out: Path, rows: list[dict]) -> None:
    atomic_write(Path(out) / ATTRIBUTION, attribution_markdown(rows).encode("utf-8"))
