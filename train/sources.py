"""Where candidate images come from: iNaturalist, DuckDuckGo (ddgs), a URL list file, a local class-folder tree.

Every source answers one question: `candidates(cls, want)` yields Candidate records (an image URL or a local
file, with its licence and author) for one class, lazily, so paging stops as soon as enough images are kept.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from train.download import FetchError, HostGate, HttpConfig, fetch
from train.manifest import has_control_chars, is_utf8, normalise_licence, shown

log = logging.getLogger(__name__)

INATURALIST_API = "https://api.inaturalist.org/v1"
INAT_LICENCES = ("cc0", "cc-by", "cc-by-sa")
PHOTO_SIZES = ("square", "thumb", "small", "medium", "large", "original")
DDG_IMAGE_BACKEND = "duckduckgo"  # ddgs.engines.ENGINES["images"] key of DuckDuckGo's own image search


class SourceError(ValueError):
    """A source is misconfigured (missing file, unparsable line); the message says how to fix it."""


@dataclass(frozen=True)
class ClassSpec:
    label: str  # folder name and model label
    name: str = ""  # display name, e.g. "African bush viper"
    scientific: str = ""  # e.g. "Atheris squamigera"
    queries: tuple[str, ...] = ()

    def search_queries(self) -> list[str]:
        """The explicit queries, else the scientific name and '<display name> snake'."""
        if self.queries:
            return list(self.queries)
        qs = [q for q in (self.scientific, f"{self.name} snake" if self.name else "") if q]
        return qs or [self.label.replace("_", " ")]


@dataclass
class Candidate:
    label: str
    source: str
    query: str  # the search query, taxon name or original relative path
    image_url: str  # http(s) URL, or a file:// URI for the folder source
    page_url: str = ""
    licence: str = "unknown"
    author: str = ""
    attribution: str = ""
    local_path: str = ""  # set by the folder source: read this file instead of fetching


class Source(Protocol):
    name: str

    def candidates(self, cls: ClassSpec, want: int) -> Iterator[Candidate]: ...


def check_label(label: str, where: str) -> str:
    """A class label becomes a folder name: it must be one plain path component inside the output folder."""
    from train.data import SKIP_DIRS

    if not is_utf8(label):
        raise SourceError(
            f"{where}: the name '{shown(label)}' is not valid UTF-8 text (it was written in another encoding), so "
            "it cannot be a class label; rename it in UTF-8 (by hand, or e.g. `convmv -f latin1 -t utf-8`) and run "
            "gather again"
        )
    if (
        not label
        or label != label.strip()
        or label.startswith(".")
        or label in SKIP_DIRS
        or any(ch in label for ch in "/\\\0:")
        or has_control_chars(label)
    ):
        raise SourceError(
            f"{where}: the class label {label!r} cannot be a folder name; use letters, digits, spaces, - and _ "
            "(no slashes or control characters, not starting with a dot)"
        )
    return label


def slug(text: str) -> str:
    """'Atheris squamigera' -> 'atheris_squamigera' (the class folder name)."""
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


# ---------------------------------------------------------------- iNaturalist


@dataclass
class INaturalistSource:
    """Research-grade observations of a taxon with openly licensed photos, at most one API request per interval."""

    base_url: str = INATURALIST_API
    licences: tuple[str, ...] = INAT_LICENCES
    photo_size: str = "medium"  # square 75 px, small 240, medium 500, large 1024, original
    per_page: int = 100
    max_pages: int = 50
    min_interval: float = 1.0  # iNaturalist asks for at most about 1 request per second
    photos_per_observation: int = 1  # more photos of one animal are near-duplicates, not new examples
    http: HttpConfig = field(default_factory=HttpConfig)
    sleep: Callable[[float], None] = time.sleep
    name: str = "inaturalist"
    problems: list[str] = field(default_factory=list)  # why the source stopped early, for the final report
    _last: float = field(default=-1e9, repr=False)

    def endpoint(self) -> str:
        return f"{self.base_url.rstrip('/')}/observations"

    def _get_json(self, params: dict[str, Any]) -> Any:
        wait = self._last + self.min_interval - time.monotonic()
        if wait > 0:
            self.sleep(wait)
        url = f"{self.endpoint()}?{urlencode(params)}"
        try:
            resp = fetch(url, self.http, HostGate(1, 0.0), accept="application/json", sleep=self.sleep)
        finally:
            self._last = time.monotonic()
        try:
            return json.loads(resp.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FetchError("bad_api_response", f"{url}: the iNaturalist API did not answer with JSON ({e})") from e

    def _photo_url(self, url: str) -> str:
        return re.sub(rf"/({'|'.join(PHOTO_SIZES)})\.", f"/{self.photo_size}.", url, count=1)

    def _page(self, data: Any) -> tuple[list, int]:
        """The observations and total_results of one API answer; FetchError when its shape is not the API's."""

        def bad(what: str) -> FetchError:
            return FetchError(
                "bad_api_response",
                f"{self.endpoint()}: the iNaturalist API answer is not in the expected shape ({what}); check "
                "[inaturalist] base_url, it should be the API root like " + INATURALIST_API,
            )

        if not isinstance(data, dict):
            raise bad(f"a JSON {_json_kind(data)} instead of an object")
        if "results" not in data:
            raise bad("no 'results' list")
        results = data["results"]
        if results is None:
            results = []
        if not isinstance(results, list):
            raise bad(f"'results' is a JSON {_json_kind(results)}, not a list")
        total = data.get("total_results")
        if total is None:
            total = 0
        if isinstance(total, bool) or not isinstance(total, int):
            raise bad(f"'total_results' is a JSON {_json_kind(total)}, not a whole number")
        if results and not any(isinstance(o, dict) for o in results):
            raise bad(f"'results' holds {_json_kind(results[0])}s, not observation objects")
        return results, total

    def taxon_for(self, cls: ClassSpec) -> str:
        """The taxon_name to ask for: the scientific name, else the display name, else the label (never empty:
        an empty taxon_name is no filter at all, and every species' photos would be filed under the class)."""
        for text in (cls.scientific, cls.name, cls.label.replace("_", " ")):
            if isinstance(text, str) and text.strip():
                return " ".join(text.split())
        raise SourceError(
            f"class {cls.label!r} has no scientific name, name or label to ask iNaturalist for; give it "
            "scientific = 'Genus species' in [[classes]]"
        )

    def candidates(self, cls: ClassSpec, want: int) -> Iterator[Candidate]:
        taxon = self.taxon_for(cls)
        if not cls.scientific.strip():
            log.info("iNaturalist: class %s has no scientific name; asking for taxon_name=%r", cls.label, taxon)
        allowed = {normalise_licence(x) for x in self.licences}
        malformed = 0
        try:
            for page in range(1, self.max_pages + 1):
                params = {
                    "taxon_name": taxon,
                    "quality_grade": "research",
                    "photos": "true",
                    "photo_license": ",".join(self.licences),
                    "per_page": self.per_page,
                    "page": page,
                    "order_by": "id",
                    "order": "desc",
                }
                try:
                    results, total = self._page(self._get_json(params))
                except FetchError as e:
                    log.warning("iNaturalist: stopping %s at page %d: %s", taxon, page, e)
                    self.problems.append(f"iNaturalist {taxon} page {page}: {e.reason}")
                    return
                for obs in results:
                    found, skipped = self._from_observation(cls, taxon, obs, allowed)
                    malformed += skipped
                    yield from found
                if not results or page * self.per_page >= total:
                    return
        finally:
            if malformed:
                log.warning(
                    "iNaturalist: skipped %d malformed observation(s) or photo(s) of %s in the answers of %s",
                    malformed,
                    taxon,
                    self.endpoint(),
                )
                self.problems.append(f"iNaturalist {taxon}: skipped {malformed} malformed result(s)")

    def _from_observation(self, cls: ClassSpec, taxon: str, obs: Any, allowed: set[str]) -> tuple[list[Candidate], int]:
        """The candidates of one observation, and how many malformed entries (the observation, or photos) it had."""
        photos = obs.get("photos") if isinstance(obs, dict) else None
        if not isinstance(obs, dict) or not isinstance(photos, list | None):
            return [], 1
        found: list[Candidate] = []
        bad = 0
        user = obs.get("user")
        user = user if isinstance(user, dict) else {}
        author = _text(user.get("name")) or _text(user.get("login"))
        oid = obs.get("id")
        has_id = (isinstance(oid, int) and not isinstance(oid, bool)) or (isinstance(oid, str) and oid.isdigit())
        page_url = _text(obs.get("uri")) or (f"https://www.inaturalist.org/observations/{oid}" if has_id else "")
        for photo in photos or []:
            if len(found) >= self.photos_per_observation:
                break
            code = photo.get("license_code") if isinstance(photo, dict) else None
            url = photo.get("url") if isinstance(photo, dict) else None
            if not isinstance(photo, dict) or not isinstance(code, str | None) or not _text(url):
                bad += 1
                continue
            lic = normalise_licence(code)
            if lic not in allowed:
                continue
            found.append(
                Candidate(
                    label=cls.label,
                    source=self.name,
                    query=taxon,
                    image_url=self._photo_url(url.strip()),
                    page_url=page_url,
                    licence=lic,
                    author=author,
                    attribution=_text(photo.get("attribution")),
                )
            )
        return found, bad


