"""Pull a model artifact from the Hugging Face Hub: pinned to a commit, cached, verified, never a pickle.

The endpoint, cache and token are parameters (defaults: huggingface_hub's HF_ENDPOINT, HF_HUB_CACHE, HF_TOKEN or
login), so tests and mirrors point it anywhere. Nothing happens at import time; huggingface_hub loads lazily.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path

from .artifact import CONFIG, WEIGHTS, ArtifactError, load_spec, sha256_file
from .ood import OOD_FILE
from .quant import INT8_FILE

log = logging.getLogger(__name__)

METRICS = "metrics.json"
CARD_IMAGES = ("confusion_matrix.png", "top_losses.png", "batch_preview.png", "reliability.png")
REQUIRED_FILES = (CONFIG, WEIGHTS)
# The only files a pull ever asks for. A pickle (export.pkl, *.bin, *.pt) is never on this list.
OOD_BANK = OOD_FILE  # the abstain feature bank (safetensors, sha256 in config.json)
INT8_GRAPH = INT8_FILE  # the body's int8 ONNX graph (a protobuf of tensors, sha256 in config.json)
CARD_TEXT = ("README.md", "ATTRIBUTION.md")  # plain text, shown in the app's Model tab
ALLOWED_FILES = (*REQUIRED_FILES, OOD_BANK, INT8_GRAPH, METRICS, *CARD_IMAGES, *CARD_TEXT)
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"
NETWORK_TIMEOUT_S = 10.0  # per connect/read: a server that sends a byte every few seconds never trips it
# The whole pull (file list and every file) must finish within this many seconds, or it is abandoned with a clear
# ModelPullTimeoutError. The env var MODEL_PULL_TIMEOUT_S (read by resolve_model_dir) overrides it; the default leaves
# room for a ~100 MB model on a slow link.
PULL_DEADLINE_S = 300.0
PULL_DEADLINE_ENV = "MODEL_PULL_TIMEOUT_S"


class ModelPullError(ArtifactError):
    """The model could not be pulled from the Hub; the message says which repo, revision and what to do."""


class ModelRepoNotFoundError(ModelPullError):
    """The repo does not exist on that endpoint, or it is private and the token cannot read it."""


class ModelRevisionNotFoundError(ModelPullError):
    """The repo exists but the requested commit, branch or tag does not."""


class ModelFileMissingError(ModelPullError):
    """The revision lacks model.safetensors or config.json."""


class ModelIntegrityError(ModelPullError):
    """model.safetensors does not match the sha256 recorded in config.json."""


class ModelOfflineError(ModelPullError):
    """The Hub cannot be reached (or offline mode is on) and the model is not in the local cache."""


class ModelPullTimeoutError(ModelPullError):
    """The Hub kept the connection alive but did not finish sending within the pull's overall deadline."""


def is_commit_sha(revision: str | None) -> bool:
    """True for a full 40-hex commit id, the only revision that pins a model."""
    return bool(revision) and COMMIT_SHA.fullmatch(revision) is not None


def _check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ModelPullError(f"model repo {repo_id!r} is not of the form OWNER/NAME (e.g. 'alice/snake-classifier')")


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline_mode() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _where(repo_id: str, revision: str) -> str:
    return f"{repo_id}@{revision[:12] if is_commit_sha(revision) else revision}"


def _snapshot_folder(repo_id: str, revision: str, cache_dir: str | Path | None) -> Path | None:
    """The cached snapshot folder that has a config.json for this revision, complete or not, if any."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, CONFIG, cache_dir=cache_dir, revision=revision)
    return Path(found).parent if isinstance(found, str) else None


def _cached_snapshot(repo_id: str, revision: str, cache_dir: str | Path | None) -> Path | None:
    """The cached snapshot folder holding a complete, valid model for this revision, if any."""
    snapshot = _snapshot_folder(repo_id, revision, cache_dir)
    return snapshot if snapshot is not None and _complete(snapshot) else None


def _valid(snapshot: Path) -> bool:
    """config.json is a model spec, and the weights, if present, match the sha256 it records.

    A bad download (an HTML page saved as config.json, cut-short or swapped weights) fails this, so the next pull
    fetches those files again instead of failing on the same cached copy forever.
    """
    return _valid_spec(snapshot) is not None


def _valid_spec(snapshot: Path):
    """The snapshot's ModelSpec when _valid holds, else None."""
    try:
        spec = load_spec(snapshot)
    except (ArtifactError, OSError, ValueError):
        return None
    weights = snapshot / WEIGHTS
    return spec if not weights.is_file() or sha256_file(weights) == spec.weights_sha256 else None


