"""Batch classification from the command line: files or folders in, one CSV row per image out.

    python -m snake_model.classify photos/ extra.jpg --csv out.csv [--model DIR]

The model is --model, else what the app would use (snake_model.hub.resolve_model_dir: MODEL_DIR, MODEL_REPO at
MODEL_REVISION, or the bundled model). A file that cannot be read gets a row with an error and never stops the run.
A file name that is not UTF-8 is written to the CSV with its odd bytes as \\xNN escapes. A text cell that a spreadsheet
would run as a formula (starting with = + - @, a tab or a carriage return) gets a leading ' (CSV injection).
A file reached twice (through a folder and by name) gets one row. The exit code is 2 when nothing was classified.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from snake_model.text import utf8_safe

log = logging.getLogger(__name__)

BATCH = 16
FIXED_COLUMNS = ("path", "label", "display_name", "confidence", "abstain", "ood_score", "error")
# Folders are walked for these suffixes; files named on the command line are always tried (the loader sniffs bytes).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".jfif"}


def unique_paths(paths: Iterable[Path]) -> list[Path]:
    """Paths in order, each file once: a file reached through a folder and by name keeps its first row."""
    seen, out = set(), []
    for p in paths:
        try:
            key = p.resolve()
        except (OSError, RuntimeError):  # a symlink loop: keep it, its row will say it cannot be read
            key = p.absolute()
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def iter_inputs(items: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given, and image files under folders (recursively, sorted, hidden entries skipped)."""
    for item in items:
        p = Path(item)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        yield Path(root) / name
        else:
            yield p


def columns(labels: Sequence[str]) -> list[str]:
    """CSV header: the fixed columns, then one probability column per class."""
    return [*FIXED_COLUMNS, *(f"p_{lab}" for lab in labels)]


def _load(path: Path):
    from .loader import ImageLoadError, load_image

    try:
        return load_image(path), None
    except ImageLoadError as e:
        return None, str(e)
    except (OSError, MemoryError) as e:
        return None, f"{path.name}: cannot read ({type(e).__name__}: {e})"


def classify_paths(predictor, paths: Iterable[Path], batch: int = BATCH, progress=None) -> Iterator[dict]:
    """One row dict per path, in order; unreadable files get an 'error' and empty prediction fields."""
    pending: list[tuple[Path, object]] = []

    def flush() -> Iterator[dict]:
        if not pending:
            return
        images = [im for _, im in pending]
        try:
            preds = predictor.predict_batch(images)  # the app's decision: the artifact's own abstain score
            rows = [_row(predictor, p, pr) for (p, _), pr in zip(pending, preds, strict=True)]
        except Exception as e:  # noqa: BLE001 - one bad batch must not stop the run: retry one by one
            log.warning("batch failed (%s); retrying its images one by one", e)
            rows = []
            for p, im in pending:
                try:
                    rows.append(_row(predictor, p, predictor.predict(im)))
                except Exception as e1:  # noqa: BLE001
                    rows.append(_error_row(p, f"{p.name}: the model failed ({type(e1).__name__}: {e1})"))
        pending.clear()
        yield from rows

    for path in paths:
        img, err = _load(path)
        if progress is not None:
            progress.update(1)
        if err is not None:
            yield from flush()
            yield _error_row(path, err)
            continue
        pending.append((path, img))
        if len(pending) >= batch:
            yield from flush()
    yield from flush()


def _row(predictor, path: Path, pred) -> dict:
    spec = predictor.spec
    row = {
        "path": str(path),
        "label": "" if pred.abstain else pred.label,
        "display_name": "" if pred.abstain else spec.display_name(pred.label),
        "confidence": f"{pred.confidence:.6f}",
        "abstain": str(bool(pred.abstain)).lower(),
        "ood_score": f"{pred.ood_score:.6f}",
        "error": "",
    }
    row |= {f"p_{lab}": f"{pred.probs[lab]:.6f}" for lab in predictor.labels}
    return row


def _error_row(path: Path, error: str) -> dict:
    return {"path": str(path), "error": error}


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def printable(value):
    """A CSV cell that encodes as UTF-8 (see snake_model.text.utf8_safe) and that a spreadsheet shows as text, never
    runs as a formula: text starting with = + - @, a tab or a CR gets a leading ' (OWASP's advice on CSV injection).
    Numbers (a negative score) are left as they are, and anything not a str is returned as it is."""
    if not isinstance(value, str):
        return value
    value = utf8_safe(value)
    if value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        value = "'" + value
    return value


