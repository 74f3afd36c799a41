"""A Hub that drips its answer, or serves an HTML page as config.json: the pull ends in time and the cache heals.

A scripted Hub on 127.0.0.1 serves one commit of a real artifact; each file (and the file list) can be served
normally, dripped one byte at a time, or replaced by an HTML page.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [p for p in (str(ROOT), str(HERE)) if p not in sys.path]

from snake_model import hub as H  # noqa: E402
from snake_model.artifact import save_artifact  # noqa: E402
from snake_model.network import build_network  # noqa: E402
from snake_model.spec import ModelSpec  # noqa: E402

REPO = "alice/snakes"
SHA = "ab" * 20
INFO = "the file list"  # the key of the model_info answer in ScriptedHub.modes
HTML = b"<html><body>Please log in</body></html>"


# Seconds between two bytes of a dripped answer: "drip" is a slow link, "stall" one that sends a byte just often
# enough to stay under huggingface_hub's 10 s read timeout.
DRIP_EVERY = {"drip": 0.2, "stall": 8.0}


class ScriptedHub:
    """modes[name] is "ok", "drip" or "stall" (see DRIP_EVERY; until stop) or "html"; name is a file or INFO.

    While dripping, the server watches its connection: `dripping` counts the answers still being sent, `hung_up`
    names those whose client closed the connection before the end.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.modes: dict[str, str] = {}
        self.requests: list[str] = []
        self.stop_drip = threading.Event()
        self.lock = threading.Lock()
        self.dripping = 0
        self.hung_up: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):  # noqa: N802
                self.do_GET()

            def do_GET(self):  # noqa: N802
                outer.requests.append(f"{self.command} {self.path}")
                if self.path.startswith(f"/api/models/{REPO}/"):
                    body = json.dumps(
                        {"id": REPO, "sha": SHA, "siblings": [{"rfilename": n} for n in sorted(outer.files)]}
                    ).encode()
                    return self._answer(INFO, body, {})
                name = self.path.rsplit("/", 1)[-1]
                if not self.path.startswith(f"/{REPO}/resolve/") or name not in outer.files:
                    return self._plain(404, b"not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": SHA})
                data = outer.files[name]
                headers = {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
                if name.endswith(".safetensors"):
                    headers |= {
                        "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                        "X-Linked-Size": str(len(data)),
                    }
                return self._answer(name, data, headers)

            def _answer(self, name, body, headers):
                mode = outer.modes.get(name, "ok")
                if mode == "html":
                    return self._plain(200, HTML, headers | {"ETag": '"html"'}, "text/html")
                if mode in DRIP_EVERY and self.command == "GET":
                    self._head(200, len(body), headers, "application/octet-stream")
                    with outer.lock:
                        outer.dripping += 1
                    try:
                        if not self._drip(body, DRIP_EVERY[mode]):
                            with outer.lock:
                                outer.hung_up.append(name)
                    finally:
                        with outer.lock:
                            outer.dripping -= 1
                    return None
                return self._plain(200, body, headers, "application/octet-stream")

            def _drip(self, body, every) -> bool:
                """Send body a byte every `every` s; False as soon as the client closes the connection."""
                sent, due = 0, time.monotonic()
                while sent < len(body):
                    if outer.stop_drip.wait(0.05):
                        return True
                    if self._client_gone():
                        return False
                    if time.monotonic() >= due:
                        try:
                            self.wfile.write(body[sent : sent + 1])
                            self.wfile.flush()
                        except OSError:
                            return False
                        sent, due = sent + 1, due + every
                return True

            def _client_gone(self) -> bool:
                try:  # the client sends nothing after its request: readable means it closed (or reset) the connection
                    return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    return False
                except OSError:
                    return True

            def _head(self, status, length, headers, ctype):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(length))
                self.send_header("Connection", "close")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()

            def _plain(self, status, body, headers, ctype="application/json"):
                self._head(status, len(body), headers, ctype)
                if self.command != "HEAD":
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ScriptedHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_drip.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def artifact_files(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("artifact")
    save_artifact(build_network("tf_efficientnet_lite0", 2, pretrained=False), ModelSpec(labels=["a", "b"]), d)
    return {p.name: p.read_bytes() for p in d.iterdir() if p.name in ("config.json", "model.safetensors")}


@pytest.fixture(autouse=True)
def no_real_hub_settings(tmp_path, monkeypatch):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest turns it on for every other test


def pull(hub: ScriptedHub, cache: Path, **kw) -> Path:
    return H.pull_model(REPO, SHA, cache_dir=cache, endpoint=hub.url, offline=False, **kw)


def test_a_hub_that_drips_the_weights_is_abandoned_at_the_deadline_and_not_cached_as_complete(artifact_files, tmp_path):
    cache = tmp_path / "cache"
    with ScriptedHub(artifact_files) as hub:
        hub.modes["model.safetensors"] = "drip"
        t = time.monotonic()
        with pytest.raises(H.ModelPullTimeoutError, match=r"did not finish sending model\.safetensors .* 1\.5 s"):
            pull(hub, cache, deadline_s=1.5)
        assert time.monotonic() - t < 6  # each byte arrives well within the 10 s read timeout
        assert H._cached_snapshot(REPO, SHA, cache) is None  # the partial download is not a cached model
        hub.stop_drip.set()  # the slow server goes away; a healthy one answers the next start
        hub.modes["model.safetensors"] = "ok"
        pulled = pull(hub, cache, deadline_s=60)
        assert (pulled / "model.safetensors").read_bytes() == artifact_files["model.safetensors"]


def _pull_workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "hub-pull"}


