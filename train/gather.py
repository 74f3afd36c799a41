"""Gather a class-folder image dataset with provenance: `python -m train.gather --config train/configs/snakes4.toml`.

Sources (iNaturalist, DuckDuckGo via ddgs, a URL list, a local folder) yield candidates; a guarded, polite,
concurrent downloader fetches them; the shared loader checks every file by content; each kept image is written
atomically to OUT/<class>/<sha256[:16]>.<ext> and then recorded in OUT/manifest.csv. Runs resume.
"""

from __future__ import annotations

import argparse
import csv
import errno
import hashlib
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import tomllib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path

from snake_model.loader import (
    EmptyImageError,
    ImageLoadError,
    ImageTooLargeError,
    TruncatedImageError,
    UnsupportedFormatError,
    load_image,
    read_image_bytes,
    sniff_format,
)
from train import manifest as mf
from train.cli import NON_NEGATIVE, POSITIVE, int_at_least
from train.data import SKIP_DIRS, DatasetError, read_class_info
from train.download import FetchError, HostGate, HttpConfig, fetch
from train.sources import (
    INAT_LICENCES,
    INATURALIST_API,
    PHOTO_SIZES,
    Candidate,
    ClassSpec,
    DDGSource,
    FolderSource,
    INaturalistSource,
    Source,
    SourceError,
    URLListSource,
    check_label,
    slug,
)

log = logging.getLogger("train.gather")

FAILURES = "failures.csv"
REPORT = mf.LAST_RUN  # written only when a run ends (or by Ctrl-C): the manifest dates hand deletions by it
FAILURE_COLUMNS = ["class", "source", "image_url", "reason", "message", "at"]
EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
LOADER_REASONS = [
    (EmptyImageError, "empty_file"),
    (UnsupportedFormatError, "not_an_image"),
    (TruncatedImageError, "corrupt_image"),
    (ImageTooLargeError, "image_too_large"),
]
SOURCE_NAMES = ("inaturalist", "ddgs", "urls", "folder")
# refusals by the address policy: recorded in failures.csv, but tried again on every run (see Run._load_failed)
POLICY_REASONS = frozenset({"blocked_address", "blocked_redirect"})


class ConfigError(ValueError):
    """The config or the command line cannot be used; the message says what to change."""


class Stopped(Exception):
    """The run was asked to stop (Ctrl-C): raised in a download task before its request, or while recording the
    images already in the output folder."""


class GatherInterrupted(Exception):
    """Ctrl-C before any download started; the message says what was kept and how to go on."""


STOPPING = "stopping… (finished downloads are kept)"


@dataclass
class GatherConfig:
    out: Path
    classes: list[ClassSpec]
    sources: list[Source]
    count: int | None = 150  # per class; None: everything the sources offer
    workers: int = 8
    publishable: frozenset[str] = mf.PUBLISHABLE
    include_train_only: bool = True  # keep NC / unknown-licence images, marked train-only
    http: HttpConfig = field(default_factory=HttpConfig)
    retry_failed: bool = False
    quiet: bool = False  # no progress bars (they are shown only on a terminal anyway)
    # label -> classes.json values a [[classes]] entry sets beyond its name and scientific name (display_name,
    # venomous); write_classes_json writes them
    class_info: dict[str, dict] = field(default_factory=dict)


@dataclass
class Fetched:
    cand: Candidate
    data: bytes
    ext: str
    sha256: str
    phash: str
    width: int
    height: int


# ---------------------------------------------------------------- config


def write_classes_json(out: Path, classes: list[ClassSpec], info: dict[str, dict] | None = None) -> None:
    """classes.json: display and scientific names and venomous flags per label; train.fit copies them into the model
    spec. A value the config gives (name, scientific, and a [[classes]] entry's display_name or venomous, passed in
    `info`) is written; a key the config leaves out keeps what classes.json already holds (a venomous flag added by
    hand survives every run). A config value that replaces a different one in classes.json is said with a warning."""
    path = Path(out) / "classes.json"
    old = {}
    if path.is_file():
        try:
            old = read_class_info(path)
        except DatasetError as e:
            raise ConfigError(str(e)) from e
    info = info or {}
    for c in classes:
        entry = old.get(c.label, {})
        given = {k: v for k, v in (("display_name", c.name), ("scientific_name", c.scientific)) if v}
        given.update(info.get(c.label, {}))
        for k, v in given.items():
            if k == "venomous" and k in entry and entry[k] is not None and entry[k] != v:
                log.warning(
                    "%s: classes.json said venomous = %s; the config says %s, which replaces it",
                    c.label,
                    json.dumps(entry[k]),
                    json.dumps(v),
                )
        entry.update(given)
        old[c.label] = entry
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table (a [section] of key = value lines), not {table!r}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def http_config(table: dict, allow_hosts: list[str] | None = None) -> HttpConfig:
    names = {f.name for f in fields(HttpConfig)} - {"resolver", "allow_hosts"}
    _check_keys(table, names | {"allow_hosts"}, "[download]")
    kw = {k: table[k] for k in names if k in table}
    for k, v in kw.items():
        _check_download_value(k, v)
    hosts = _table_str_list(table, "allow_hosts", [], "[download]", '["127.0.0.1"]') + list(allow_hosts or [])
    return HttpConfig(**kw, allow_hosts=frozenset(h.lower() for h in hosts))


# [download] numbers: (smallest allowed, whether it must be a whole number, whether the smallest is excluded)
_DOWNLOAD_LIMITS = {
    "connect_timeout": (0, False, True),
    "read_timeout": (0, False, True),
    "total_timeout": (0, False, True),
    "max_bytes": (1, True, False),
    "max_redirects": (0, True, False),
    "retries": (0, True, False),
    "backoff": (0, False, False),
    "max_retry_wait": (0, False, False),
    "per_host": (1, True, False),
    "host_interval": (0, False, False),
}


def _check_download_value(key: str, v) -> None:
    if key == "user_agent":
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"[download] user_agent must be a non-empty string, not {v!r}")
        return
    lo, whole, open_ = _DOWNLOAD_LIMITS[key]
    _check_number(v, f"[download] {key}", lo, whole, open_)


