"""Cleaning decisions applied to the dataset on disk, through an intent-then-commit journal.

Every decision is one move (or none, for keep) of one file plus, when DATA_DIR/manifest.csv has a row for
it, the same change to that row, and, when DATA_DIR/splits.csv (train.split) has a row for it, the rename of
that row: a moved photo stays in the split it was in (train.data.read_splits puts a file splits.csv does not
name in train, which would leak a validation photo, or the twin of one, into training). A photo that leaves
the dataset (_trash, the not-a-snake folder) keeps its row under its new path, which read_splits never looks
up, so an undo brings the row back with the photo. The journal DATA_DIR/.clean/decisions.jsonl is
append-only: a decision is written with status "pending" and fsynced, the file is moved (never over another
file), the manifest and then splits.csv are replaced atomically, and the same record is appended again with
status "done". On open, a pending record without an outcome is finished or rolled back by looking where the
file actually is, so a crash at any point leaves folders, manifest, splits and log consistent. The last record
with a given id is its state.

ATTRIBUTION.md is derived from manifest.csv (train.manifest.write_attribution, as gather and split write it): after
every decision that took effect, and after recovery finished or rolled back one, it is rewritten atomically from the
manifest as it now is. It is not part of the journal's protocol: a failed or interrupted rewrite only logs a warning
(the decision stays done) and the next decision, train.split or train.gather writes it again.
"""

from __future__ import annotations

import csv
import errno
import functools
import io
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from snake_model.artifact import sha256_file
from train.data import IMAGE_SUFFIXES, SKIP_DIRS, SPLITS_FILE
from train.manifest import ATTRIBUTION, COLUMNS, fsync_dir, read_manifest, write_attribution

log = logging.getLogger(__name__)

LOG_FILE = Path(".clean") / "decisions.jsonl"
MANIFEST = "manifest.csv"
TRASH_DIR = "_trash"
NOT_SNAKE_DIR = "_not_snake"
ACTIONS = ("keep", "delete", "relabel", "not_snake")


# One writer at a time: the workbench serves every button and API call on its own thread, and a decision's id is the
# log's largest id + 1, so two decisions at once could get the same id and one would vanish from the log.
_WRITE_LOCK = threading.RLock()