def _text(value: Any) -> str:
    """A JSON value that should be text: the stripped string, else '' (a number, list, null ...)."""
    return value.strip() if isinstance(value, str) else ""


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- DuckDuckGo through ddgs


@dataclass
class DDGSource:
    """Image web search through the `ddgs` package; results carry no per-image licence, so it is 'unknown'."""

    client: Any = None  # anything with .images(query, **kw) -> list[dict]; default ddgs.DDGS()
    license_image: str | None = "any"  # any (all Creative Commons), Public, Share, ShareCommercially, Modify, ...
    region: str = "wt-wt"
    safesearch: str = "moderate"
    oversample: float = 2.0  # ask for more results than needed: many links are dead or not images
    retries: int = 4
    backoff: float = 5.0
    max_wait: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    name: str = "ddgs"
    problems: list[str] = field(default_factory=list)

    def _client(self) -> Any:
        if self.client is None:
            from ddgs import DDGS

            self.client = DDGS()
        return self.client

    def _search(self, query: str, n: int) -> list[dict]:
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

        # backend: ddgs's "auto" may pick its Bing image engine, which drops license_image (the Creative Commons
        # filter); its "duckduckgo" engine (DuckDuckGo's own i.js endpoint) honours it
        kw: dict[str, Any] = {
            "region": self.region,
            "safesearch": self.safesearch,
            "max_results": n,
            "backend": DDG_IMAGE_BACKEND,
        }
        if self.license_image:
            kw["license_image"] = self.license_image
        for attempt in range(self.retries + 1):
            try:
                results = self._client().images(query, **kw)
                if results is None:
                    return []
                if not isinstance(results, list | tuple):
                    log.warning(
                        "DuckDuckGo search %r: ddgs answered a %s instead of a list of results; skipped it",
                        query,
                        type(results).__name__,
                    )
                    self.problems.append(f"DuckDuckGo {query!r}: malformed answer ({type(results).__name__})")
                    return []
                return list(results)
            except (RatelimitException, TimeoutException) as e:
                kind = "rate-limited" if isinstance(e, RatelimitException) else "timed out on"
                if attempt == self.retries:
                    log.warning(
                        "DuckDuckGo %s the search %r %d times; giving up on it. Wait a few minutes and run gather "
                        "again (finished images are kept), or use the iNaturalist source.",
                        kind,
                        query,
                        attempt + 1,
                    )
                    self.problems.append(f"DuckDuckGo {query!r}: {kind.split()[0]} {attempt + 1} times")
                    return []
                wait = min(self.backoff * 2**attempt, self.max_wait)
                log.warning("DuckDuckGo %s the search %r; waiting %.0f s (try %d)", kind, query, wait, attempt + 1)
                self.sleep(wait)
            except DDGSException as e:
                log.warning("DuckDuckGo search %r failed: %s", query, e)
                self.problems.append(f"DuckDuckGo {query!r}: {e}")
                return []
        return []

    def candidates(self, cls: ClassSpec, want: int) -> Iterator[Candidate]:
        n = max(10, int(want * self.oversample))
        for query in cls.search_queries():
            malformed = 0
            for r in self._search(query, n):
                url = _text(r.get("image")) if isinstance(r, dict) else ""
                if not url:  # not a result object, or one without an image URL
                    malformed += 1
                    continue
                page = _text(r.get("url"))
                title = _text(r.get("title"))
                yield Candidate(
                    label=cls.label,
                    source=self.name,
                    query=query,
                    image_url=url,
                    page_url=page,  # the page the image was found on: the provenance to check its author and licence
                    licence="unknown",
                    # no author: ddgs's `source` is the search backend ("Bing"), not who made the photo
                    author="",
                    attribution=f"{title} ({page or url}); found by DuckDuckGo image search, licence unknown".lstrip(),
                )
            if malformed:
                log.warning(
                    "DuckDuckGo search %r: skipped %d malformed result(s) without an image URL", query, malformed
                )