def _check_number(v, name: str, lo, whole: bool, lo_open: bool = False):
    """v when it is a finite number (a whole one if asked) above lo (or at lo when not lo_open); else a ConfigError.
    TOML reads nan and inf as floats: an infinite min_interval or timeout would wait forever."""
    kinds = (int,) if whole else (int, float)
    if isinstance(v, bool) or not isinstance(v, kinds) or not math.isfinite(v) or (v <= lo if lo_open else v < lo):
        what = "a whole number" if whole else "a number"
        bound = f"more than {lo}" if lo_open else f"at least {lo}"
        raise ConfigError(f"{name} must be {what} {bound}, not {v!r}")
    return v


def _table_num(table: dict, key: str, default, lo, whole: bool, where: str):
    """table[key] (or default) when it is a number of the right kind and at least lo; else a ConfigError."""
    return _check_number(table.get(key, default), f"{where} {key}", lo, whole)


def _name(where: str, key: str) -> str:
    return f"{where} {key}" if where else key


def _table_str(table: dict, key: str, default: str, where: str, what: str = "a string", empty: bool = True) -> str:
    """table[key] (or default) when it is a string (a non-empty one unless empty); else a ConfigError."""
    v = table.get(key, default)
    if not isinstance(v, str) or (not empty and not v.strip()):
        raise ConfigError(f"{_name(where, key)} must be {what}, not {v!r}")
    return v


def _table_str_list(table: dict, key: str, default, where: str, example: str, empty: bool = True) -> list[str]:
    """table[key] (or default) when it is a list of non-empty strings; else a ConfigError (a lone string is not
    taken as a list: Python would read "cc0" as the three codes c, c and 0)."""
    v = table.get(key, default)
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) and x.strip() for x in v) or (not empty and not v):
        some = "" if empty else " (at least one)"
        raise ConfigError(f"{_name(where, key)} must be a list of strings in brackets{some}, like {example}, not {v!r}")
    return list(v)


def _table_bool(table: dict, key: str, default: bool, where: str) -> bool:
    v = table.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{_name(where, key)} must be true or false (TOML booleans, without quotes), not {v!r}")
    return v


CLASS_KEYS = {"label", "name", "display_name", "scientific", "venomous", "queries"}


def parse_classes(items: list, info: dict[str, dict] | None = None) -> list[ClassSpec]:
    """The [[classes]] entries as ClassSpecs; `info`, when given, is filled with each label's classes.json values
    beyond name and scientific: display_name (shown by the app; default: name) and venomous (true or false)."""
    classes = []
    for i, c in enumerate(items):
        if not isinstance(c, dict):
            raise ConfigError(f"[[classes]] entry {i + 1} must be a table with name and scientific")
        where = f"[[classes]] entry {i + 1}:"
        _check_keys(c, CLASS_KEYS, f"[[classes]] entry {i + 1}")
        extra = {}
        if "display_name" in c:
            extra["display_name"] = _table_str(
                c, "display_name", "", where, "a non-empty string (the name the app shows)", empty=False
            )
        if "venomous" in c:
            extra["venomous"] = _table_bool(c, "venomous", False, where)
        name = _table_str(c, "name", "", where)
        scientific = _table_str(c, "scientific", "", where)
        label = _table_str(c, "label", "", where) or slug(scientific or name)
        if not label:
            raise ConfigError(f"[[classes]] entry {i + 1} needs a name or a scientific name")
        try:
            check_label(label, f"[[classes]] entry {i + 1}")
        except SourceError as e:
            raise ConfigError(str(e)) from e
        if isinstance(c.get("queries"), str):
            queries = [_table_str(c, "queries", "", where, "a non-empty string or a list of them", empty=False)]
        else:
            queries = _table_str_list(c, "queries", [], where, '["bush viper", "Atheris squamigera"]')
        classes.append(ClassSpec(label, name, scientific, tuple(queries)))
        if info is not None and extra:
            info[label] = extra
    labels = [c.label for c in classes]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two classes share a label: {labels}")
    return classes


def build_source(kind: str, table: dict, http: HttpConfig) -> Source:
    if kind == "inaturalist":
        _check_keys(
            table,
            {"base_url", "licences", "photo_size", "per_page", "max_pages", "min_interval", "photos_per_observation"},
            "[inaturalist]",
        )
        where = "[inaturalist]"
        base_url = _table_str(table, "base_url", INATURALIST_API, where, "an http(s) URL like " + INATURALIST_API)
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"[inaturalist] base_url must be an http(s) URL like {INATURALIST_API}, not {base_url!r}")
        size = _table_str(table, "photo_size", "medium", where, f"one of {', '.join(PHOTO_SIZES)}")
        if size not in PHOTO_SIZES:
            raise ConfigError(f"[inaturalist] photo_size must be one of {', '.join(PHOTO_SIZES)}, not {size!r}")
        return INaturalistSource(
            base_url=base_url,
            licences=tuple(
                _table_str_list(table, "licences", list(INAT_LICENCES), where, '["cc0", "cc-by"]', empty=False)
            ),
            photo_size=size,
            per_page=_table_num(table, "per_page", 100, 1, True, "[inaturalist]"),
            max_pages=_table_num(table, "max_pages", 50, 1, True, "[inaturalist]"),
            min_interval=_table_num(table, "min_interval", 1.0, 0, False, "[inaturalist]"),
            photos_per_observation=_table_num(table, "photos_per_observation", 1, 1, True, "[inaturalist]"),
            http=http,
        )
    if kind == "ddgs":
        _check_keys(table, {"license_image", "region", "safesearch", "oversample", "retries", "backoff"}, "[ddgs]")
        safesearch = _table_str(table, "safesearch", "moderate", "[ddgs]", "one of on, moderate, off")
        if safesearch not in ("on", "moderate", "off"):
            raise ConfigError(f"[ddgs] safesearch must be one of on, moderate, off, not {safesearch!r}")
        return DDGSource(
            license_image=_table_str(table, "license_image", "any", "[ddgs]", 'a string like "any" or ""') or None,
            region=_table_str(table, "region", "wt-wt", "[ddgs]", 'a region code like "wt-wt"', empty=False),
            safesearch=safesearch,
            oversample=_table_num(table, "oversample", 2.0, 1, False, "[ddgs]"),
            retries=_table_num(table, "retries", 4, 0, True, "[ddgs]"),
            backoff=_table_num(table, "backoff", 5.0, 0, False, "[ddgs]"),
        )
    if kind == "urls":
        _check_keys(table, {"file", "label", "licence"}, "[urls]")
        if "file" not in table:
            raise ConfigError("[urls] needs file = 'path/to/urls.txt'")
        return URLListSource(
            Path(_table_str(table, "file", "", "[urls]", "a file path like 'urls.txt'", empty=False)),
            _table_str(table, "label", "", "[urls]", "a class label (a string)") or None,
            licence=_table_str(table, "licence", "unknown", "[urls]", 'a licence like "cc-by" (a string)'),
        )
    if kind == "folder":
        _check_keys(table, {"path", "licence", "author"}, "[folder]")
        if "path" not in table:
            raise ConfigError("[folder] needs path = 'path/to/class/folders'")
        return FolderSource(
            Path(_table_str(table, "path", "", "[folder]", "a folder path like 'photos/snakes'", empty=False)),
            _table_str(table, "licence", "unknown", "[folder]", 'a licence like "cc-by" (a string)'),
            _table_str(table, "author", "", "[folder]", "a string"),
        )
    raise ConfigError(f"unknown source {kind!r}; choose from {', '.join(SOURCE_NAMES)}")