def _complete(snapshot: Path) -> bool:
    """The weights and every file config.json names (the kNN feature bank, the int8 graph) are in the snapshot, and
    they are valid: what _verified checks, so a complete snapshot needs no second check.

    A pull killed half-way (or abandoned at the deadline) leaves config.json without the rest, and a bad download
    leaves a config.json that does not parse or weights that do not match it; such a snapshot is pulled again.
    """
    spec = _valid_spec(snapshot) if (snapshot / WEIGHTS).is_file() else None
    if spec is None:
        return False
    return all((snapshot / name).is_file() for name in (spec.ood.get("file"), spec.int8.get("file")) if name)


def _cache_folder(snapshot: Path) -> Path:
    """The repo's whole cache folder (models--OWNER--NAME): deleting it removes the snapshot and its blobs."""
    return snapshot.parent.parent


def _verified(snapshot: Path, repo_id: str, revision: str) -> Path:
    """Check config.json parses and the weights' sha256 matches it; return the folder."""
    where = _where(repo_id, revision)
    try:
        spec = load_spec(snapshot)
    except ArtifactError as e:
        raise ModelPullError(
            f"config.json of {where} is not a valid model spec: {e}. If this persists, delete the cache folder "
            f"{_cache_folder(snapshot)} and pull again; if it still fails, the Hub is not serving the artifact"
        ) from None
    actual = sha256_file(snapshot / WEIGHTS)
    if actual != spec.weights_sha256:
        raise ModelIntegrityError(
            f"model.safetensors of {where} has sha256 {actual[:16]}..., but its config.json records "
            f"{(spec.weights_sha256 or '(none)')[:16]}...: the weights were changed after export, on the Hub or in "
            f"the local cache ({snapshot}). Refusing to serve them. Delete the cache folder {_cache_folder(snapshot)} "
            "and pull again; if it persists, re-push the artifact."
        )
    return snapshot


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled

    return (httpx2.TransportError, OfflineModeIsEnabled, ConnectionError, TimeoutError)