def _wait_for(condition, timeout: float) -> bool:
    ends = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > ends:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("mode", ["drip", "stall"])
def test_the_worker_of_a_pull_abandoned_at_the_deadline_stops_reading_and_a_retry_succeeds(
    artifact_files, tmp_path, mode
):
    cache = tmp_path / "cache"
    before = _pull_workers()
    with ScriptedHub(artifact_files) as hub:
        hub.modes["model.safetensors"] = mode  # megabytes, a byte at a time: it would take days to finish
        with pytest.raises(H.ModelPullTimeoutError, match=r"model\.safetensors"):
            pull(hub, cache, deadline_s=1.5)
        abandoned = _pull_workers() - before
        assert any(r.startswith("GET ") and r.endswith("/model.safetensors") for r in hub.requests)
        # Python cannot kill a thread: the abandoned worker must stop reading by itself, soon. The server sees its
        # connection closed by the client (stop_drip is never set here), and the worker thread ends.
        assert _wait_for(lambda: hub.dripping == 0, 5), "the abandoned pull is still reading the weights"
        assert hub.hung_up == ["model.safetensors"]
        for worker in abandoned:
            worker.join(5)
        assert not [t for t in abandoned if t.is_alive()], "the abandoned pull's worker thread is still running"
        assert not list(cache.rglob("*.incomplete"))  # nothing left behind to be written into later
        assert H._cached_snapshot(REPO, SHA, cache) is None  # the partial download is not a cached model
        # Requests outside a pull (this thread) are untouched by the cancelled one.
        from huggingface_hub import get_session

        assert get_session().get(f"{hub.url}/api/models/{REPO}/revision/{SHA}").status_code == 200
        # The same Hub now answers at full speed: a retry right away pulls the whole model, and it verifies.
        hub.modes["model.safetensors"] = "ok"
        pulled = pull(hub, cache, deadline_s=60)
        assert (pulled / "model.safetensors").read_bytes() == artifact_files["model.safetensors"]
        assert H._cached_snapshot(REPO, SHA, cache) == pulled


def test_a_hub_that_drips_the_file_list_is_abandoned_at_the_deadline_set_by_the_env_var(artifact_files, tmp_path):
    with ScriptedHub(artifact_files) as hub:
        hub.modes[INFO] = "drip"
        env = {"MODEL_REPO": REPO, "MODEL_REVISION": SHA, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path)}
        t = time.monotonic()
        with pytest.raises(H.ModelPullTimeoutError, match="did not finish sending the file list .* within 1 s"):
            H.resolve_model_dir(env | {H.PULL_DEADLINE_ENV: "1"})
        assert time.monotonic() - t < 5
        with pytest.raises(H.ModelPullError, match="not a positive number"):
            H.resolve_model_dir(env | {H.PULL_DEADLINE_ENV: "soon"})
    assert H.PULL_DEADLINE_S >= 60  # the default leaves room for a real model on a slow link


def test_an_html_page_cached_as_config_json_is_fetched_again_at_the_next_start(artifact_files, tmp_path):
    cache = tmp_path / "cache"
    folder = cache / "models--alice--snakes"
    with ScriptedHub(artifact_files) as hub:
        hub.modes["config.json"] = "html"
        with pytest.raises(H.ModelPullError, match="config.json") as e:
            pull(hub, cache)
        assert str(folder) in str(e.value)  # which cache folder to delete if it persists
        hub.modes["config.json"] = "ok"  # the Hub serves the real file again
        hub.requests.clear()
        pulled = pull(hub, cache)
        assert any("config.json" in r for r in hub.requests)
        assert json.loads((pulled / "config.json").read_text()) == json.loads(artifact_files["config.json"])
        hub.requests.clear()
        assert pull(hub, cache) == pulled and hub.requests == []  # now a good cache: no network at all


def test_a_bad_cached_copy_with_the_hub_gone_names_the_cache_folder_to_delete(artifact_files, tmp_path):
    cache = tmp_path / "cache"
    with ScriptedHub(artifact_files) as hub:
        hub.modes["config.json"] = "html"
        with pytest.raises(H.ModelPullError):
            pull(hub, cache)
    gone = "http://127.0.0.1:9"  # nobody listens there (a stopped server still answers a kept-alive connection)
    with pytest.raises(H.ModelPullError, match="delete the cache folder .*models--alice--snakes"):
        H.pull_model(REPO, SHA, cache_dir=cache, endpoint=gone, offline=False)
    with pytest.raises(H.ModelPullError, match="delete the cache folder .*models--alice--snakes"):
        H.pull_model(REPO, SHA, cache_dir=cache, endpoint=gone, offline=True)


def test_weights_that_do_not_match_config_json_in_the_cache_are_fetched_again(artifact_files, tmp_path):
    cache = tmp_path / "cache"
    with ScriptedHub(artifact_files) as hub:
        first = pull(hub, cache)
        blob = (first / "model.safetensors").resolve()
        blob.chmod(0o644)
        blob.write_bytes(artifact_files["model.safetensors"][:-1] + b"\x00")  # a bad copy in the cache
        assert H._cached_snapshot(REPO, SHA, cache) is None
        again = pull(hub, cache)
        assert (again / "model.safetensors").read_bytes() == artifact_files["model.safetensors"]
