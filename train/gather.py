"""Gather a class-folder image dataset with provenance: `python -m train.gather --config train/configs/snakes4.toml`.

Sources (iNaturalist, DuckDuckGo via ddgs, a URL list, a local folder) yield candidates; a guarded, polite,
concurrent downloader fetches them; the shared loader checks every file by content; each kept image is written
atomically to OUT/<class>/<sha256[:16]>.<ext> and then recorded in OUT/manifest.csv. Runs resume.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import os
import sys
import tomllib
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from snake_model.loader import (
    EmptyImageError,
    ImageLoadError,
    ImageTooLargeError,
    TruncatedImageError,
    UnsupportedFormatError,
    load_image,
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
REPORT = "gather_report.json"
FAILURE_COLUMNS = ["class", "source", "image_url", "reason", "message", "at"]
EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
LOADER_REASONS = [
    (EmptyImageError, "empty_file"),
    (UnsupportedFormatError, "not_an_image"),
    (TruncatedImageError, "corrupt_image"),
    (ImageTooLargeError, "image_too_large"),
]
SOURCE_NAMES = ("inaturalist", "ddgs", "urls", "folder")


class ConfigError(ValueError):
    """The config or the command line cannot be used; the message says what to change."""


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


def write_classes_json(out: Path, classes: list[ClassSpec]) -> None:
    """classes.json: display and scientific names per label; train.fit copies them into the model spec."""
    import json

    path = Path(out) / "classes.json"
    old = {}
    if path.is_file():  # it may hold hand-added venomous flags: never silently replaced
        try:
            old = read_class_info(path)
        except DatasetError as e:
            raise ConfigError(str(e)) from e
    for c in classes:
        entry = old.get(c.label, {})
        entry.update({k: v for k, v in (("display_name", c.name), ("scientific_name", c.scientific)) if v})
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


def parse_classes(items: list) -> list[ClassSpec]:
    classes = []
    for i, c in enumerate(items):
        if not isinstance(c, dict):
            raise ConfigError(f"[[classes]] entry {i + 1} must be a table with name and scientific")
        where = f"[[classes]] entry {i + 1}:"
        _check_keys(c, {"label", "name", "scientific", "queries"}, f"[[classes]] entry {i + 1}")
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
    classes = parse_classes(items)
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


def fetch_candidate(cand: Candidate, http: HttpConfig, gate: HostGate) -> Fetched:
    """Download (or read) and verify one candidate; raises FetchError with a report reason."""
    import imagehash

    data = _read_local(cand.local_path, http.max_bytes) if cand.local_path else fetch(cand.image_url, http, gate).body
    try:
        img = load_image(data)
    except ImageLoadError as e:
        reason = next((r for cls, r in LOADER_REASONS if isinstance(e, cls)), "bad_image")
        raise FetchError(reason, f"{cand.image_url}: {e}") from e
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


def _adopt(p: Path, rel: str, label: str) -> dict | None:
    """Provenance for a file found in the output folder that gather did not write (import it as local)."""
    import imagehash

    try:
        data = p.read_bytes()
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

    def _load_failed(self) -> set[tuple[str, str]]:
        f = self.out / FAILURES
        if self.cfg.retry_failed or not f.is_file():
            return set()
        with open(f, newline="", encoding="utf-8", errors="replace") as fh:
            return {(r.get("class") or "", mf.cell(r.get("image_url"))) for r in csv.DictReader(fh)}

    def _record_failure(self, cand: Candidate, err: FetchError) -> None:
        self.failures[err.reason] += 1
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
            "use": mf.licence_use(c.licence, self.cfg.publishable),
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
            except SourceError:
                raise
            except Exception as e:  # noqa: BLE001 - one broken source must not lose the run
                log.warning("a source failed for %s and is skipped: %s", cls.label, e)
                self.failures["source_error"] += 1
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
                not self.cfg.include_train_only and mf.licence_use(cand.licence, self.cfg.publishable) != "publishable"
            ):
                self.skipped["licence_not_publishable"] += 1
            else:
                self.queued.add(key)
                return cand

    def _chain(self, cls: ClassSpec, want: int):
        for src in self.cfg.sources:
            yield from src.candidates(cls, want)

    def execute(self) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        write_classes_json(self.out, cfg.classes)  # a broken classes.json stops the run before any download
        self.rows, fixed = mf.reconcile(self.out, adopt=_adopt, classes=[c.label for c in cfg.classes])
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
        bar = tqdm(total=total, unit="img", desc="gather", disable=None, file=sys.stderr)
        interrupted = False
        try:
            with ThreadPoolExecutor(max(1, cfg.workers), thread_name_prefix="gather") as pool:
                try:
                    while True:
                        self._fill(pool, pending, inflight, exhausted, have, want)
                        if not pending:
                            break
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            cand = pending.pop(fut)
                            inflight[cand.label] -= 1
                            try:
                                item = fut.result()
                            except FetchError as e:
                                self._record_failure(cand, e)
                            else:
                                if self._commit(item):
                                    have[cand.label] += 1
                                    self.kept_now[cand.label] += 1
                                    bar.update(1)
                            bar.set_postfix(failed=sum(self.failures.values()), refresh=False)
                except KeyboardInterrupt:
                    interrupted = True
                    for fut in pending:
                        fut.cancel()
                    raise
        except KeyboardInterrupt:
            pass
        finally:
            bar.close()
            kept = self._in_dataset()
            mf.write_attribution(self.out, kept)
            write_classes_json(self.out, cfg.classes)
        problems = [p for src in cfg.sources for p in getattr(src, "problems", [])]
        if problems:
            self.failures["source_unavailable"] += len(problems)
        bad_names = [n for src in cfg.sources for n in getattr(src, "skipped_names", [])]
        if bad_names:
            self.skipped["unusable_file_name"] += len(bad_names)
        report = {
            "out": str(self.out),
            "source_problems": problems,
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
                pending[pool.submit(fetch_candidate, cand, self.cfg.http, self.gate)] = cand
                inflight[lab] += 1
                progressed = True


def gather(cfg: GatherConfig) -> dict:
    """Run the gathering stage; returns the report (also saved as OUT/gather_report.json)."""
    return Run(cfg).execute()


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
    rec = rep["reconciled"]
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
    for label, n in rep["short_classes"].items():
        lines.append(f"  note: {label} has only {n} images; add queries or sources, or lower count")
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
            "URL list: one 'URL' per line (class from --class, else the file name: viper.txt -> viper), or 'LABEL URL'\n"
            "lines, or a CSV with a header: url,label,licence (or license),author,page_url.\n"
            "Run it again to resume; OUT/manifest.csv, OUT/ATTRIBUTION.md and OUT/gather_report.json are kept in step.\n"
            "An existing OUT without manifest.csv is not emptied or tidied: images already in folders named like the\n"
            "classes are recorded as they are (licence unknown); no image is moved or deleted and no other file or\n"
            "folder is touched (only gather's own unfinished downloads, .gather-*.part, are removed).\n"
            "Images the clean workbench relabelled, deleted or marked not-a-snake are never fetched again."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="TOML config (classes, sources, count, out, licence policy)")
    p.add_argument("--folder", type=Path, help="import a folder of class sub-folders (added to the config's sources)")
    p.add_argument("--urls", type=Path, help="a URL list file (added to the config's sources)")
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
    extra: list[Source] = []
    if args.folder is not None:
        if not args.folder.is_dir():
            raise ConfigError(f"--folder {args.folder} is not a folder")
        extra.append(FolderSource(args.folder, licence=args.licence))
    if args.urls is not None:
        if not args.urls.is_file():
            raise ConfigError(f"--urls {args.urls} is not a file")
        # --licence only fills the rows whose licence (or license) column is empty, like [urls] licence does
        src = URLListSource(args.urls, args.label, licence=args.licence)
        src.rows()  # a bad line or label stops here, before anything is fetched
        extra.append(src)
    cfg.sources += extra
    if args.config is None:  # classes come from the folder names / URL list labels
        labels = sorted({lab for s in extra for lab in s.labels()})
        cfg.classes = [ClassSpec(lab, lab.replace("_", " ")) for lab in labels]
        if not cfg.classes:
            raise ConfigError("found no classes: the folder has no sub-folders / the URL list has no URLs")
    for key in ("out", "count", "workers"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if args.publishable_only:
        cfg.include_train_only = False
    cfg.retry_failed = args.retry_failed
    if not cfg.sources:
        raise ConfigError("no sources left to gather from")
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        cfg = config_from_args(args)
        rep = gather(cfg)
    except (ConfigError, SourceError, mf.ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e.strerror or e} ({e.filename or ''}); what was already gathered is kept", file=sys.stderr)
        return 1
    print(format_report(rep))
    return 130 if rep["interrupted"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