def _one_writer(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _WRITE_LOCK:
            return method(*args, **kwargs)

    return locked


class DecisionError(ValueError):
    """A decision cannot be applied; the message says why and nothing was changed."""


STATUSES = ("pending", "done", "rolled_back", "failed")
RECORD_KEYS = ("sha256", "old_label", "new_label", "old_path", "new_path")


def record_problem(rec: object) -> str | None:
    """What makes a parsed journal line unusable as a decision record, or None when it is fine."""
    if not isinstance(rec, dict):
        return "it is not a JSON object"
    if not isinstance(rec.get("id"), int) or isinstance(rec.get("id"), bool):
        return "it has no integer id"
    if rec.get("status") not in STATUSES:
        return f"its status {rec.get('status')!r} is not one of {', '.join(STATUSES)}"
    if rec.get("action") not in (*ACTIONS, "undo"):
        return f"its action {rec.get('action')!r} is not one of {', '.join((*ACTIONS, 'undo'))}"
    if missing := [k for k in RECORD_KEYS if k not in rec]:
        return f"it lacks {', '.join(missing)}"
    if not isinstance(rec["sha256"], str):
        return "its sha256 is not a string"
    for k in ("old_path", "new_path"):
        rel = PurePosixPath(str(rec[k]).replace("\\", "/"))
        if not isinstance(rec[k], str) or rel.is_absolute() or ".." in rel.parts or len(rel.parts) < 2:
            return f"its {k} {rec[k]!r} is not a path inside the dataset like <class>/<file>"
    if rec["action"] == "undo" and (not isinstance(rec.get("undoes"), int) or isinstance(rec.get("undoes"), bool)):
        return "it is an undo without the integer id of the decision it undoes"
    for key in ("manifest", "splits"):
        if rec.get(key) is not None and not (
            isinstance(rec[key], dict) and isinstance(rec[key].get("old"), str) and isinstance(rec[key].get("new"), str)
        ):
            return f"its {key} change is not an object with old and new lines"
    return None


def folder_name_problem(name: object) -> str | None:
    """Why name cannot be a single folder directly under the dataset (None when it can)."""
    if not isinstance(name, str) or not name.strip():
        return "it is empty"
    if "/" in name or "\\" in name or name in (".", ".."):
        return "it must be one folder name, without / or \\ or .."
    if name.startswith("."):
        return "a folder starting with . is hidden and skipped by every stage"
    if name != name.strip():
        return "it starts or ends with a space"
    if not name.isprintable():
        return "it holds a line break, tab or other control character"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid text (bytes from another encoding)"
    if len(encoded) > 200:
        return "it is too long for a folder name (at most 200 bytes)"
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def free_path(root: Path, rel: str) -> str:
    """rel itself if nothing is there, else rel with _1, _2, ... before the suffix: never overwrite."""
    p = PurePosixPath(rel)
    cand, i = rel, 0
    while (root / cand).exists():
        i += 1
        cand = str(p.with_name(f"{p.stem}_{i}{p.suffix}"))
    return cand


def move_noclobber(src: Path, dst: Path) -> None:
    """Move src to dst, failing if dst exists: a hard link then unlink where the filesystem allows it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # fails with EEXIST instead of replacing another file
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise DecisionError(f"{dst} already exists; refusing to overwrite it") from e
        if dst.exists():
            raise DecisionError(f"{dst} already exists; refusing to overwrite it") from e
        os.rename(src, dst)  # filesystems without hard links (some FUSE mounts)
    else:
        os.unlink(src)
    fsync_dir(dst.parent)
    fsync_dir(src.parent)


class Manifest:
    """Line-level edits of manifest.csv, so undoing a change restores the file byte for byte."""

    name = MANIFEST
    fix = 're-save it as UTF-8 (in a spreadsheet: "Save as" > "CSV UTF-8") and try again'
    # Other rows naming the path a photo moves to are stale (free_path picked a name no file has): drop them so
    # the moved photo's row is the only one for its path. Off for the manifest, whose undo is byte for byte.
    drop_stale = False

    def __init__(self, root: Path):
        self.path = root / self.name

    def _lines(self) -> list[str]:
        # Bytes, not read_text: universal newlines would turn the file's \r\n into \n on rewrite.
        data = self.path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise DecisionError(
                f"{self.path} is not UTF-8 text (line {line} has the byte 0x{data[e.start]:02X}; it was probably "
                f"saved by a spreadsheet in another encoding such as Windows-1252). It must be UTF-8: {self.fix}. "
                "No file was moved"
            ) from e
        lines = [ln + "\n" for ln in text.split("\n")]
        lines[-1] = lines[-1][:-1]  # what follows the last newline has none
        return [ln for ln in lines if ln]

    def check(self) -> None:
        """Raise DecisionError now, before anything moves, if the file exists but cannot be edited."""
        if self.path.is_file():
            self._lines()

    @staticmethod
    def _header(lines: list[str]) -> list[str]:
        # A spreadsheet's "CSV UTF-8" starts with a byte order mark; it stays in the file but is not a column name.
        return next(csv.reader([lines[0].removeprefix("\ufeff")]), []) if lines else []

    @classmethod
    def _path_index(cls, lines: list[str]) -> int | None:
        header = cls._header(lines)
        return header.index("path") if "path" in header else None

    def change_for(self, old_path: str, new_path: str, new_label: str | None) -> dict | None:
        """The {"old": line, "new": line} edit that moves the row of old_path, or None without a row."""
        if not self.path.is_file():
            return None
        lines = self._lines()
        pi = self._path_index(lines)
        if pi is None:
            return None
        header = self._header(lines)
        ci = next((header.index(c) for c in ("class", "label") if c in header), None)
        for line in lines[1:]:
            fields = next(csv.reader([line]), [])
            if len(fields) > pi and fields[pi] == old_path:
                new = list(fields)
                new[pi] = new_path
                if ci is not None and new_label is not None and len(new) > ci:
                    new[ci] = new_label
                buf = io.StringIO()
                csv.writer(buf, lineterminator="").writerow(new)
                ending = line[len(line.rstrip("\r\n")) :]
                return {"old": line.rstrip("\r\n"), "new": buf.getvalue(), "eol": ending or "\n"}
        return None

    def apply(self, change: dict | None, reverse: bool = False) -> None:
        """Make the manifest hold change['new'] (or 'old' when reverse); idempotent, atomic replace."""
        if not change or not self.path.is_file():
            return
        want, have = (change["old"], change["new"]) if reverse else (change["new"], change["old"])
        lines = self._lines()
        bare = [ln.rstrip("\r\n") for ln in lines]
        if want in bare:
            return
        if have not in bare:
            log.warning("%s has no row %r to change; leaving it as it is", self.path.name, have[:80])
            return
        i = bare.index(have)
        lines[i] = want + lines[i][len(bare[i]) :]
        pi = self._path_index(lines)
        if self.drop_stale and pi is not None:
            target = self._field(want, pi)
            stale = {j for j in range(1, len(lines)) if j != i and self._field(lines[j], pi) == target}
            if stale:
                log.warning("%s: dropping %d stale row(s) for %s", self.path.name, len(stale), target)
                lines = [ln for j, ln in enumerate(lines) if j not in stale]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)

    @staticmethod
    def _field(line: str, i: int) -> str | None:
        fields = next(csv.reader([line.rstrip("\r\n")]), [])
        return fields[i] if len(fields) > i else None


class Splits(Manifest):
    """Line-level edits of splits.csv (path,split): a moved photo's row follows it, so it stays in its split."""

    name = SPLITS_FILE
    fix = "re-save it as UTF-8, or write it again with `python -m train.split DATA_DIR`, and try again"
    drop_stale = True


class Decisions:
    """Apply, undo, replay and recover decisions on one class-folder dataset."""

    def __init__(self, root: str | Path, not_snake_dir: str = NOT_SNAKE_DIR, hook: Callable[[str], None] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DecisionError(f"{self.root} is not a directory")
        self.not_snake_dir = not_snake_dir
        self.log_path = self.root / LOG_FILE
        self.manifest = Manifest(self.root)
        self.splits = Splits(self.root)
        self.replay_skipped: list[int] = []  # ids of the last replay's decisions that were already applied here
        self._hook = hook or (lambda step: None)  # tests inject crashes between steps
        self._check_not_snake_dir(self.records())  # reads and checks the whole log before anything moves
        self.recovered = self.recover()

    def _check_not_snake_dir(self, recs: list[dict]) -> None:
        """The not-a-snake folder must be one new folder name: never a class folder, never outside the dataset."""
        name = self.not_snake_dir
        fix = f"give another --not-snake-dir (the default is {NOT_SNAKE_DIR})"
        if problem := folder_name_problem(name):
            raise DecisionError(f"--not-snake-dir {name!r} cannot be used: {problem}; {fix}")
        if name in SKIP_DIRS and name != NOT_SNAKE_DIR:
            raise DecisionError(f"--not-snake-dir {name!r} is a folder the pipeline reserves for itself; {fix}")
        d = self.root / name
        ours = any(r["action"] == "not_snake" and r["new_label"] == name for r in recs)
        if d.is_dir() and name not in SKIP_DIRS and not ours:
            if any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in d.rglob("*")):
                raise DecisionError(
                    f"--not-snake-dir {name!r} is the class folder {d} (it holds images); filing 'not a snake' "
                    f"images there would label them {name!r}; {fix}"
                )

    # ---- the journal -------------------------------------------------------------------------------
    def _read(self) -> list[dict]:
        if not self.log_path.is_file():
            return []
        data = self.log_path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A crash while appending: that record was never fsynced as a whole, so nothing acted on it.
            cut = data.rfind(b"\n") + 1
            with open(self.log_path, "r+b") as fh:
                fh.truncate(cut)
            data = data[:cut]
        recs = []
        for n, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                problem = "it is not UTF-8 text"
            except json.JSONDecodeError as e:
                problem = f"it is not a JSON record ({e.msg} at column {e.colno})"
            else:
                problem = record_problem(rec)
            if problem:
                raise DecisionError(
                    f"{self.log_path} line {n} is not a decision record: {problem}. Nothing was changed. Fix or "
                    f"delete that line (the other lines are kept as they are), then run train.clean again"
                )
            recs.append(rec)
        return recs

    def _append(self, rec: dict) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def records(self) -> list[dict]:
        """Latest state of every decision, in the order they were made."""
        by_id: dict[int, dict] = {}
        for rec in self._read():
            by_id[rec["id"]] = rec
        return [by_id[i] for i in sorted(by_id)]

    def done(self) -> list[dict]:
        """Decisions that took effect (status done), oldest first."""
        return [r for r in self.records() if r["status"] == "done"]

    def live(self) -> list[dict]:
        """Done decisions that no later undo has reversed (undo records themselves excluded)."""
        recs = self.done()
        undone = {r["undoes"] for r in recs if r["action"] == "undo"}
        return [r for r in recs if r["action"] != "undo" and r["id"] not in undone]

    # ---- one step ----------------------------------------------------------------------------------
    def _commit(self, rec: dict, manifest_change: dict | None, splits_change: dict | None = None) -> dict:
        for rows, change in ((self.manifest, manifest_change), (self.splits, splits_change)):
            if change:
                rows.check()  # an unreadable file is refused before the journal and the folders change
        recs = self._read()
        rec = {"id": (max((r["id"] for r in recs), default=0) + 1), "status": "pending", "time": _now(), **rec}
        rec["manifest"] = manifest_change
        rec["splits"] = splits_change
        made = self._missing_folders(rec["new_path"]) if rec["old_path"] != rec["new_path"] else 0
        if made:
            rec["made_dirs"] = made  # the move creates them; undoing it removes them again (when empty)
        self._append(rec)
        self._hook("pending")
        if rec["old_path"] != rec["new_path"]:
            src, dst = self.root / rec["old_path"], self.root / rec["new_path"]
            try:
                move_noclobber(src, dst)
            except (OSError, ValueError, DecisionError) as e:
                self._roll_back_failed_move(rec, src, dst)
                if isinstance(e, DecisionError):
                    raise
                why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                raise DecisionError(
                    f"could not move {rec['old_path']} to {rec['new_path']} ({why}); nothing was changed"
                ) from e
        self._hook("moved")
        self.manifest.apply(manifest_change)
        self._hook("manifest")
        self.splits.apply(splits_change)
        self._hook("splits")
        rec = {**rec, "status": "done", "time_done": _now()}
        self._append(rec)
        self.refresh_attribution()
        return rec

    def _roll_back_failed_move(self, rec: dict, src: Path, dst: Path) -> None:
        """After a move that raised: put things back and log the decision rolled back (left pending, for recover()
        at the next start, only when the file is somewhere this cannot sort out)."""
        try:
            if dst.is_file() and src.is_file() and os.path.samefile(src, dst):
                os.unlink(dst)  # linked, then the unlink of src failed: drop the new name
            if src.is_file() and not dst.exists():
                self._append({**rec, "status": "rolled_back", "time_done": _now()})
        except OSError as e:
            log.error(
                "decision %s: could not roll back a failed move (%s); it is recovered at the next start", rec["id"], e
            )

    @_one_writer
    def recover(self) -> list[dict]:
        """Finish or roll back decisions left pending by a crash; return the records written."""
        out = []
        for rec in self.records():
            if rec["status"] != "pending":
                continue
            src, dst = self.root / rec["old_path"], self.root / rec["new_path"]
            if rec["old_path"] == rec["new_path"]:
                status = "done"
            elif dst.is_file() and src.is_file() and os.path.samefile(src, dst):
                os.unlink(src)  # crashed between link and unlink
                status = "done"
            elif dst.is_file() and sha256_file(dst) == rec["sha256"]:
                status = "done"
            elif src.is_file():
                status = "rolled_back"
            else:
                status = "failed"
                log.error("decision %s: %s is at neither %s nor %s", rec["id"], rec["sha256"][:12], src, dst)
            self.manifest.apply(rec.get("manifest"), reverse=status != "done")
            self.splits.apply(rec.get("splits"), reverse=status != "done")
            rec = {**rec, "status": status, "recovered": True, "time_done": _now()}
            self._append(rec)
            out.append(rec)
        if out:
            self.refresh_attribution()
        return out

    @_one_writer
    def refresh_attribution(self) -> bool:
        """Rewrite ATTRIBUTION.md from manifest.csv as it is now (only the rows in class folders are listed), as
        gather and split do. Only for a manifest in gather's format: a dataset without one has no ATTRIBUTION.md to
        keep in step. Never raises: ATTRIBUTION.md is derived, so a failure is logged and the decision that was just
        made stays done; the next decision (or train.split) writes it again. Returns whether it was written."""
        f = self.root / MANIFEST
        if not f.is_file():
            return False
        try:
            with open(f, encoding="utf-8", errors="replace", newline="") as fh:
                header = next(csv.reader(fh), [])
            if not set(COLUMNS) <= set(header):
                if (self.root / ATTRIBUTION).is_file():
                    log.warning(
                        "%s is not in gather's format (columns %s); %s was not rewritten and may not match it",
                        f, ", ".join(COLUMNS), ATTRIBUTION,
                    )  # fmt: skip
                return False
            write_attribution(self.root, read_manifest(self.root))
        except Exception as e:  # a derived file: whatever went wrong, the decision itself is done
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
            log.warning(
                "could not rewrite %s from %s (%s); the decision is done, and the next decision or "
                "`python -m train.split %s` writes it again",
                self.root / ATTRIBUTION, MANIFEST, why, self.root,
            )  # fmt: skip
            return False
        return True

    # ---- the public actions ------------------------------------------------------------------------
    def _check_path(self, rel: str) -> tuple[str, Path]:
        rel = PurePosixPath(str(rel).replace("\\", "/")).as_posix()
        parts = PurePosixPath(rel).parts
        if not rel or PurePosixPath(rel).is_absolute() or ".." in parts or len(parts) < 2:
            raise DecisionError(f"{rel!r} is not a path inside the dataset like <class>/<file>")
        if parts[0] in SKIP_DIRS or parts[0].startswith(".") or parts[0] == self.not_snake_dir:
            raise DecisionError(f"{rel} is not in a class folder")
        p = self.root / rel
        if not p.is_file():
            raise DecisionError(f"{rel} does not exist in {self.root}; was it already moved?")
        return rel, p

    @_one_writer
    def decide(self, rel_path: str, action: str, new_label: str | None = None) -> dict:
        """Apply one decision to the image at rel_path (relative to the dataset) and log it."""
        if action not in ACTIONS:
            raise DecisionError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
        rel, p = self._check_path(rel_path)
        old_label = PurePosixPath(rel).parts[0]
        inner = PurePosixPath(*PurePosixPath(rel).parts[1:]).as_posix()
        if action == "keep":
            kept = [r for r in self.live() if r["action"] == "keep" and r["old_path"] == rel]
            if kept:  # a double submit: the photo is already kept, and one undo must bring it back to review
                return kept[-1]
            new_rel, label = rel, old_label
        elif action == "delete":
            new_rel, label = free_path(self.root, f"{TRASH_DIR}/{rel}"), None
        elif action == "not_snake":
            new_rel, label = free_path(self.root, f"{self.not_snake_dir}/{inner}"), self.not_snake_dir
        else:
            label = (new_label or "").strip()
            problem = folder_name_problem(label)
            if not problem and (label.startswith("_") or label in SKIP_DIRS or label == self.not_snake_dir):
                problem = "folders starting with _ hold set-aside images, not a class"
            if not problem and (self.root / label).exists() and not (self.root / label).is_dir():
                problem = f"{self.root / label} is a file, not a class folder"
            if problem:
                raise DecisionError(f"relabel needs a class name (a folder name), got {new_label!r}: {problem}")
            if label == old_label:
                raise DecisionError(f"{rel} is already labelled {label!r}")
            new_rel = free_path(self.root, f"{label}/{inner}")
        change = splits_change = None
        if new_rel != rel:
            change = self.manifest.change_for(rel, new_rel, label if action != "delete" else None)
            splits_change = self.splits.change_for(rel, new_rel, None)
        rec = {
            "action": action,
            "sha256": sha256_file(p),
            "old_label": old_label,
            "new_label": label,
            "old_path": rel,
            "new_path": new_rel,
        }
        return self._commit(rec, change, splits_change)

    @_one_writer
    def undo(self, n: int = 1) -> list[dict]:
        """Reverse the last n live decisions, newest first; each reversal is itself logged as an undo."""
        if n < 1:
            raise DecisionError("--undo needs a positive number of decisions")
        todo = self.live()[-n:][::-1]
        out = []
        for rec in todo:
            here = self.root / rec["new_path"]
            if not here.is_file() or sha256_file(here) != rec["sha256"]:
                raise DecisionError(
                    f"cannot undo decision {rec['id']}: {rec['new_path']} is no longer the file it moved "
                    f"(undid {len(out)} of {len(todo)})"
                )
            back = rec["old_path"] if rec["old_path"] == rec["new_path"] else free_path(self.root, rec["old_path"])
            m = rec.get("manifest")
            change = {"old": m["new"], "new": m["old"], "eol": m.get("eol", "\n")} if m else None
            if m and back != rec["old_path"]:
                change = self.manifest.change_for(rec["new_path"], back, rec["old_label"])
            s = rec.get("splits")  # absent in decisions logged before splits.csv followed moves: nothing to undo
            splits_change = {"old": s["new"], "new": s["old"], "eol": s.get("eol", "\n")} if s else None
            if s and back != rec["old_path"]:
                splits_change = self.splits.change_for(rec["new_path"], back, None)
            undo = {
                "action": "undo",
                "undoes": rec["id"],
                "undone_action": rec["action"],
                "sha256": rec["sha256"],
                "old_label": rec["new_label"],
                "new_label": rec["old_label"],
                "old_path": rec["new_path"],
                "new_path": back,
            }
            out.append(self._commit(undo, change, splits_change))
            self._remove_made_folders(rec)
        return out

    def _missing_folders(self, rel: str) -> int:
        """How many of rel's folders, innermost first, do not exist yet (a move to rel will create them)."""
        parents = [d for d in PurePosixPath(rel).parents if d.parts]
        return next((i for i, d in enumerate(parents) if (self.root / d).is_dir()), len(parents))

    def _remove_made_folders(self, rec: dict) -> None:
        """After undoing rec: remove the folders its move created (a new class's folder, _trash/<class>/, _trash/),
        innermost first, so no empty "class" is left behind. A folder that was there before the decision (such as
        one made by hand as a relabel target) is never touched, and os.rmdir refuses one with anything in it."""
        n = rec.get("made_dirs")
        if not isinstance(n, int) or isinstance(n, bool):  # logs written before this key: remove nothing
            return
        for d in [d for d in PurePosixPath(rec["new_path"]).parents if d.parts][:n]:
            try:
                (self.root / d).rmdir()
            except OSError:
                return

    @_one_writer
    def replay(self, log_file: str | Path) -> list[dict]:
        """Re-apply the done decisions of another log (e.g. from a copy of this dataset), in order."""
        src = Path(log_file)
        if not src.is_file():
            raise DecisionError(f"{src} does not exist; give a decisions.jsonl written by train.clean")
        try:
            recs = Decisions._fold(src)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise DecisionError(f"{src} is not a decisions log ({e})") from e
        need = ("status", "action", "sha256", "old_label", "new_label", "old_path", "new_path")
        for rec in recs:  # check the whole log before the first file moves
            if rec.get("status") != "done":
                continue
            if missing := [k for k in need if k not in rec]:
                raise DecisionError(f"{src}: decision {rec['id']} lacks {', '.join(missing)}; nothing was replayed")
            for k in ("old_path", "new_path"):
                rel = PurePosixPath(str(rec[k]).replace("\\", "/"))
                if not rec[k] or rel.is_absolute() or ".." in rel.parts or len(rel.parts) < 2:
                    raise DecisionError(
                        f"{src}: decision {rec['id']} has {k} {rec[k]!r}, not a path inside the dataset; "
                        "nothing was replayed"
                    )
        todo = [r for r in recs if r["status"] == "done"]
        if any(r["old_path"] != r["new_path"] for r in todo):
            self.manifest.check()  # a file that cannot be edited is refused before the first move
            self.splits.check()
        # What this dataset's journal already holds of that log: a decision replayed before (replayed_from), or the
        # same decision in a journal copied with the dataset (same id), with the same action, file and origin.
        here = self.done()
        mine = {}
        for r in here:
            for origin in {r["id"], r.get("replayed_from", r["id"])}:
                mine[(origin, r["action"], r["sha256"], r["old_path"])] = r
        ids: dict[int, int] = {}
        out, skipped = [], []
        self.replay_skipped = skipped
        for rec in todo:
            already = self._already_applied(rec, mine, here)
            if already is not None:
                ids[rec["id"]] = already.get("id", -1)
                skipped.append(rec["id"])
                continue
            old = self.root / rec["old_path"]
            if not old.is_file() or sha256_file(old) != rec["sha256"]:
                done_so_far = f"replayed {len(out)}" + (f", skipped {len(skipped)} already applied" if skipped else "")
                raise DecisionError(
                    f"replay stopped at decision {rec['id']}: {rec['old_path']} is missing or differs ({done_so_far}); "
                    "put the file back and run the same replay again: the decisions already applied are skipped"
                )
            new_rel = rec["new_path"]
            if new_rel != rec["old_path"] and (self.root / new_rel).exists():
                new_rel = free_path(self.root, new_rel)
                log.warning("replay: %s is taken, using %s", rec["new_path"], new_rel)
            change = splits_change = None
            if new_rel != rec["old_path"]:
                m = rec.get("manifest")
                if (
                    m
                    and m["old"] in [ln.rstrip("\r\n") for ln in self.manifest._lines()]
                    and new_rel == rec["new_path"]
                ):
                    change = m
                else:
                    label = rec["new_label"] if rec["action"] != "delete" else None
                    change = self.manifest.change_for(rec["old_path"], new_rel, label)
                # This copy's own split: its splits.csv may differ from the one the log was made on.
                splits_change = self.splits.change_for(rec["old_path"], new_rel, None)
            keys = ("action", "sha256", "old_label", "new_label", "old_path")
            new = {k: rec[k] for k in keys} | {"new_path": new_rel, "replayed_from": rec["id"]}
            if rec["action"] == "undo":
                new["undoes"] = ids.get(rec["undoes"], -1)
                new["undone_action"] = rec.get("undone_action")
            done = self._commit(new, change, splits_change)
            ids[rec["id"]] = done["id"]
            out.append(done)
            here.append(done)
        if skipped and not out:
            log.warning(
                "replay: all %d decision(s) of %s are already applied to %s; nothing to do", len(todo), src, self.root
            )
        elif skipped:
            log.warning(
                "replay: skipped %d decision(s) of %s already applied to %s (%s)",
                len(skipped), src, self.root, ", ".join(map(str, skipped[:20])) + (" ..." if len(skipped) > 20 else ""),
            )  # fmt: skip
        return out

    def _already_applied(self, rec: dict, mine: dict, here: list[dict]) -> dict | None:
        """The record of this dataset that applied rec (a done decision of a log being replayed), {} when the disk
        shows it applied without a record here, or None when it still has to be applied. mine: this dataset's done
        records (as the replay began) by (replayed_from or id, action, sha256, old_path); here: its done records,
        oldest first, this replay's included."""
        hit = mine.get((rec["id"], rec["action"], rec["sha256"], rec["old_path"]))
        if hit is not None:
            return hit
        if rec["action"] == "keep":  # kept here already (and not undone): a second keep would need two undos
            undone = {r["undoes"] for r in here if r["action"] == "undo"}
            kept = [
                r for r in here if r["action"] == "keep" and r["id"] not in undone and r["old_path"] == rec["old_path"]
            ]
            return kept[-1] if kept and kept[-1]["sha256"] == rec["sha256"] else None
        if rec["old_path"] == rec["new_path"]:
            return None
        old, new = self.root / rec["old_path"], self.root / rec["new_path"]
        if old.is_file() and sha256_file(old) == rec["sha256"]:
            return None  # still where the decision found it (a later decision may have put another file there)
        if new.is_file() and sha256_file(new) == rec["sha256"]:
            # Moved already (by hand, or before this copy was made): map it to the decision that put it there.
            put = [r for r in here if r["new_path"] == rec["new_path"] and r["sha256"] == rec["sha256"]]
            return put[-1] if put else {}
        return None

    @staticmethod
    def _fold(path: Path) -> list[dict]:
        by_id: dict[int, dict] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("id"), int):
                    raise TypeError(f"a line without an integer id: {line[:80]}")
                by_id[rec["id"]] = rec
        return [by_id[i] for i in sorted(by_id)]

    def current_paths(self) -> dict[str, str]:
        """sha256 -> where live decisions put the file (for UIs that listed images before deciding)."""
        return {r["sha256"]: r["new_path"] for r in self.done()}
