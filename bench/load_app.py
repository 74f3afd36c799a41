"""Load test: N concurrent gradio_client clients call /predict (and /explain) for S seconds; print errors and latency.

    python bench/load_app.py                       # launch app.py's Blocks on loopback with the usual model choice
    python bench/load_app.py --model DIR           # ... with this model folder
    python bench/load_app.py --url http://127.0.0.1:7860/ --clients 16 --seconds 60

Exit status 1 when any call failed. Only loopback URLs are accepted: this is a test tool, not a traffic generator.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from PIL import Image, ImageDraw

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Result:
    """Per-endpoint latencies (seconds) and error messages of one load run."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, endpoint: str, dt: float, error: str | None) -> None:
        (self.errors if error else self.latencies).setdefault(endpoint, []).append(error or dt)

    @property
    def n_errors(self) -> int:
        return sum(len(v) for v in self.errors.values())

    @property
    def n_ok(self) -> int:
        return sum(len(v) for v in self.latencies.values())


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def sample_images(folder: Path, n: int = 6, seed: int = 0) -> list[Path]:
    """A few varied JPEG/PNG photos-like images (size, shape, format) written into folder."""
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        w, h = rng.randint(80, 640), rng.randint(60, 480)
        im = Image.new("RGB", (w, h), tuple(rng.randint(60, 200) for _ in range(3)))
        d = ImageDraw.Draw(im)
        for _ in range(5):
            x, y = rng.randint(0, w - 1), rng.randint(0, h - 1)
            d.ellipse([x, y, x + w // 4, y + h // 4], fill=tuple(rng.randint(0, 255) for _ in range(3)))
        buf = io.BytesIO()
        fmt = "JPEG" if i % 2 == 0 else "PNG"
        im.save(buf, fmt)
        p = folder / f"load_{i}.{fmt.lower()}"
        p.write_bytes(buf.getvalue())
        paths.append(p)
    return paths


def hammer(url: str, images: list[Path], clients: int = 16, seconds: float = 60.0, explain_every: int = 0) -> Result:
    """Run `clients` threads, each with its own gradio_client.Client, calling until `seconds` have passed."""
    from gradio_client import Client, handle_file

    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"load tests run against loopback only, not {host!r}")
    res, lock = Result(), threading.Lock()
    stop = time.monotonic() + seconds
    ready = threading.Barrier(clients)

    def worker(k: int) -> None:
        try:
            c = Client(url, verbose=False)
        except Exception as e:  # noqa: BLE001 - counted, not raised: the report is the point
            with lock:
                res.add("connect", 0.0, f"{type(e).__name__}: {e}")
            ready.abort()
            return
        try:
            ready.wait(timeout=120)
        except threading.BrokenBarrierError:
            pass
        i = k
        while time.monotonic() < stop:
            img = handle_file(str(images[i % len(images)]))
            explain = explain_every and i % explain_every == 0
            t0 = time.perf_counter()
            err = None
            try:
                if explain:
                    out, _ = c.predict(img, "predicted class", api_name="/explain")
                    if not out:
                        err = "explain returned no image"
                else:
                    label, decision = c.predict(img, api_name="/predict")
                    total = sum(x["confidence"] for x in label["confidences"])
                    if abs(total - 1) > 1e-4 or "abstain" not in decision:
                        err = f"bad answer: confidences sum to {total}"
            except Exception as e:  # noqa: BLE001 - counted, not raised
                err = f"{type(e).__name__}: {str(e)[:200]}"
            with lock:
                res.add("/explain" if explain else "/predict", time.perf_counter() - t0, err)
            i += 1
        c.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 300)
    res.seconds = time.perf_counter() - t0
    return res


def report(res: Result, clients: int) -> str:
    lines = [f"{clients} clients, {res.seconds:.1f} s: {res.n_ok} ok, {res.n_errors} errors"]
    for ep, xs in sorted(res.latencies.items()):
        lines.append(
            f"  {ep}: n={len(xs)}  {len(xs) / max(res.seconds, 1e-9):.1f}/s  latency p50 {percentile(xs, 50) * 1000:.0f} ms"
            f"  p90 {percentile(xs, 90) * 1000:.0f} ms  p99 {percentile(xs, 99) * 1000:.0f} ms  max {max(xs) * 1000:.0f} ms"
        )
    for ep, errs in sorted(res.errors.items()):
        lines.append(f"  {ep}: {len(errs)} errors, e.g. {errs[0]}")
    return "\n".join(lines)


def _serve(model: Path | None):
    """Launch app.py's Blocks on a free loopback port; return (demo, url)."""
    import os
    import socket

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import app

    env = dict(os.environ)
    if model is not None:
        env["MODEL_DIR"] = str(model)
    predictor, origin, error = app.load_predictor(env)
    if predictor is None:
        raise SystemExit(f"cannot load the model: {error}")
    demo = app.build_demo(predictor, origin, None, predictor.model_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running app on loopback (default: launch one here)")
    p.add_argument(
        "--model", type=Path, help="model folder for the launched app (default: MODEL_DIR/MODEL_REPO/bundled)"
    )
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--explain-every", type=int, default=0, help="make every k-th call an /explain call (0: never)")
    args = p.parse_args(argv)
    if args.url is not None and urlparse(args.url).hostname not in LOOPBACK:
        p.error(f"--url must be on loopback ({', '.join(sorted(LOOPBACK))}), not {args.url!r}")
    if args.clients < 1 or not args.seconds > 0 or args.explain_every < 0:
        p.error("--clients must be at least 1, --seconds positive and --explain-every not negative")
    demo = None
    url = args.url
    if url is None:
        demo, url = _serve(args.model)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            res = hammer(url, sample_images(Path(tmp)), args.clients, args.seconds, args.explain_every)
    finally:
        if demo is not None:
            demo.close()
    print(report(res, args.clients))
    return 1 if res.n_errors else 0


if __name__ == "__main__":
    sys.exit(main())