def _translate(e: Exception, repo_id: str, revision: str, endpoint: str) -> ModelPullError:
    """One clear ModelPullError subclass per failure, from huggingface_hub's exceptions."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = _where(repo_id, revision)
    if isinstance(e, RepositoryNotFoundError):
        return ModelRepoNotFoundError(
            f"model repo {repo_id!r} not found on {endpoint} (or it is private and no valid token was given); "
            "check MODEL_REPO and, for a private repo, HF_TOKEN"
        )
    if isinstance(e, RevisionNotFoundError):
        return ModelRevisionNotFoundError(
            f"revision {revision!r} not found in model repo {repo_id!r} on {endpoint}; "
            "check MODEL_REVISION (a 40-hex commit sha from the repo's history)"
        )
    if isinstance(e, RemoteEntryNotFoundError):
        return ModelFileMissingError(f"{where} on {endpoint} has no {_missing_name(e)}: it is not a model artifact")
    if isinstance(e, (LocalEntryNotFoundError, *_network_errors())):
        return ModelOfflineError(
            f"cannot reach {endpoint} to download {where}, and it is not in the local cache; "
            "connect to the network once, or set MODEL_DIR to a local model folder"
        )
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else "?"
        if status in (401, 403):
            return ModelPullError(f"{endpoint} rejected the token (HTTP {status}) for {where}; check or unset HF_TOKEN")
        return ModelPullError(f"the Hub at {endpoint} answered HTTP {status} for {where}; try again later")
    if isinstance(e, OSError):  # after the network errors: the local cache folder (read-only, disk full)
        return ModelPullError(
            f"pulling {where} failed writing the local cache ({e.strerror or type(e).__name__}"
            f"{': ' + str(e.filename) if e.filename else ''}); set HF_HUB_CACHE to a writable folder with free space"
        )
    return ModelPullError(f"pulling {where} from {endpoint} failed: {type(e).__name__}")


def _missing_name(e: Exception) -> str:
    url = str(getattr(getattr(e, "response", None), "url", "") or "")
    name = url.rsplit("/", 1)[-1] if "/resolve/" in url else ""
    return name or "model.safetensors/config.json"


def _download(repo_id: str, filename: str, revision: str, cache_dir, endpoint, token, force: bool = False) -> Path:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(
        repo_id,
        filename,
        revision=revision,
        cache_dir=cache_dir,
        endpoint=endpoint,
        token=token,
        etag_timeout=NETWORK_TIMEOUT_S,
        force_download=force,
    )
    return Path(path)


class _Pull:
    """What the pull is fetching now, and whether it was abandoned at the deadline (the worker then stops).

    Python cannot kill the worker thread, so abandoning a pull makes the worker stop by itself: while it runs, every
    HTTP request it sends through huggingface_hub's shared httpx client is watched (see _watch_session), and at the
    deadline the sockets of its open connections are shut down. A read blocked on a slow server then returns at
    once, the download fails, and any request it tries next (huggingface_hub retries, the next file) is refused.
    """

    def __init__(self, deadline_s: float):
        self.deadline_s = deadline_s
        self.ends = time.monotonic() + deadline_s
        self.sending = "the file list"
        self.abandoned = threading.Event()
        self._lock = threading.Lock()
        self._sockets: dict[_Trace, socket.socket] = {}  # the worker's open connections, by request

    def run(self, fn, where: str, endpoint: str):
        """fn() in a worker thread, waited on until the deadline; past it, ModelPullTimeoutError.

        huggingface_hub's timeout is per read, so a server that drips a byte every few seconds would hold the
        pull for ever; this wall-clock limit holds for the whole pull. At the deadline the worker is cancelled
        (its connections shut down) and stops within about a second. Its half-written download is a temporary
        file that huggingface_hub deletes on the failure and never links into the snapshot, so the cache never
        counts it as complete, and a retry finds no download still writing into the cache.
        """
        out: dict = {}

        def work() -> None:
            _ACTIVE_PULL.set(self)  # this thread's own context: requests from other threads are never watched
            try:
                _watch_session()
                out["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                out["error"] = e

        worker = threading.Thread(target=work, name="hub-pull", daemon=True)
        worker.start()
        worker.join(max(0.0, self.ends - time.monotonic()))
        if worker.is_alive():
            self.cancel()
            raise ModelPullTimeoutError(
                f"the Hub at {endpoint} did not finish sending {self.sending} of {where} within "
                f"{self.deadline_s:g} s; try again, raise {PULL_DEADLINE_ENV} for a slow link, or set MODEL_DIR "
                "to a local model folder"
            )
        if "error" in out:
            raise out["error"]
        return out["value"]

    def cancel(self) -> None:
        """Abandon the pull: refuse the worker's next request and cut its open connections (from any thread)."""
        with self._lock:
            self.abandoned.set()
            sockets = list(self._sockets.values())
            self._sockets.clear()
        for sock in sockets:
            _shut(sock)

    def check(self) -> None:
        """In the worker: raise once the pull was abandoned, so it sends no further request."""
        if self.abandoned.is_set():
            raise ModelPullTimeoutError("the pull was abandoned at its deadline")

    def watch(self, request: _Trace, sock: socket.socket) -> None:
        with self._lock:
            if not self.abandoned.is_set():
                self._sockets[request] = sock  # the latest wins: a TLS socket replaces the TCP one it wraps
                return
        _shut(sock)  # connected just after the deadline

    def unwatch(self, request: _Trace) -> None:
        """The request's response is closed: its connection may go back to the shared pool, no longer ours."""
        with self._lock:
            self._sockets.pop(request, None)

    def next_file(self, filename: str) -> None:
        self.check()
        _watch_session()
        self.sending = filename


_ACTIVE_PULL: ContextVar[_Pull | None] = ContextVar("snake_model_hub_pull", default=None)
_HOOKS_LOCK = threading.Lock()