# ---------------------------------------------------------------- URL list file


@dataclass
class URLListSource:
    """A text file of `URL` or `LABEL URL` lines (# comments), or a CSV with a url column (and label/class,
    licence or license, author, page_url). Lines without a label belong to `default_label`, else to the file's
    name; rows without a licence get `licence`."""

    path: Path
    default_label: str | None = None
    licence: str = "unknown"  # for rows without a licence (or license) value
    name: str = "urls"
    _rows: list[dict] | None = field(default=None, repr=False)

    def rows(self) -> list[dict]:
        if self._rows is None:
            if not self.default_label:  # one file per class, fastai style: viper.txt holds the vipers
                self.default_label = slug(Path(self.path).stem) or None
            self._rows = self._parse()
        return self._rows

    def _parse(self) -> list[dict]:
        p = Path(self.path)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise SourceError(f"cannot read the URL list {p}: {e}") from e
        first = text.lstrip().split("\n", 1)[0].lower()
        if "url" in [c.strip() for c in first.split(",")]:
            rows = []
            for r in csv.DictReader(text.splitlines()):
                r = {(k or "").strip().lower(): (v or "").strip() for k, v in r.items()}
                label = r.get("label") or r.get("class") or self.default_label
                if not r.get("url"):
                    continue
                if not label:
                    raise SourceError(f"{p}: a row has no label/class column value; add one or pass --class")
                rows.append({**r, "label": check_label(label, str(p))})
            return rows
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) == 1 and self.default_label:
                rows.append({"label": check_label(self.default_label, "--class"), "url": parts[0]})
            elif len(parts) == 2:
                rows.append({"label": check_label(parts[0], f"{p} line {n}"), "url": parts[1]})
            else:
                raise SourceError(f"{p} line {n}: expected 'URL' (with --class) or 'LABEL URL', got {line[:80]!r}")
        return rows

    def labels(self) -> list[str]:
        return sorted({r["label"] for r in self.rows()})

    def candidates(self, cls: ClassSpec, want: int) -> Iterator[Candidate]:
        for r in self.rows():
            if r["label"] != cls.label:
                continue
            yield Candidate(
                label=cls.label,
                source=self.name,
                query=Path(self.path).name,
                image_url=r["url"],
                page_url=r.get("page_url", ""),
                licence=normalise_licence(r.get("licence") or r.get("license") or self.licence),
                author=r.get("author", ""),
            )