def load_config(path: Path, allow_hosts: list[str] | None = None) -> GatherConfig:
    """Read a TOML config (see train/configs/snakes4.toml); relative paths are relative to the current folder."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e
    _check_keys(
        doc,
        {"out", "count", "workers", "sources", "classes", "licence", "download"} | set(SOURCE_NAMES),
        str(path),
    )
    http = http_config(doc.get("download", {}), allow_hosts)
    lic = doc.get("licence", {})
    _check_keys(lic, {"publishable", "include_train_only"}, "[licence]")
    kinds = doc.get("sources", ["inaturalist"])
    if isinstance(kinds, str):
        kinds = [kinds]
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise ConfigError(f"sources must be a list of names from {', '.join(SOURCE_NAMES)}, not {kinds!r}")
    sources = [build_source(k, doc.get(k, {}), http) for k in kinds]
    items = doc.get("classes", [])
    if not isinstance(items, list):
        raise ConfigError(
            f"classes must be [[classes]] tables (one per class, with name and scientific), not {items!r}"
        )
    class_info: dict[str, dict] = {}
    classes = parse_classes(items, class_info)
    if not classes:
        raise ConfigError(f"{path} lists no [[classes]]")
    out = _table_str(doc, "out", "data/gathered", "", "a folder path (a non-empty string)", empty=False)
    count = doc.get("count", 150)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"count must be a positive integer, not {count!r}")
    workers = doc.get("workers", 8)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, not {workers!r}")
    publishable = _table_str_list(lic, "publishable", sorted(mf.PUBLISHABLE), "[licence]", '["cc0", "cc-by"]')
    return GatherConfig(
        out=Path(out),
        classes=classes,
        sources=sources,
        count=count,
        workers=workers,
        publishable=frozenset(mf.normalise_licence(x) for x in publishable),
        include_train_only=_table_bool(lic, "include_train_only", True, "[licence]"),
        http=http,
        class_info=class_info,
    )


# ---------------------------------------------------------------- fetching one candidate (worker threads)


def _read_local(path: str, max_bytes: int) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise FetchError("too_large", f"{path}: {size:,} bytes is over the {max_bytes:,} byte cap")
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except OSError as e:
        raise FetchError("unreadable_file", f"{path}: {e.strerror or e}") from e


class _StoppableGate:
    """A HostGate that refuses to start a request once the run is stopping: a download that was waiting for its
    turn on a busy host (or for a retry) gives up instead of starting a request nobody will keep."""

    def __init__(self, gate: HostGate, stop: threading.Event):
        self.gate, self.stop = gate, stop

    def pause(self, host: str, seconds: float) -> None:
        self.gate.pause(host, seconds)

    @contextmanager
    def __call__(self, host: str) -> Iterator[None]:
        with self.gate(host):
            if self.stop.is_set():
                raise Stopped("the run is stopping")
            yield


def fetch_candidate(cand: Candidate, http: HttpConfig, gate: HostGate, stop: threading.Event | None = None) -> Fetched:
    """Download (or read) and verify one candidate; raises FetchError with a report reason, or Stopped when `stop`
    is set before its request starts (or while it waits to retry)."""
    import imagehash

    if stop is not None and stop.is_set():
        raise Stopped("the run is stopping")
    if cand.local_path:
        data = _read_local(cand.local_path, http.max_bytes)
    elif stop is None:
        data = fetch(cand.image_url, http, gate).body
    else:

        def pause(seconds: float) -> None:  # a retry's back-off ends at once when the run stops
            if stop.wait(seconds):
                raise Stopped("the run is stopping")

        data = fetch(cand.image_url, http, _StoppableGate(gate, stop), sleep=pause).body  # type: ignore[arg-type]
    try:
        img = load_image(data)
    except ImageLoadError as e:
        reason = next((r for cls, r in LOADER_REASONS if isinstance(e, cls)), "bad_image")
        raise FetchError(reason, f"{cand.local_path or cand.image_url}: {_loader_text(e)}") from e
    fmt = sniff_format(data[:16]) or "JPEG"
    return Fetched(
        cand,
        data,
        EXT[fmt],
        hashlib.sha256(data).hexdigest(),
        str(imagehash.phash(img)),
        img.width,
        img.height,
    )


_UPLOAD = "the upload: "  # how the shared loader names bytes it was given (the app's upload)


def _loader_text(e: ImageLoadError) -> str:
    """The loader's message without its "the upload: " prefix: gather names the URL or the file itself."""
    text = str(e)
    return text[len(_UPLOAD) :] if text.startswith(_UPLOAD) else text


def _adopt(p: Path, rel: str, label: str) -> dict | None:
    """Provenance for a file found in the output folder that gather did not write (import it as local)."""
    import imagehash

    try:
        data = read_image_bytes(p)  # regular files only: a FIFO or a device in OUT must not block or fill memory
        img = load_image(data)
    except (OSError, ImageLoadError):
        return None
    row = {
        "class": label,
        "source": "adopted",
        "query": p.name,
        "page_url": "",
        "image_url": p.resolve().as_uri(),
        "author": "",
        "licence": "unknown",
        "use": "train-only",
        "sha256": hashlib.sha256(data).hexdigest(),
        "phash": str(imagehash.phash(img)),
        "width": img.width,
        "height": img.height,
        "fetched_at": _now(),
        "path": rel,
    }
    row["attribution"] = mf.attribution_text(row)
    return row


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------- the run