def _shut(sock: socket.socket) -> None:
    """Shut a connection down from another thread: a recv blocked on it returns at once (close alone would not).

    socket.socket.shutdown also for a TLS socket, so its SSL object stays for the worker that still uses it.
    """
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Trace:
    """httpcore's "trace" extension for one request of a pull's worker: it learns the request's socket."""

    def __init__(self, pull: _Pull, inner):
        self.pull = pull
        self.inner = inner  # a trace the request already had

    def __call__(self, name: str, info: dict) -> None:
        if self.inner is not None:
            self.inner(name, info)
        if name.endswith((".connect_tcp.complete", ".start_tls.complete")):
            self.watch(info.get("return_value"))
        elif name.endswith(".response_closed.complete"):
            self.pull.unwatch(self)

    def watch(self, stream) -> None:
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            self.pull.watch(self, sock)


def _on_request(request) -> None:
    """httpx request hook: a pull's worker sends nothing once the pull is abandoned, and its sockets are watched."""
    pull = _ACTIVE_PULL.get()
    if pull is None:
        return
    pull.check()
    request.extensions["trace"] = _Trace(pull, request.extensions.get("trace"))


def _on_response(response) -> None:
    """httpx response hook (before the body is read): the socket of a connection reused from the pool."""
    trace = response.request.extensions.get("trace")
    if isinstance(trace, _Trace):
        trace.watch(response.extensions.get("network_stream"))


def _not_abandoned(record: logging.LogRecord) -> bool:
    """Logging filter: drop huggingface_hub's "trying to resume download" warnings from an abandoned pull's worker
    (the caller already reported the deadline); everything else, from any other thread, passes."""
    pull = _ACTIVE_PULL.get()
    return pull is None or not pull.abandoned.is_set()


def _watch_session() -> None:
    """Add _on_request/_on_response to huggingface_hub's shared httpx client, once per client.

    They do nothing for requests sent outside a pull's worker thread. huggingface_hub makes a new client after
    close_session (e.g. after a connect error), hence the check before every pull and every file.
    """
    from huggingface_hub import get_session

    for name in ("huggingface_hub.file_download", "huggingface_hub.utils._http"):
        logging.getLogger(name).addFilter(_not_abandoned)  # once: addFilter skips a filter already there
    client = get_session()
    with _HOOKS_LOCK:
        hooks = client.event_hooks
        if _on_request not in hooks["request"]:
            client.event_hooks = {
                "request": [*hooks["request"], _on_request],
                "response": [*hooks["response"], _on_response],
            }


