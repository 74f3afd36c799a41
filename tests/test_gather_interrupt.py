"""Ctrl-C during gather: it stops at once, keeps what finished, exits 130 without a traceback, and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.gathered import rows_of
from tests.servers import Reply, image_bytes, jpeg_reply, serve
from train import gather as g
from train.download import HostGate, HttpConfig
from train.sources import Candidate, ClassSpec

ROOT = Path(__file__).resolve().parents[1]
HANG = 60.0  # a download that would take this long is never waited for


def until(check, timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_gather(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "train.gather", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def slow_host_run(tmp_path: Path, s, n_slow: int = 8) -> tuple[Path, list[str]]:
    """Two quick images, then slow ones that hang; two downloads at a time, so the quick ones go first."""
    urls = tmp_path / "snake.txt"
    urls.write_text(
        "".join(f"{s.url(f'/fast{i}.jpg')}\n" for i in range(2))
        + "".join(f"{s.url(f'/slow{i}.jpg')}\n" for i in range(n_slow))
    )
    out = tmp_path / "out"
    args = ["--urls", str(urls), "--out", str(out), "--allow-host", "127.0.0.1", "--workers", "2"]
    return out, args


def routes(n_slow: int = 8) -> dict:
    r = {f"/fast{i}.jpg": jpeg_reply(seed=i) for i in range(2)}
    r.update({f"/slow{i}.jpg": jpeg_reply(seed=10 + i, delay=HANG) for i in range(n_slow)})
    return r


def slow_hits(s) -> int:
    return sum(v for k, v in s.hits.items() if k.startswith("/slow"))


@pytest.mark.parametrize("presses", [1, 3])
def test_ctrl_c_stops_at_once_keeps_finished_images_and_exits_130_without_a_traceback(tmp_path, presses):
    with serve(routes()) as s:
        out, args = slow_host_run(tmp_path, s)
        p = start_gather(*args)
        try:
            # the two quick images are recorded, and two slow downloads hold the host's two slots
            until(lambda: (out / "manifest.csv").is_file() and len(rows_of(out)) == 2, what="the quick images")
            until(lambda: slow_hits(s) >= 2, what="the slow downloads to start")
            t0 = time.monotonic()
            for _ in range(presses):
                p.send_signal(signal.SIGINT)
                time.sleep(0.3)
            out_text, err = p.communicate(timeout=30)
            took = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        time.sleep(0.5)
        assert slow_hits(s) == 2  # queued downloads were cancelled; none started after Ctrl-C
    assert p.returncode == 130, err
    assert took < 10, f"took {took:.1f} s to stop"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "stopping… (finished downloads are kept)" in err and err.count("stopping…") == 1
    assert "interrupted; run again to resume" in out_text
    rows = rows_of(out)
    assert sorted(r["image_url"].rsplit("/", 1)[1] for r in rows) == ["fast0.jpg", "fast1.jpg"]
    rep = json.loads((out / "gather_report.json").read_text())
    assert rep["interrupted"] is True and rep["per_class"] == {"snake": 2} and rep["failures"] == {}
    assert (out / "ATTRIBUTION.md").is_file()
    assert not (out / "failures.csv").exists()  # abandoned downloads are not failures: the next run tries them


def test_a_download_that_finished_while_a_source_was_busy_is_kept_on_ctrl_c(tmp_path, monkeypatch):
    """Ctrl-C while gather waits on a source (here a slow search): the download already finished is recorded."""
    photo = tmp_path / "a.jpg"
    photo.write_bytes(image_bytes("JPEG", seed=1))
    done = threading.Event()
    real = g.fetch_candidate

    def fetch_candidate(*a, **kw):
        try:
            return real(*a, **kw)
        finally:
            done.set()

    monkeypatch.setattr(g, "fetch_candidate", fetch_candidate)

    class SlowSearch:
        name = "slow"

        def candidates(self, cls, want):
            yield Candidate(cls.label, "slow", "a.jpg", photo.resolve().as_uri(), local_path=str(photo))
            assert done.wait(30)
            time.sleep(0.3)  # the finished download's future is settled by now
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the next search result is awaited
            time.sleep(HANG)
            yield Candidate(cls.label, "slow", "never", "http://127.0.0.1:9/never.jpg")

    cfg = g.GatherConfig(out=tmp_path / "out", classes=[ClassSpec("viper", "viper")], sources=[SlowSearch()], count=5)
    t0 = time.monotonic()
    rep = g.gather(cfg)
    assert time.monotonic() - t0 < 20
    assert rep["interrupted"] is True and rep["kept_this_run"] == {"viper": 1}
    assert [r["query"] for r in rows_of(tmp_path / "out")] == ["a.jpg"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the run put Ctrl-C back as it was


def test_ctrl_c_while_recording_images_already_in_out_stops_cleanly_and_the_next_run_finishes(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    (out / "viper").mkdir(parents=True)
    for i in range(6):
        (out / "viper" / f"{i}.jpg").write_bytes(image_bytes("JPEG", seed=i))
    src = tmp_path / "photos"
    (src / "viper").mkdir(parents=True)
    (src / "viper" / "x.jpg").write_bytes(image_bytes("JPEG", seed=20))
    before = sorted(p.name for p in (out / "viper").iterdir())
    real = g._adopt
    calls = []

    def adopt(*a):
        calls.append(a)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the signal is handled here, in the main thread
        return real(*a)

    monkeypatch.setattr(g, "_adopt", adopt)
    args = ["--folder", str(src), "--out", str(out), "--quiet"]
    assert g.main(args) == 130
    err = capsys.readouterr().err
    assert "stopping…" in err and "run the same command again" in err and "Traceback" not in err
    assert len(calls) == 3  # it stopped at the next image
    assert not (out / "manifest.csv").exists()
    assert sorted(p.name for p in (out / "viper").iterdir()) == before  # nothing moved, nothing downloaded
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(g, "_adopt", real)
    assert g.main(args) == 0
    assert len(rows_of(out)) == 7


def test_ctrl_c_while_recording_a_large_existing_folder_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    (out / "viper").mkdir(parents=True)
    big = image_bytes("JPEG", size=(600, 400), seed=3)
    for i in range(400):  # the same picture under many names: each is decoded and hashed
        (out / "viper" / f"{i}.jpg").write_bytes(big)
    src = tmp_path / "photos"
    (src / "viper").mkdir(parents=True)
    (src / "viper" / "x.jpg").write_bytes(image_bytes("JPEG", seed=20))
    p = start_gather("--folder", str(src), "--out", str(out))
    try:
        until(lambda: (out / "classes.json").is_file(), what="the run to start")  # written just before the recording
        time.sleep(0.2)
        for _ in range(3):
            p.send_signal(signal.SIGINT)
            time.sleep(0.2)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode in (130, 0), err  # 0: it had finished before the first Ctrl-C, on a fast machine
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert len(list((out / "viper").iterdir())) == 400 + (p.returncode == 0)


# ---------------------------------------------------------------- the stop flag in the download tasks


def test_a_task_that_has_not_started_its_request_gives_up_when_the_run_is_stopping(tmp_path):
    stop = threading.Event()
    with serve({"/a.jpg": jpeg_reply(seed=1)}) as s:
        http = HttpConfig(allow_hosts=frozenset({"127.0.0.1"}), per_host=1)
        gate = HostGate(1)
        cand = Candidate("viper", "urls", "u.txt", s.url("/a.jpg"))
        stop.set()
        with pytest.raises(g.Stopped):  # queued before the stop, started after it
            g.fetch_candidate(cand, http, gate, stop)
        stop.clear()
        result: list = []
        with gate("127.0.0.1"):  # the host is busy: the task waits for its turn ...
            t = threading.Thread(target=lambda: result.append(_run(g.fetch_candidate, cand, http, gate, stop)))
            t.start()
            time.sleep(0.3)
            stop.set()  # ... and the run stops meanwhile
        t.join(10)
        assert isinstance(result[0], g.Stopped)
        assert s.hits["/a.jpg"] == 0
        stop.clear()
        assert g.fetch_candidate(cand, http, gate, stop).width > 0  # without a stop it downloads as before


def test_a_task_waiting_to_retry_gives_up_at_once_when_the_run_is_stopping():
    stop = threading.Event()
    with serve({"/busy.jpg": Reply(503, b"")}) as s:
        http = HttpConfig(allow_hosts=frozenset({"127.0.0.1"}), retries=3, backoff=30.0, max_retry_wait=60.0)
        cand = Candidate("viper", "urls", "u.txt", s.url("/busy.jpg"))
        result: list = []
        t = threading.Thread(target=lambda: result.append(_run(g.fetch_candidate, cand, http, HostGate(2), stop)))
        t.start()
        until(lambda: s.hits["/busy.jpg"] == 1, 10, "the first try")
        t0 = time.monotonic()
        stop.set()
        t.join(10)
        assert time.monotonic() - t0 < 5 and isinstance(result[0], g.Stopped)
        assert s.hits["/busy.jpg"] == 1


def _run(fn, *a):
    try:
        return fn(*a)
    except Exception as e:  # noqa: BLE001 - handed back to the test
        return e
