"""Loopback HTTP servers that play hostile image hosts and a fake iNaturalist API (tests only, 127.0.0.1)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), color=(200, 40, 40), seed: int = 0) -> bytes:
    """A small real image; different seeds give visually different pictures (different perceptual hashes)."""
    img = Image.new("RGB", size, color)
    px = img.load()
    w, h = size
    for x in range(w):
        for y in range(h):
            # a coarse pattern that differs by seed, so phash tells the images apart
            on = ((x * (seed % 5 + 1)) // 8 + (y * (seed // 5 % 5 + 1)) // 8 + seed) % 2
            if on:
                px[x, y] = (color[2], color[0], color[1])
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the status line
    body_delay: float = 0.0  # after the headers, before the body (a slow body)
    chunk: int = 0  # with body_delay: send the body in pieces of this size, sleeping between them
    times: int = 0  # answer like this only the first `times` requests (0: always), then fall through to `then`
    then: Reply | None = None
    no_length: bool = False  # send no Content-Length: the body ends when the connection closes


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 with a routes table; counts hits per path."""

    def __init__(self, routes: dict[str, Reply | Callable] | None = None):
        self.routes: dict[str, Reply | Callable] = dict(routes or {})
        self.hits: Counter[str] = Counter()
        self.log: list[tuple[float, str]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                path = urlsplit(self.path).path
                with outer._lock:
                    outer.hits[path] += 1
                    outer.log.append((time.monotonic(), self.path))
                    outer.active += 1
                    outer.max_active = max(outer.max_active, outer.active)
                self._active = True
                try:
                    self._route(path)
                finally:
                    self._leave()

            def _leave(self):
                """Stop counting this request as active: once its answer starts (the client may read it all and send
                its next request before this thread returns, so counting until then would see overlaps that the
                client never made), or when it ends without one."""
                if getattr(self, "_active", False):
                    self._active = False
                    with outer._lock:
                        outer.active -= 1

            def _route(self, path):
                route = outer.routes.get(path)
                if route is None:
                    return self._send(Reply(404, b"<html>not found</html>", {"Content-Type": "text/html"}))
                if callable(route):
                    route = route(self, parse_qs(urlsplit(self.path).query))
                n = outer.hits[path]
                while route.times and n > route.times and route.then is not None:
                    n -= route.times
                    route = route.then
                self._send(route)

            def _send(self, r: Reply):
                try:
                    if r.delay:
                        time.sleep(r.delay)
                    self._leave()
                    self.send_response(r.status)
                    headers = {} if r.no_length else {"Content-Length": str(len(r.body))}
                    headers.update(r.headers)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.flush()
                    if r.body_delay and r.chunk:
                        for i in range(0, len(r.body), r.chunk):
                            time.sleep(r.body_delay)
                            self.wfile.write(r.body[i : i + r.chunk])
                            self.wfile.flush()
                        return
                    if r.body_delay:
                        time.sleep(r.body_delay)
                    self.wfile.write(r.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def start(self) -> Server:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def serve(routes: dict[str, Reply | Callable] | None = None) -> Iterator[Server]:
    s = Server(routes).start()
    try:
        yield s
    finally:
        s.stop()


def jpeg_reply(seed: int = 0, **kw) -> Reply:
    return Reply(200, image_bytes("JPEG", seed=seed), {"Content-Type": "image/jpeg"}, **kw)


def fake_inaturalist(server: Server, observations: list[dict], per_page_cap: int = 200) -> None:
    """Route /v1/observations on server: pages through `observations`, filtering photos by photo_license."""

    def handler(_req, q: dict) -> Reply:
        page = int(q.get("page", ["1"])[0])
        per_page = min(int(q.get("per_page", ["30"])[0]), per_page_cap)
        lic = set(q.get("photo_license", [""])[0].lower().split(",")) - {""}
        matching = [
            o for o in observations if not lic or any((p.get("license_code") or "") in lic for p in o["photos"])
        ]
        chunk = matching[(page - 1) * per_page : page * per_page]
        body = {"total_results": len(matching), "page": page, "per_page": per_page, "results": chunk}
        return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    server.routes["/v1/observations"] = handler