def pull_model(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    *,
    offline: bool | None = None,
    deadline_s: float | None = None,
) -> Path:
    """Download (or find in the cache) a model artifact; return the local folder with its weights and config.

    Only ALLOWED_FILES are fetched. A commit-sha revision already in the cache needs no network at all.
    The network part must finish within deadline_s seconds (default PULL_DEADLINE_S) in all.
    Raises a ModelPullError subclass (an ArtifactError) with a clear message on every failure.
    """
    from huggingface_hub import HfApi, constants

    _check_repo_id(repo_id)
    revision = (revision or "").strip() or "main"
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    offline = _offline_mode() if offline is None else offline
    pinned = is_commit_sha(revision)
    if not pinned:
        log.warning(
            "model revision %r of %s is not a commit sha: the model may change under you. "
            "Pin MODEL_REVISION to a 40-hex commit sha for reproducible serving.",
            revision,
            repo_id,
        )
    found = _snapshot_folder(repo_id, revision, cache_dir)
    cached = found if found is not None and _complete(found) else None  # complete: its spec and weights verified
    bad = (
        found is not None and cached is None and not _valid(found)
    )  # a bad download in the cache: fetch its files again
    if cached is not None and (pinned or offline):
        log.info("using cached model %s from %s", _where(repo_id, revision), cached)
        return cached
    if offline:
        if bad and (found / WEIGHTS).is_file():
            _verified(found, repo_id, found.name)  # says what is wrong with the cached copy and which folder
        raise ModelOfflineError(
            f"offline mode (HF_HUB_OFFLINE) is on and {_where(repo_id, revision)} is not in the local cache; "
            "pull it once with the network on, or set MODEL_DIR to a local model folder"
        )

    pull = _Pull(PULL_DEADLINE_S if deadline_s is None else deadline_s)
    where = _where(repo_id, revision)
    try:
        info = pull.run(
            lambda: HfApi(endpoint=endpoint).model_info(
                repo_id, revision=revision, token=token, timeout=NETWORK_TIMEOUT_S
            ),
            where,
            endpoint,
        )
    except Exception as e:
        err = e if isinstance(e, ModelPullTimeoutError) else _translate(e, repo_id, revision, endpoint)
        if type(err) in (ModelOfflineError, ModelPullError, ModelPullTimeoutError) and cached is not None:
            # Unreachable or failing Hub, but the repo was never said to be gone: serve the cached copy.
            log.warning("cannot reach %s (%s); using the cached copy of %s", endpoint, type(e).__name__, revision)
            return cached
        if type(err) is ModelOfflineError and bad and (found / WEIGHTS).is_file():
            _verified(found, repo_id, found.name)  # says what is wrong with the cached copy and which folder
        raise err from None

    names = {s.rfilename for s in info.siblings} if info.siblings is not None else None
    if names is not None:
        missing = [f for f in REQUIRED_FILES if f not in names]
        if missing:
            raise ModelFileMissingError(
                f"{_where(repo_id, revision)} on {endpoint} has no {' or '.join(missing)}: it is not a model "
                f"artifact (files: {', '.join(sorted(names)) or 'none'})"
            )
    wanted = [f for f in ALLOWED_FILES if names is None or f in names]

    def fetch() -> Path:
        if bad:  # huggingface_hub keeps an existing link even on force_download: drop the bad copy's links
            for name in wanted:
                (found / name).unlink(missing_ok=True)
        # config.json by the asked revision first, so a branch is recorded in the cache's refs for offline use;
        # then every other file by the exact commit it resolved to, so all files come from one commit.
        pull.next_file(CONFIG)
        snapshot = _download(repo_id, CONFIG, revision, cache_dir, endpoint, token, force=bad).parent
        commit = snapshot.name
        for filename in wanted:
            if filename == CONFIG:
                continue
            pull.next_file(filename)
            try:
                _download(repo_id, filename, commit, cache_dir, endpoint, token, force=bad)
            except Exception as e:
                from huggingface_hub.errors import RemoteEntryNotFoundError

                if filename in REQUIRED_FILES or not isinstance(e, RemoteEntryNotFoundError):
                    raise
                log.info("%s has no %s; skipping it", _where(repo_id, commit), filename)
        return snapshot

    try:
        snapshot = pull.run(fetch, where, endpoint)
        commit = snapshot.name
    except ModelPullError:
        raise
    except Exception as e:
        raise _translate(e, repo_id, revision, endpoint) from None
    if not (snapshot / WEIGHTS).is_file():
        raise ModelFileMissingError(f"{_where(repo_id, commit)} on {endpoint} has no {WEIGHTS}")
    log.info("pulled model %s into %s", _where(repo_id, commit), snapshot)
    return _verified(snapshot, repo_id, commit)


def _cache_dir_from(env: Mapping[str, str]) -> str | None:
    if env.get("HF_HUB_CACHE"):
        return env["HF_HUB_CACHE"]
    if env.get("HF_HOME"):
        return os.path.join(env["HF_HOME"], "hub")
    return None


def _deadline_from(env: Mapping[str, str]) -> float | None:
    text = (env.get(PULL_DEADLINE_ENV) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ModelPullError(f"{PULL_DEADLINE_ENV}={text!r} is not a positive number of seconds")
    return value


def resolve_model_dir(env: Mapping[str, str] = os.environ) -> Path:
    """The app's model folder: MODEL_DIR if set; else MODEL_REPO (at MODEL_REVISION) pulled; else the bundled model.

    Raises ArtifactError (a ModelPullError subclass for Hub failures) with a message fit to show on the page.
    """
    if env.get("MODEL_DIR"):
        path = Path(env["MODEL_DIR"]).expanduser()
        if not path.is_dir():
            raise ArtifactError(f"MODEL_DIR={path} is not a directory holding model.safetensors and config.json")
        return path
    if env.get("MODEL_REPO"):
        return pull_model(
            env["MODEL_REPO"].strip(),
            env.get("MODEL_REVISION") or None,
            cache_dir=_cache_dir_from(env),
            endpoint=env.get("HF_ENDPOINT") or None,
            token=env.get("HF_TOKEN") or None,
            offline=True if _truthy(env.get("HF_HUB_OFFLINE")) else None,
            deadline_s=_deadline_from(env),
        )
    if env.get("MODEL_REVISION"):
        log.warning("MODEL_REVISION is set but MODEL_REPO is not; using the bundled model")
    return BUNDLED_MODEL_DIR