# ---------------------------------------------------------------- local folder of class sub-folders


@dataclass
class FolderSource:
    """Import a ready dataset (ROOT/<class>/<files>): every file is checked by content like a download."""

    root: Path
    licence: str = "unknown"
    author: str = ""
    name: str = "folder"
    skipped_names: list[str] = field(default_factory=list)  # files whose names cannot be recorded, for the report

    def folder_for(self, cls: ClassSpec) -> Path | None:
        root = Path(self.root)
        names = [cls.label, cls.name, cls.scientific, slug(cls.name), slug(cls.scientific)]
        for n in names:
            if n and (root / n).is_dir():
                return root / n
        return None

    def labels(self) -> list[str]:
        """The class sub-folders' names; a name that cannot be a label stops the run before anything is done."""
        root = Path(self.root)
        if not root.is_dir():
            raise SourceError(f"{root} is not a folder; give a folder with one sub-folder of images per class")
        names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
        return [check_label(n, f"{shown(str(root))}: sub-folder") for n in names]

    def candidates(self, cls: ClassSpec, want: int) -> Iterator[Candidate]:
        d = self.folder_for(cls)
        if d is None:
            log.warning("folder source: no sub-folder of %s for class %s", self.root, cls.label)
            return
        for p in sorted(d.rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            rel = p.relative_to(self.root).as_posix()
            if not is_utf8(rel):  # it could not be written to manifest.csv (UTF-8)
                log.warning(
                    "folder source: skipped %s: its name is not valid UTF-8 text (written in another encoding), so "
                    "manifest.csv cannot record it; rename it in UTF-8 (by hand, or e.g. `convmv -f latin1 -t utf-8`) "
                    "and run gather again to import it",
                    shown(str(p)),
                )
                self.skipped_names.append(shown(rel))
                continue
            yield Candidate(
                label=cls.label,
                source=self.name,
                query=rel,
                image_url=p.resolve().as_uri(),
                licence=normalise_licence(self.licence),
                author=self.author,
                local_path=str(p),
            )