class Run:
    """One gather run over an output folder: reconcile, schedule, commit, report."""

    def __init__(self, cfg: GatherConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.failures: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.kept_now: Counter[str] = Counter()
        self.gate = HostGate(cfg.http.per_host, cfg.http.host_interval)
        self.source_errors: list[str] = []
        self.class_problems: dict[str, list[str]] = {}  # label -> what its sources reported while asked for it
        self.class_failures: dict[str, Counter[str]] = {}  # label -> failed downloads by reason, this run
        self.stop = threading.Event()  # Ctrl-C: queued downloads are cancelled, finished ones still recorded
        self._interruptible = False  # whether Ctrl-C may raise KeyboardInterrupt right where the main thread is
        self._said_stopping = False

    def _load_failed(self) -> set[tuple[str, str]]:
        """The (class, URL)s that failed for good in earlier runs. A refusal by the address policy (a private or
        local host, POLICY_REASONS) is not one: it depends on that run's --allow-host / allow_hosts, and checking it
        again sends no request while the address is still refused."""
        f = self.out / FAILURES
        if self.cfg.retry_failed or not f.is_file():
            return set()
        with open(f, newline="", encoding="utf-8", errors="replace") as fh:
            return {
                (r.get("class") or "", mf.cell(r.get("image_url")))
                for r in csv.DictReader(fh)
                if (r.get("reason") or "") not in POLICY_REASONS
            }

    # ------------------------------------------------------------ Ctrl-C

    def _on_sigint(self, signum, frame) -> None:
        """The first Ctrl-C stops the run: it raises KeyboardInterrupt only where that loses nothing (waiting for
        downloads, asking a source for candidates); elsewhere (recording an image, writing the manifest) the run
        stops at the next safe point. Later Ctrl-Cs are ignored: the run is already stopping."""
        if self.stop.is_set():
            return
        self.stop.set()
        if self._interruptible:
            raise KeyboardInterrupt

    @contextmanager
    def _interrupt_here(self) -> Iterator[None]:
        self._interruptible = True
        try:
            if self.stop.is_set():
                raise KeyboardInterrupt
            yield
        finally:
            self._interruptible = False

    def _sigint_handled(self):
        """Handle Ctrl-C with _on_sigint while the run lasts (only the main thread can; elsewhere nothing changes)."""
        return _sigint_as(self._on_sigint)

    def _say_stopping(self, text: str = STOPPING) -> None:
        if not self._said_stopping:
            self._said_stopping = True
            print(text, file=sys.stderr, flush=True)

    def _bar(self, **kw):
        from tqdm import tqdm

        return tqdm(unit="img", disable=True if self.cfg.quiet else None, file=sys.stderr, **kw)

    def _reconcile(self) -> tuple[list[dict], dict[str, int]]:
        """mf.reconcile with a progress bar over the images it records; Ctrl-C stops it between two images."""
        bar = None

        def adopt(p: Path, rel: str, label: str) -> dict | None:
            nonlocal bar
            if self.stop.is_set():
                raise Stopped("the run is stopping")
            if bar is None:  # only when there is something to record
                bar = self._bar(desc=f"recording images already in {self.out}")
            row = _adopt(p, rel, label)
            bar.update(1)
            return row

        try:
            return mf.reconcile(self.out, adopt=adopt, classes=[c.label for c in self.cfg.classes])
        except Stopped:
            if bar is not None:
                bar.close()
            self._say_stopping("stopping…")
            raise GatherInterrupted(
                f"stopped while recording the images already in {self.out} (nothing was downloaded); run the same "
                "command again to finish"
            ) from None
        finally:
            if bar is not None:
                bar.close()

    # ------------------------------------------------------------ results

    def _record_failure(self, cand: Candidate, err: FetchError) -> None:
        self.failures[err.reason] += 1
        self.class_failures.setdefault(cand.label, Counter())[err.reason] += 1
        log.info("%s [%s] %s", cand.label, err.reason, err)
        if err.transient:
            return  # worth trying again next run
        f = self.out / FAILURES
        new = not f.exists()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if new:
            w.writerow(FAILURE_COLUMNS)
        w.writerow([mf.cell(x) for x in (cand.label, cand.source, cand.image_url, err.reason, err, _now())])
        with open(f, "a", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(buf.getvalue())

    def _commit(self, item: Fetched) -> bool:
        c = item.cand
        where = self.shas.get(item.sha256)  # an image is kept once, in one place, whatever clean did to it since
        if where is not None:
            if where == c.label:
                self.skipped["duplicate_in_class"] += 1
            elif where in SKIP_DIRS:
                self.skipped["removed_by_clean"] += 1
            else:
                self.skipped["kept_in_another_class"] += 1
            return False
        rel = f"{c.label}/{item.sha256[:16]}.{item.ext}"
        mf.atomic_write(self.out / rel, item.data)  # the image first ...
        row = {
            "class": c.label,
            "source": c.source,
            "query": c.query,
            "page_url": c.page_url,
            "image_url": c.image_url,
            "licence": c.licence,
            "author": c.author,
            "use": mf.licence_use(c.licence, self.cfg.publishable, c.author),
            "sha256": item.sha256,
            "phash": item.phash,
            "width": item.width,
            "height": item.height,
            "fetched_at": _now(),
            "path": rel,
        }
        row["attribution"] = c.attribution or mf.attribution_text(row)
        mf.append_row(self.out, row)  # ... then its manifest row: a kill in between leaves an orphan, not a lie
        self.rows.append(row)
        self.shas[item.sha256] = c.label
        self.done_urls.add(mf.cell(c.image_url, exact=True))
        return True

    def _next_candidate(self, cls: ClassSpec) -> Candidate | None:
        it = self.iters[cls.label]
        while True:
            try:
                cand = next(it)
            except StopIteration:
                return None
            url = mf.cell(cand.image_url, exact=True)
            key = (cand.label, mf.cell(cand.image_url))
            texts = (cand.label, cand.query, cand.image_url, cand.page_url, cand.licence, cand.author, cand.attribution)
            if not all(mf.is_utf8(t) for t in texts):
                log.warning("skipped a candidate of %s whose text is not UTF-8: %s", cand.label, mf.shown(cand.query))
                self.skipped["unusable_text"] += 1
            elif url in self.done_urls:  # recorded in any row: kept, relabelled, deleted or set aside by clean
                self.skipped["already_done"] += 1
            elif key in self.failed:
                self.skipped["failed_before"] += 1
            elif key in self.queued:
                self.skipped["repeated_url"] += 1
            elif (
                not self.cfg.include_train_only
                and mf.licence_use(cand.licence, self.cfg.publishable, cand.author) != "publishable"
            ):
                self.skipped["licence_not_publishable"] += 1
            else:
                self.queued.add(key)
                return cand

    def _chain(self, cls: ClassSpec, want: int) -> Iterator[Candidate]:
        """Every source's candidates for one class, in order; a source that fails unexpectedly is skipped for this
        class with a warning, and the next source goes on (a SourceError, a problem the user must fix, stops)."""
        for src in self.cfg.sources:
            name = getattr(src, "name", type(src).__name__)
            problems = getattr(src, "problems", None)
            seen = len(problems) if isinstance(problems, list) else 0
            try:
                it = iter(src.candidates(cls, want))
                while True:
                    try:
                        cand = next(it)
                    except StopIteration:
                        break
                    finally:  # what the source reported while asked for this class (a page it could not fetch)
                        if isinstance(problems, list) and len(problems) > seen:
                            self.class_problems.setdefault(cls.label, []).extend(problems[seen:])
                            seen = len(problems)
                    yield cand
            except SourceError:
                raise
            except Exception as e:  # noqa: BLE001 - one broken source must not lose the other sources
                log.warning(
                    "the %s source failed for class %s and is skipped for it (the next source goes on): %s: %s",
                    name,
                    cls.label,
                    type(e).__name__,
                    e,
                )
                self.failures["source_error"] += 1
                self.source_errors.append(f"{name} for {cls.label}: {type(e).__name__}: {e}")
                self.class_problems.setdefault(cls.label, []).append(f"{name}: {type(e).__name__}: {e}")

    def execute(self) -> dict:
        with self._sigint_handled():
            return self._execute()

    def _execute(self) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        write_classes_json(
            self.out, cfg.classes, cfg.class_info
        )  # a broken classes.json stops the run before any download
        self.rows, fixed = self._reconcile()
        # the licence policy may have changed since the last run (a narrower publishable list): every row's use
        # follows the current one, so push never publishes a photo under a policy the user has withdrawn
        fixed["policy_reapplied"] = mf.reapply_policy(self.out, cfg.publishable, self.rows)
        # Every row blocks its image and its URL for every class, wherever the clean workbench moved it since
        # (another class, _trash, _not_snake): gather must not undo a decision. Only the files that are in a
        # class folder count towards that class's quota, so a deleted image is replaced by a new one.
        self.shas = {r["sha256"]: mf.top_folder(r["path"]) for r in self.rows}
        self.done_urls = {mf.cell(r["image_url"], exact=True) for r in self.rows}
        self.failed = self._load_failed()
        self.queued: set[tuple[str, str]] = set()
        have = Counter(mf.top_folder(r["path"]) for r in self._in_dataset())
        big = 10**12
        want = {c.label: (cfg.count or big) for c in cfg.classes}
        self.iters = {c.label: self._chain(c, max(0, want[c.label] - have[c.label])) for c in cfg.classes}
        inflight: Counter[str] = Counter()
        exhausted: set[str] = set()
        pending: dict[Future, Candidate] = {}
        total = sum(max(0, want[c.label] - have[c.label]) for c in cfg.classes) if cfg.count else None
        bar = self._bar(total=total, desc="gather")
        # not `with`: its exit would wait for every download a worker has started, however slow, after a Ctrl-C
        pool = ThreadPoolExecutor(max(1, cfg.workers), thread_name_prefix="gather")
        finished = False
        try:
            try:
                while not self.stop.is_set():
                    with self._interrupt_here():
                        self._fill(pool, pending, inflight, exhausted, have, want)
                    if not pending:
                        break
                    with self._interrupt_here():
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        self._settle(fut, pending, inflight, have, bar)
            except KeyboardInterrupt:
                self.stop.set()
            finished = True
        finally:
            if finished and not self.stop.is_set():
                pool.shutdown(wait=True)
            else:  # Ctrl-C or an error: queued downloads are cancelled, running ones give up before their request
                self.stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
            if finished and self.stop.is_set():
                self._say_stopping()
                for fut in [f for f in pending if f.done() and not f.cancelled()]:
                    self._settle(fut, pending, inflight, have, bar)  # downloads that finished are kept
            kept = self._in_dataset()
            mf.write_attribution(self.out, kept)
            write_classes_json(self.out, cfg.classes, cfg.class_info)
        interrupted = self.stop.is_set()
        problems = [p for src in cfg.sources for p in getattr(src, "problems", [])]
        if problems:
            self.failures["source_unavailable"] += len(problems)
        bad_names = [n for src in cfg.sources for n in getattr(src, "skipped_names", [])]
        if bad_names:
            self.skipped["unusable_file_name"] += len(bad_names)
        report = {
            "out": str(self.out),
            "source_problems": problems + self.source_errors,
            "class_source_problems": {k: v for k, v in self.class_problems.items() if v},
            "class_failures": {k: dict(v.most_common()) for k, v in self.class_failures.items()},
            "interrupted": interrupted,
            "kept_this_run": dict(self.kept_now),
            "per_class": {c.label: have[c.label] for c in cfg.classes},
            "target_per_class": cfg.count,
            "short_classes": {c.label: have[c.label] for c in cfg.classes if cfg.count and have[c.label] < cfg.count},
            "failures": dict(self.failures.most_common()),
            "skipped": dict(self.skipped.most_common()),
            "reconciled": {k: v for k, v in fixed.items() if v},
            "publishable": sum(r["use"] == "publishable" for r in kept),
            "train_only": sum(r["use"] != "publishable" for r in kept),
        }
        mf.atomic_write(self.out / REPORT, json.dumps(report, indent=2).encode())
        return report

    def _settle(self, fut: Future, pending: dict[Future, Candidate], inflight, have, bar) -> None:
        """Record one finished download: its image and manifest row, or its failure."""
        cand = pending.pop(fut)
        inflight[cand.label] -= 1
        try:
            item = fut.result()
        except Stopped:
            return  # gave up because the run is stopping: not a failure of the URL
        except FetchError as e:
            self._record_failure(cand, e)
        except Exception as e:  # noqa: BLE001 - a bug or an odd URL must not end the run, nor every later one
            log.warning(
                "%s: unexpected error fetching %s, recorded as failed (error): %s: %s",
                cand.label,
                mf.shown(cand.image_url),
                type(e).__name__,
                e,
            )
            self._record_failure(cand, FetchError("error", f"{cand.image_url}: {type(e).__name__}: {e}"))
        else:
            if self._commit(item):
                have[cand.label] += 1
                self.kept_now[cand.label] += 1
                bar.update(1)
        bar.set_postfix(failed=sum(self.failures.values()), refresh=False)

    def _in_dataset(self) -> list[dict]:
        """The rows whose file is in a class folder (not deleted or set aside by the clean workbench)."""
        return [r for r in self.rows if mf.in_class_folder(r)]

    def _fill(self, pool, pending, inflight, exhausted, have, want) -> None:
        """Keep `workers` downloads in flight, round-robin over the classes that still need images."""
        progressed = True
        while progressed and len(pending) < self.cfg.workers:
            progressed = False
            for cls in self.cfg.classes:
                lab = cls.label
                if len(pending) >= self.cfg.workers:
                    break
                if lab in exhausted or have[lab] + inflight[lab] >= want[lab]:
                    continue
                cand = self._next_candidate(cls)
                if cand is None:
                    exhausted.add(lab)
                    continue
                pending[pool.submit(fetch_candidate, cand, self.cfg.http, self.gate, self.stop)] = cand
                inflight[lab] += 1
                progressed = True


def gather(cfg: GatherConfig) -> dict:
    """Run the gathering stage; returns the report (also saved as OUT/gather_report.json)."""
    return Run(cfg).execute()


EXIT_RULE = (
    "gather exits 1 when a class ends the run with no images, or when a source could not be reached for a class "
    "that is still short of its count and got no new image this run; otherwise (every count reached, or some "
    "progress) it exits 0, and 130 when stopped with Ctrl-C"
)


def failed_classes(rep: dict) -> dict[str, str]:
    """The classes that make the run fail (exit status 1, see EXIT_RULE): {label: why}. None for a stopped run."""
    if rep.get("interrupted"):
        return {}
    target = rep.get("target_per_class")
    problems = rep.get("class_source_problems", {})
    bad = {}
    for label, n in rep["per_class"].items():
        new = rep["kept_this_run"].get(label, 0)
        if n == 0:
            bad[label] = "no images"
        elif problems.get(label) and target and n < target and new == 0:
            bad[label] = f"{n} of {target} images, none new: a source could not be reached"
    return bad


def _class_note(rep: dict, label: str, n: int) -> str:
    """Why a class is short (or empty), and what to do about it."""
    have = f"has only {n} images" if n else "has no images"
    problems = rep.get("class_source_problems", {}).get(label, [])
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        return (
            f"note: {label} {have}: a source could not be reached or answered badly ({shown}). Check the network "
            "connection and the source's address (e.g. [inaturalist] base_url), then run the same command again: "
            "it resumes"
        )
    failed = rep.get("class_failures", {}).get(label, {})
    if failed and not rep["kept_this_run"].get(label):
        reasons = ", ".join(f"{k} {v}" for k, v in failed.items())
        note = (
            f"note: {label} {have}: all {sum(failed.values())} of its downloads this run failed ({reasons}); "
            f"{Path(rep['out']) / FAILURES} names each URL and file: check them (and the network)"
        )
        if any(k in POLICY_REASONS for k in failed):
            note += (
                "; blocked_address/blocked_redirect: the URL points at a private or local address, which is refused; "
                "--allow-host HOST allows one exact host you trust"
            )
        return note
    return f"note: {label} {have}; add queries or sources, or lower count"


def format_report(rep: dict) -> str:
    lines = [f"gathered into {rep['out']}" + (" (interrupted; run again to resume)" if rep["interrupted"] else "")]
    for label, n in rep["per_class"].items():
        extra = f" of {rep['target_per_class']}" if rep["target_per_class"] else ""
        lines.append(f"  {label}: {n}{extra} images ({rep['kept_this_run'].get(label, 0)} new)")
    lines.append(f"  licences: {rep['publishable']} publishable, {rep['train_only']} train-only")
    if rep["failures"]:
        lines.append("  failures: " + ", ".join(f"{k} {v}" for k, v in rep["failures"].items()))
    else:
        lines.append("  failures: none")
    if rep["skipped"]:
        lines.append("  skipped: " + ", ".join(f"{k} {v}" for k, v in rep["skipped"].items()))
        if rep["skipped"].get("failed_before"):
            n = rep["skipped"]["failed_before"]
            lines.append(f"  {n} URLs failed in earlier runs; add --retry-failed to try them again")
    rec = rep["reconciled"]
    if rec.get("moved_by_hand") or rec.get("deleted_by_hand"):
        lines.append(
            f"  {rec.get('moved_by_hand', 0)} moved by hand (manifest updated), "
            f"{rec.get('deleted_by_hand', 0)} deleted by hand (not fetched again)"
        )
    if rec.get("policy_reapplied"):
        lines.append(f"  licence policy re-applied: {rec['policy_reapplied']} images changed use")
    repairs = {k: v for k, v in rec.items() if k in ("temp_files_removed", "rows_without_file", "orphans_quarantined")}
    if repairs:
        lines.append("  repaired from an earlier interrupted run: " + ", ".join(f"{k} {v}" for k, v in repairs.items()))
    if rec.get("adopted_without_manifest"):
        lines.append(
            f"  {rep['out']} had no manifest.csv: recorded the {rec['adopted_without_manifest']} images already in "
            "its class folders as they are (source 'adopted', licence unknown); no image was moved or deleted"
        )
    if rec.get("adopted"):
        lines.append(f"  recorded {rec['adopted']} images added to the class folders by hand (licence unknown)")
    if rec.get("quarantined"):
        lines.append(
            f"  set aside {rec['quarantined']} files in the class folders that are named like images but do not "
            f"decode: {Path(rep['out']) / mf.QUARANTINE / 'unrecorded'}"
        )
    if rec.get("not_images_left"):
        lines.append(
            f"  left {rec['not_images_left']} files in the class folders that are named like images but do not "
            "decode where they are; move them out, or the next run sets them aside in _quarantine/unrecorded"
        )
    if rec.get("unusable_names_left"):
        lines.append(
            f"  left {rec['unusable_names_left']} files whose names are not UTF-8 where they are, unrecorded; "
            "rename them and run again"
        )
    target = rep["target_per_class"]
    for label, n in rep["per_class"].items():
        if n == 0 or (target and n < target):
            lines.append("  " + _class_note(rep, label, n))
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.gather",
        description=__doc__.split("\n\n")[0] + " Gathers from a TOML config, a URL list or a local folder.",
        epilog=(
            "examples:\n"
            "  python -m train.gather --config train/configs/snakes4.toml\n"
            "  python -m train.gather --folder ~/photos/snakes --out data/mysnakes\n"
            "  python -m train.gather --urls urls.txt --class atheris_squamigera --out data/x\n"
            "  python -m train.gather --folder ~/photos --licence 'CC BY 4.0' --author 'Ann Lee' --out data/mine\n"
            "URL list: one 'URL' per line (class from --class, else the file name: viper.txt -> viper), or 'LABEL URL'\n"
            "lines, or a CSV with a header: url,label,licence (or license),author,page_url.\n"
            "Run it again to resume; OUT/manifest.csv, OUT/ATTRIBUTION.md and OUT/gather_report.json are kept in step.\n"
            "An existing OUT without manifest.csv is not emptied or tidied: images already in folders named like the\n"
            "classes are recorded as they are (licence unknown); no image is moved or deleted and no other file or\n"
            "folder is touched (only gather's own unfinished downloads, .gather-*.part, are removed).\n"
            "Images the clean workbench relabelled, deleted or marked not-a-snake are never fetched again.\n"
            "With --config, --folder and --urls images must belong to the config's classes (a sub-folder or a line\n"
            "for another class stops the run before any download: add that class to the config, or fix the label).\n"
            "Ctrl-C stops at once: queued downloads are cancelled, finished ones are kept; run again to resume.\n"
            "URLs that failed for good are not tried again (--retry-failed does); a URL refused as a private or local\n"
            "address is checked again on every run (--allow-host HOST allows one).\n"
            "Exit status: 1 when a class ends the run with no images, or when a source could not be reached for a\n"
            "class still short of its count that got no new image; 0 when every count was reached or the run made\n"
            "progress; 130 when stopped with Ctrl-C."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="TOML config (classes, sources, count, out, licence policy)")
    p.add_argument(
        "--folder",
        type=Path,
        help="import a folder of class sub-folders (added to the config's sources; with --config, every sub-folder "
        "must be one of its classes)",
    )
    p.add_argument(
        "--urls",
        type=Path,
        help="a URL list file (added to the config's sources; with --config, every line's class must be one of its "
        "classes)",
    )
    p.add_argument("--class", dest="label", help="the class of URL-list lines that name none (default: the file name)")
    p.add_argument("--source", action="append", choices=SOURCE_NAMES, help="use only these config sources")
    p.add_argument("--out", type=Path, help="output folder (default: the config's out, else data/gathered)")
    p.add_argument(
        "--count",
        type=int_at_least(1),
        help="images per class (default: the config's count, which also caps --folder and --urls; without "
        "--config, all of a folder or URL list)",
    )
    p.add_argument("--workers", type=int_at_least(1), help="concurrent downloads (default 8)")
    p.add_argument(
        "--licence",
        default="unknown",
        help="licence to record for --folder images and URL-list rows without a licence column value",
    )
    p.add_argument(
        "--author",
        default="",
        help="author (photographer) to record and credit for --folder images and --urls rows without an author "
        "column value (CC BY and CC BY-SA need one to be credited)",
    )
    p.add_argument("--publishable-only", action="store_true", help="skip NC and unknown-licence images")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="allow this exact host even if private (tests: 127.0.0.1)",
    )
    p.add_argument("--timeout", type=POSITIVE, help="read timeout in seconds (default 20)")
    p.add_argument("--connect-timeout", type=POSITIVE, help="connect timeout in seconds (default 10)")
    p.add_argument("--max-bytes", type=int_at_least(1), help="byte cap per image (default 20 MB)")
    p.add_argument("--retries", type=int_at_least(0), help="retries on 429, 5xx and timeouts (default 3)")
    p.add_argument("--max-retry-wait", type=NON_NEGATIVE, help="longest Retry-After honoured, seconds (default 60)")
    p.add_argument("--retry-failed", action="store_true", help="try again URLs that failed for good in earlier runs")
    p.add_argument("-v", "--verbose", action="store_true", help="log every failure")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace) -> GatherConfig:
    if args.config is None and args.folder is None and args.urls is None:
        raise ConfigError("nothing to gather: give --config FILE, --folder DIR or --urls FILE (see --help)")
    if args.config is not None:
        cfg = load_config(args.config, args.allow_host)
        if args.source:
            cfg.sources = [s for s in cfg.sources if s.name in args.source]
    else:
        cfg = GatherConfig(out=Path("data/gathered"), classes=[], sources=[], count=None)
        cfg.http = HttpConfig(allow_hosts=frozenset(h.lower() for h in args.allow_host))
    http = cfg.http
    for flag, name in [
        ("timeout", "read_timeout"),
        ("connect_timeout", "connect_timeout"),
        ("max_bytes", "max_bytes"),
        ("retries", "retries"),
        ("max_retry_wait", "max_retry_wait"),
    ]:
        if getattr(args, flag) is not None:
            setattr(http, name, getattr(args, flag))
    if args.label and args.urls is None:
        raise ConfigError("--class names the class of --urls lines that name none; give --urls FILE with it")
    author = getattr(args, "author", "") or ""
    if author and args.folder is None and args.urls is None:
        raise ConfigError("--author is the author of --folder images and --urls rows; give --folder or --urls with it")
    named: list[tuple[Source, str]] = [(s, _source_title(s)) for s in cfg.sources]
    extra: list[Source] = []
    if args.folder is not None:
        if not args.folder.is_dir():
            raise ConfigError(f"--folder {args.folder} is not a folder")
        extra.append(FolderSource(args.folder, licence=args.licence, author=author))
        named.append((extra[-1], f"--folder {args.folder}"))
    if args.urls is not None:
        if not args.urls.is_file():
            raise ConfigError(f"--urls {args.urls} is not a file")
        # --licence (and --author) only fill the rows whose licence (author) column is empty, like [urls] does
        src = URLListSource(args.urls, args.label, licence=args.licence)
        src.rows()  # a bad line or label stops here, before anything is fetched
        named.append((src, f"--urls {args.urls}"))
        extra.append(_DefaultAuthor(src, author) if author else src)
    cfg.sources += extra
    if args.config is None:  # classes come from the folder names / URL list labels
        labels = sorted({lab for s in extra for lab in s.labels()})
        cfg.classes = [ClassSpec(lab, lab.replace("_", " ")) for lab in labels]
        if not cfg.classes:
            raise ConfigError("found no classes: the folder has no sub-folders / the URL list has no URLs")
    else:  # images of a class the config does not list would be dropped without a word: say so before any download
        check_source_labels(named, cfg.classes, args.config)
    for key in ("out", "count", "workers"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if args.publishable_only:
        cfg.include_train_only = False
    cfg.quiet = bool(getattr(args, "quiet", False))
    cfg.retry_failed = args.retry_failed
    if not cfg.sources:
        raise ConfigError("no sources left to gather from")
    return cfg


def _source_title(src: Source) -> str:
    """How the user named a config source: '[urls] file list.txt', '[folder] path photos'."""
    if isinstance(src, URLListSource):
        return f"[urls] file {src.path}"
    if isinstance(src, FolderSource):
        return f"[folder] path {src.root}"
    return f"[{getattr(src, 'name', type(src).__name__)}]"


def _unknown_labels(src: Source, classes: list[ClassSpec]) -> list[str]:
    """The labels a URL list or a folder holds images for that no class takes (their images would be dropped)."""
    if isinstance(src, URLListSource):
        known = {c.label for c in classes}
        return [lab for lab in src.labels() if lab not in known]
    if isinstance(src, FolderSource):
        taken = {d.name for c in classes if (d := src.folder_for(c)) is not None}
        return [lab for lab in src.labels() if lab not in taken]
    return []


def check_source_labels(named: list[tuple[Source, str]], classes: list[ClassSpec], config: Path) -> None:
    """Stop (ConfigError) when a URL list or folder holds images for a class the config does not list."""
    problems = []
    listed = ", ".join(c.label for c in classes)
    for src, title in named:
        try:
            unknown = _unknown_labels(src, classes)
        except SourceError as e:
            raise ConfigError(str(e)) from e
        if not unknown:
            continue
        names = ", ".join(repr(u) for u in unknown)
        if isinstance(src, FolderSource):
            what = f"{title} has sub-folder(s) {names} that are not classes of {config}"
            fix = "or rename (or move out) those sub-folders"
        else:
            what = f"{title} has lines for the class(es) {names}, which {config} does not list"
            fix = "or fix the label (the LABEL before the URL, the label/class column, or --class for lines without one"
            fix += "; without --class the file's name is the label)" if title.startswith("--urls") else ")"
        problems.append(
            f"{what} (its classes: {listed}); their images would be left out. Add them to the config as classes "
            f"([[classes]] with label = {unknown[0]!r}), {fix}."
        )
    if problems:
        raise ConfigError("\n".join(problems))


class _DefaultAuthor:
    """A source whose candidates without an author get `author` (--author for --urls rows without one)."""

    def __init__(self, inner: Source, author: str):
        self.inner, self.author = inner, author

    def __getattr__(self, key: str):  # name, labels(), rows(), problems, ... of the wrapped source
        if key == "inner":
            raise AttributeError(key)
        return getattr(self.inner, key)

    def candidates(self, cls: ClassSpec, want: int) -> Iterator[Candidate]:
        for cand in self.inner.candidates(cls, want):
            yield cand if cand.author else replace(cand, author=self.author)


def _os_error_message(e: OSError, out: Path | None) -> str:
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        where = Path(e.filename).parent if e.filename else out
        place = f"the disk holding {where} is full" if where else "the disk is full"
        return (
            f"error: {place} ({e.strerror or e}); free some space and run the same command again: it resumes "
            "(what was already gathered is kept)"
        )
    where = f" ({e.filename})" if e.filename else (f" (in {out})" if out else "")
    return f"error: {e.strerror or e}{where}; what was already gathered is kept"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    cfg = None
    try:
        cfg = config_from_args(args)
        rep = gather(cfg)
    except (ConfigError, SourceError, mf.ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(_os_error_message(e, cfg.out if cfg is not None else args.out), file=sys.stderr)
        return 1
    except GatherInterrupted as e:
        print(e, file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before the run started (reading the config or a URL list)
        print("\nstopped before anything was gathered", file=sys.stderr)
        return 130
    if not rep["interrupted"]:
        print(format_report(rep))
        bad = failed_classes(rep)
        if bad:
            print(
                "error: " + "; ".join(f"{k}: {v}" for k, v in bad.items()) + f" (see the notes above). {EXIT_RULE}. "
                "What was gathered is kept: run the same command again to resume.",
                file=sys.stderr,
            )
            return 1
        return 0
    with _sigint_as(signal.SIG_IGN):  # more Ctrl-Cs while the report is printed: it is stopping already
        print(format_report(rep))
        print("stopped: run the same command again to resume", file=sys.stderr)
    return 130


@contextmanager
def _sigint_as(handler) -> Iterator[None]:
    """SIGINT handled by handler (a function or signal.SIG_IGN) inside the block; only the main thread can set it,
    elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _cli() -> int:
    try:
        rc = main()
    except KeyboardInterrupt:
        rc = 130
    if rc == 130:  # downloads a worker had started are abandoned: do not wait for them at exit
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(rc)
    return rc


if __name__ == "__main__":
    raise SystemExit(_cli())