def _same_file(p: Path, target: Path, st) -> bool:
    """p is target (the same resolved path) or, where target exists (st), the same file (a link to it)."""
    try:
        if p.resolve() == target:
            return True
        if st is None:
            return False
        ps = p.stat()
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return False
    return (ps.st_dev, ps.st_ino) == (st.st_dev, st.st_ino)


def csv_problem(csv_path: Path, inputs: Sequence[str], paths: Sequence[Path]) -> str | None:
    """Why --csv would overwrite or pollute the inputs (checked before anything is written), or None."""
    if csv_path.is_dir():
        return f"--csv {csv_path} is a folder; give a file name"
    target = csv_path.resolve()
    try:
        st = csv_path.stat()
    except OSError:
        st = None
    for p in [*map(Path, inputs), *paths]:
        if _same_file(p, target, st):
            return f"--csv {csv_path} is one of the input images ({p}); the CSV would overwrite it. Give another name"
    if csv_path.suffix.lower() in IMAGE_SUFFIXES:
        for item in map(Path, inputs):
            if item.is_dir() and target.is_relative_to(item.resolve()):
                return (
                    f"--csv {csv_path} has an image suffix inside the input folder {item}; the next run would read "
                    "it as a photo. Give a name ending in .csv, or a place outside the input folders"
                )
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m snake_model.classify",
        description="Classify image files or folders and write one CSV row per image.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILES_OR_DIR", help="image files and/or folders (walked recursively)")
    p.add_argument("--csv", required=True, type=Path, help="output CSV path ('-' for stdout)")
    p.add_argument("--model", type=Path, help="model folder (default: MODEL_DIR, MODEL_REPO@MODEL_REVISION, bundled)")
    p.add_argument("--batch", type=int, default=BATCH, help=f"images per predictor call (default {BATCH})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from .artifact import ArtifactError

    paths = unique_paths(iter_inputs(args.inputs))
    if not paths:
        print("error: no image files found in the given inputs", file=sys.stderr)
        return 2
    to_stdout = str(args.csv) == "-"
    problem = None if to_stdout else csv_problem(args.csv, args.inputs, paths)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.model is not None:
            model_dir = args.model
        else:
            from .hub import resolve_model_dir

            model_dir = resolve_model_dir(env=os.environ)
        from .predictor import Predictor

        predictor = Predictor(model_dir)
    except (ArtifactError, OSError) as e:
        print(f"error: cannot load the model: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    n_err = n_abstain = 0
    # The rows go to a temporary file next to --csv that replaces it at the end: a crash never leaves a half-written
    # CSV over an old one.
    try:
        if to_stdout:
            out, tmp = sys.stdout, None
        else:
            dest = args.csv.resolve()  # through a symlink, as open() would write
            out = tempfile.NamedTemporaryFile(
                "w",
                newline="",
                encoding="utf-8",
                dir=dest.parent,
                prefix=f".{dest.name}.",
                suffix=".tmp",
                delete=False,
            )
            tmp = Path(out.name)
            umask = os.umask(0)
            os.umask(umask)
            with contextlib.suppress(OSError):  # the permissions open() would give, not the temporary file's 0600
                os.chmod(tmp, 0o666 & ~umask)
    except OSError as e:
        print(f"error: cannot write --csv {args.csv}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        writer = csv.DictWriter(out, fieldnames=columns(predictor.labels), restval="")
        writer.writeheader()
        with tqdm(total=len(paths), unit="img", file=sys.stderr, disable=args.quiet) as bar:
            for row in classify_paths(predictor, paths, max(1, args.batch), bar):
                writer.writerow({k: printable(v) for k, v in row.items()})
                n_err += bool(row["error"])
                n_abstain += row.get("abstain") == "true"
        if tmp is not None:
            out.close()
            os.replace(tmp, dest)
            tmp = None
    except OSError as e:
        print(f"error: cannot write --csv {args.csv}: {e.strerror or e}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            out.close()
            tmp.unlink(missing_ok=True)
    print(
        f"{len(paths)} images: {len(paths) - n_err} classified ({n_abstain} abstained), {n_err} errors -> {args.csv}",
        file=sys.stderr,
    )
    if n_err == len(paths):
        print(f"error: none of the {len(paths)} image(s) could be classified; see the error column", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
