"""The gathering stage end to end against loopback hosts: provenance, failure report, resume after a kill."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snake_model.loader import load_image
from tests.servers import Reply, fake_inaturalist, image_bytes, jpeg_reply, serve
from train import manifest as mf
from train.download import HttpConfig
from train.gather import GatherConfig, gather, load_config, main
from train.sources import ClassSpec, DDGSource, INaturalistSource, URLListSource

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--allow-host", "127.0.0.1", "--timeout", "0.5", "--connect-timeout", "2", "--retries", "1"]


def manifest_rows(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def files_on_disk(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for d in mf.class_dirs(out) for p in d.iterdir() if p.is_file()}


def assert_manifest_matches_disk(out: Path) -> list[dict]:
    rows = manifest_rows(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "a file is recorded twice"
    assert set(paths) == files_on_disk(out), "manifest and disk disagree"
    assert not list(out.rglob(f"{mf.TMP_PREFIX}*")), "a partial temp file was left behind"
    for r in rows:
        data = (out / r["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        load_image(data)  # every kept file decodes fully
    shas = [(r["class"], r["sha256"]) for r in rows]
    assert len(shas) == len(set(shas)), "an image is kept twice in one class"
    return rows


def hostile_routes() -> dict:
    png = image_bytes("PNG", seed=7)
    truncated = image_bytes("JPEG", size=(120, 90), seed=8)[:-400]
    return {
        "/good1.jpg": jpeg_reply(seed=1),
        "/good2.jpg": jpeg_reply(seed=2),
        "/png-as-jpeg.jpg": Reply(200, png, {"Content-Type": "image/jpeg"}),
        "/page.jpg": Reply(
            200, b"<!doctype html><html><body>Hotlinking denied</body></html>", {"Content-Type": "image/jpeg"}
        ),
        "/busy.jpg": Reply(429, b"", {"Retry-After": "1"}, times=1, then=jpeg_reply(seed=3)),
        "/slow.jpg": jpeg_reply(seed=4, body_delay=3.0),
        "/huge.jpg": Reply(200, b"\xff\xd8\xff" + b"\0" * 400_000, {"Content-Type": "image/jpeg"}, no_length=True),
        "/truncated.jpg": Reply(200, truncated, {"Content-Type": "image/jpeg"}),
        "/secret": jpeg_reply(seed=5),
    }


def test_gather_keeps_real_images_and_reports_each_hostile_answer_by_reason(tmp_path):
    with serve(hostile_routes()) as s:
        s.routes["/to-metadata.jpg"] = Reply(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
        s.routes["/to-loopback.jpg"] = Reply(302, b"", {"Location": f"http://2130706433:{s.port}/secret"})
        names = [
            "good1.jpg", "good2.jpg", "png-as-jpeg.jpg", "page.jpg", "missing.jpg", "busy.jpg", "slow.jpg",
            "huge.jpg", "truncated.jpg", "to-metadata.jpg", "to-loopback.jpg",
        ]  # fmt: skip
        urls = tmp_path / "urls.txt"
        urls.write_text("# hostile hosts\n" + "".join(f"{s.url('/' + n)}\n" for n in names))
        out = tmp_path / "out"
        rc = main(["--urls", str(urls), "--class", "viper", "--out", str(out), "--max-bytes", "200000", *FAST])
        assert rc == 0
        assert s.hits["/secret"] == 0, "a redirect reached a loopback address it should not"
        assert s.hits["/busy.jpg"] == 2

    rows = assert_manifest_matches_disk(out)
    kept = {r["image_url"].rsplit("/", 1)[1] for r in rows}
    assert kept == {"good1.jpg", "good2.jpg", "png-as-jpeg.jpg", "busy.jpg"}
    png_row = next(r for r in rows if r["image_url"].endswith("png-as-jpeg.jpg"))
    assert png_row["path"].endswith(".png")  # content decides, not the name or the Content-Type
    assert all(r["licence"] == "unknown" and r["use"] == "train-only" for r in rows)
    assert all(len(r["phash"]) == 16 and int(r["width"]) > 0 and r["fetched_at"] for r in rows)

    report = json.loads((out / "gather_report.json").read_text())
    assert report["failures"] == {
        "not_an_image": 1,
        "http_404": 1,
        "timeout": 1,
        "too_large": 1,
        "corrupt_image": 1,
        "blocked_redirect": 2,
    }
    attribution = (out / "ATTRIBUTION.md").read_text()
    assert all(r["path"] in attribution for r in rows)


def test_a_second_run_skips_finished_and_permanently_failed_urls(tmp_path):
    with serve({"/a.jpg": jpeg_reply(seed=1), "/b.jpg": jpeg_reply(seed=2)}) as s:
        urls = tmp_path / "urls.txt"
        urls.write_text(f"viper {s.url('/a.jpg')}\nviper {s.url('/b.jpg')}\nviper {s.url('/gone.jpg')}\n")
        out = tmp_path / "out"
        args = ["--urls", str(urls), "--out", str(out), *FAST]
        assert main(args) == 0
        before = dict(s.hits)
        assert main(args) == 0
        assert dict(s.hits) == before, "the second run fetched again"
        report = json.loads((out / "gather_report.json").read_text())
        assert report["skipped"] == {"already_done": 2, "failed_before": 1}
        assert main([*args, "--retry-failed"]) == 0
        assert s.hits["/gone.jpg"] == 2
    assert len(assert_manifest_matches_disk(out)) == 2


def inat_observations(base: str) -> list[dict]:
    def obs(i, lic, user, n_photos=1):
        photos = [
            {"id": i * 10 + k, "license_code": lic, "url": f"{base}/photos/{i}{k}/square.jpg"} for k in range(n_photos)
        ]
        if lic == "cc-by":
            photos[0]["attribution"] = f"(c) {user}, some rights reserved (CC BY)"
        return {
            "id": i,
            "uri": f"https://www.inaturalist.org/observations/{i}",
            "user": {"login": user.lower(), "name": user},
            "photos": photos,
        }

    return [
        obs(1, "cc-by", "Ada"),
        obs(2, "cc0", "Bo"),
        obs(3, None, "Cy"),  # all rights reserved: never asked for
        obs(4, "cc-by-nc", "Di", n_photos=2),  # one photo per observation is enough
        obs(5, "cc-by-sa", "Ed"),
        obs(6, "cc-by", "Flo"),
    ]


def test_inaturalist_pages_politely_and_records_licence_author_and_observation(tmp_path):
    with serve() as s:
        fake_inaturalist(s, inat_observations(s.base))
        for i in range(1, 7):
            for k in range(2):
                s.routes[f"/photos/{i}{k}/medium.jpg"] = jpeg_reply(seed=i * 2 + k)
        cfg_file = tmp_path / "c.toml"
        cfg_file.write_text(
            f"""
out = "{(tmp_path / "out").as_posix()}"
count = 10
sources = ["inaturalist"]
[inaturalist]
base_url = "{s.base}/v1"
licences = ["cc0", "cc-by", "cc-by-sa", "cc-by-nc"]
per_page = 2
min_interval = 0.2
[download]
allow_hosts = ["127.0.0.1"]
[[classes]]
name = "African bush viper"
scientific = "Atheris squamigera"
"""
        )
        assert main(["--config", str(cfg_file)]) == 0
        api_calls = [t for t, p in s.log if p.startswith("/v1/observations")]
        assert len(api_calls) == 3  # 5 matching observations, 2 per page
        assert all(b - a >= 0.19 for a, b in zip(api_calls, api_calls[1:], strict=False))
        assert "taxon_name=Atheris+squamigera" in next(p for _, p in s.log if p.startswith("/v1/"))
        assert s.hits["/photos/30/medium.jpg"] == 0 and s.hits["/photos/41/medium.jpg"] == 0

    out = tmp_path / "out"
    rows = assert_manifest_matches_disk(out)
    assert all(r["path"].startswith("atheris_squamigera/") for r in rows)
    by_author = {r["author"]: r for r in rows}
    assert set(by_author) == {"Ada", "Bo", "Di", "Ed", "Flo"}
    assert by_author["Di"]["licence"] == "cc-by-nc" and by_author["Di"]["use"] == "train-only"
    assert {by_author[a]["use"] for a in ("Ada", "Bo", "Ed", "Flo")} == {"publishable"}
    assert by_author["Ada"]["page_url"] == "https://www.inaturalist.org/observations/1"
    assert by_author["Ada"]["attribution"] == "(c) Ada, some rights reserved (CC BY)"
    assert by_author["Ada"]["query"] == "Atheris squamigera"
    text = (out / "ATTRIBUTION.md").read_text()
    assert "Flo" in text and "https://www.inaturalist.org/observations/6" in text and "4 publishable" in text


def test_inaturalist_stops_asking_once_the_class_has_enough(tmp_path):
    with serve() as s:
        fake_inaturalist(s, inat_observations(s.base))
        for i in range(1, 7):
            s.routes[f"/photos/{i}0/medium.jpg"] = jpeg_reply(seed=i)
        src = INaturalistSource(
            base_url=s.base + "/v1", per_page=2, min_interval=0, http=HttpConfig(allow_hosts=frozenset({"127.0.0.1"}))
        )
        cfg = GatherConfig(tmp_path / "o", [ClassSpec("a", scientific="A b")], [src], count=2, workers=1, http=src.http)
        rep = gather(cfg)
        assert rep["per_class"] == {"a": 2} and s.hits["/v1/observations"] == 1


class FakeDDGS:
    """Stands in for ddgs.DDGS: rate-limits the first `limited` calls, then answers from `results`."""

    def __init__(self, results: list[dict], limited: int = 0):
        self.results, self.limited, self.calls = results, limited, []

    def images(self, query, **kw):
        from ddgs.exceptions import RatelimitException

        self.calls.append((query, kw))
        if len(self.calls) <= self.limited:
            raise RatelimitException("202 Ratelimit")
        return self.results


def test_ddgs_results_are_downloaded_with_unknown_licence_after_rate_limit_backoff(tmp_path):
    waits = []
    with serve({"/d1.jpg": jpeg_reply(seed=1), "/d2.jpg": jpeg_reply(seed=2)}) as s:
        results = [
            {"title": "Bush viper", "image": s.url("/d1.jpg"), "url": "https://example.org/viper", "source": "Bing"},
            {"title": "Bush viper 2", "image": s.url("/d2.jpg"), "url": "https://example.org/viper2", "source": "Bing"},
        ]
        fake = FakeDDGS(results, limited=2)
        src = DDGSource(client=fake, license_image="Share", sleep=waits.append, backoff=2, retries=3)
        spec = ClassSpec("atheris_squamigera", "African bush viper", "Atheris squamigera", ("bush viper",))
        cfg = GatherConfig(
            tmp_path / "o", [spec], [src], count=5, http=HttpConfig(allow_hosts=frozenset({"127.0.0.1"}))
        )
        rep = gather(cfg)
    assert waits == [2, 4]  # bounded exponential backoff, no busy loop
    assert fake.calls[0][0] == "bush viper" and fake.calls[0][1]["license_image"] == "Share"
    rows = assert_manifest_matches_disk(tmp_path / "o")
    assert rep["per_class"] == {"atheris_squamigera": 2}
    assert {r["licence"] for r in rows} == {"unknown"} and {r["source"] for r in rows} == {"ddgs"}
    assert {r["page_url"] for r in rows} == {"https://example.org/viper", "https://example.org/viper2"}


def test_ddgs_gives_up_with_a_clear_message_when_rate_limited_every_time(caplog):
    fake = FakeDDGS([], limited=10**6)
    waits = []
    src = DDGSource(client=fake, sleep=waits.append, retries=3, backoff=5, max_wait=12)
    assert list(src.candidates(ClassSpec("x", "x snake", "X y"), 10)) == []
    assert len(fake.calls) == 2 * 4  # two default queries, four tries each
    assert max(waits) == 12 and len(waits) == 2 * 3
    assert "rate-limited" in caplog.text and "giving up" in caplog.text
    assert src.problems == [
        "DuckDuckGo 'X y': rate-limited 4 times",
        "DuckDuckGo 'x snake snake': rate-limited 4 times",
    ]


def test_folder_import_checks_content_and_keeps_provenance(tmp_path):
    src = tmp_path / "scrape"
    (src / "cobra").mkdir(parents=True)
    (src / "krait").mkdir()
    (src / "cobra" / "a.jpg").write_bytes(image_bytes("JPEG", seed=1))
    (src / "cobra" / "a_copy.jpg").write_bytes(image_bytes("JPEG", seed=1))  # exact duplicate
    (src / "cobra" / "really_png.jpg").write_bytes(image_bytes("PNG", seed=2))
    (src / "cobra" / "page.jpg").write_bytes(b"<html>blocked</html>")
    (src / "krait" / "k.jpeg").write_bytes(image_bytes("JPEG", seed=3))
    (src / "krait" / "broken.jpg").write_bytes(image_bytes("JPEG", size=(100, 80), seed=4)[:300])
    out = tmp_path / "out"
    assert main(["--folder", str(src), "--out", str(out), "--licence", "CC BY 4.0"]) == 0
    rows = assert_manifest_matches_disk(out)
    queries = sorted(r["query"] for r in rows)
    assert len(queries) == 3 and queries[0] in ("cobra/a.jpg", "cobra/a_copy.jpg")  # one of the two copies
    assert queries[1:] == ["cobra/really_png.jpg", "krait/k.jpeg"]
    # CC BY needs someone to credit: without --author the photos may train, not be published
    assert {r["licence"] for r in rows} == {"cc-by"} and {r["use"] for r in rows} == {"train-only"}
    rep = json.loads((out / "gather_report.json").read_text())
    assert rep["failures"] == {"not_an_image": 1, "corrupt_image": 1}
    assert rep["skipped"] == {"duplicate_in_class": 1}
    assert main(["--folder", str(src), "--out", str(out), "--licence", "CC BY 4.0", "--author", "Ana Ruiz"]) == 0
    rows = assert_manifest_matches_disk(out)
    assert len(rows) == 3 and {r["use"] for r in rows} == {"train-only"}  # rows already recorded keep their author
    out2 = tmp_path / "out2"
    assert main(["--folder", str(src), "--out", str(out2), "--licence", "CC BY 4.0", "--author", "Ana Ruiz"]) == 0
    rows = assert_manifest_matches_disk(out2)
    assert {(r["author"], r["use"]) for r in rows} == {("Ana Ruiz", "publishable")}


def test_publishable_only_skips_unknown_licences(tmp_path):
    with serve({"/a.jpg": jpeg_reply()}) as s:
        urls = tmp_path / "u.csv"
        urls.write_text(f"url,label,licence,author\n{s.url('/a.jpg')},x,cc-by-nc,Al\n{s.url('/a.jpg')}?2,x,cc0,Bea\n")
        out = tmp_path / "o"
        assert main(["--urls", str(urls), "--out", str(out), "--publishable-only", *FAST]) == 0
        assert s.hits["/a.jpg"] == 1
    rows = assert_manifest_matches_disk(out)
    assert [(r["licence"], r["author"], r["use"]) for r in rows] == [("cc0", "Bea", "publishable")]


def test_a_crash_between_writing_an_image_and_recording_it_is_repaired_on_resume(tmp_path, monkeypatch):
    with serve({f"/{i}.jpg": jpeg_reply(seed=i) for i in range(6)}) as s:
        urls = tmp_path / "u.txt"
        urls.write_text("".join(f"x {s.url(f'/{i}.jpg')}\n" for i in range(6)))
        http = HttpConfig(allow_hosts=frozenset({"127.0.0.1"}))
        cfg = GatherConfig(tmp_path / "o", [ClassSpec("x")], [URLListSource(urls)], count=None, workers=2, http=http)
        real_append, calls = mf.append_row, []

        def dying_append(out, row):
            calls.append(row)
            if len(calls) == 3:
                raise RuntimeError("power cut")
            real_append(out, row)

        monkeypatch.setattr(mf, "append_row", dying_append)
        with pytest.raises(RuntimeError):
            gather(cfg)
        out = tmp_path / "o"
        assert len(files_on_disk(out)) == 3 and len(manifest_rows(out)) == 2  # one orphan
        (out / "x" / f"{mf.TMP_PREFIX}stale{mf.TMP_SUFFIX}").write_bytes(b"\xff\xd8half")
        with open(out / "manifest.csv", "a") as fh:
            fh.write("x,urls,torn")  # a kill in the middle of an append
        monkeypatch.setattr(mf, "append_row", real_append)
        rep = gather(cfg)
    assert rep["reconciled"] == {"temp_files_removed": 1, "orphans_quarantined": 1}
    assert len(list((out / mf.QUARANTINE / "orphans").rglob("*.jpg"))) == 1  # kept, not deleted
    assert rep["per_class"] == {"x": 6}
    assert len(assert_manifest_matches_disk(out)) == 6


def test_a_run_killed_mid_download_resumes_without_partial_files_or_duplicates(tmp_path):
    n = 14
    with serve({f"/{i}.jpg": jpeg_reply(seed=i, delay=0.25) for i in range(n)}) as s:
        urls = tmp_path / "u.txt"
        urls.write_text("".join(f"x {s.url(f'/{i}.jpg')}\n" for i in range(n)))
        out = tmp_path / "o"
        cmd = [sys.executable, "-m", "train.gather", "--urls", str(urls), "--out", str(out), "--workers", "3", *FAST]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if (out / "manifest.csv").exists() and len((out / "manifest.csv").read_text().splitlines()) >= 4:
                    break
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        done_before = len(manifest_rows(out))
        assert 3 <= done_before < n, "the kill did not land mid-run"
        for r in manifest_rows(out):  # what the manifest says is already true on disk
            assert (out / r["path"]).is_file()
        for route in s.routes.values():
            route.delay = 0
        assert main(["--urls", str(urls), "--out", str(out), *FAST]) == 0
    rows = assert_manifest_matches_disk(out)
    assert len(rows) == n and len({r["image_url"] for r in rows}) == n


def test_the_default_config_names_the_four_species():
    cfg = load_config(ROOT / "train" / "configs" / "snakes4.toml")
    assert [c.scientific for c in cfg.classes] == [
        "Atheris squamigera",
        "Ahaetulla prasina",
        "Python bivittatus",
        "Eunectes murinus",
    ]
    assert [c.label for c in cfg.classes][0] == "atheris_squamigera"
    assert cfg.count == 150 and [s.name for s in cfg.sources] == ["inaturalist"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("count = 'many'\n[[classes]]\nname='a'", "count must be a positive integer"),
        ("[[classes]]\nname='a'\nscientfic='typo'", "unknown key(s) scientfic"),
        ("sources=['bing']\n[[classes]]\nname='a'", "unknown source 'bing'"),
        ("out = [", "is not valid TOML"),
        ("sources=['urls']\n[urls]\nfile='/nonexistent/urls.txt'\n[[classes]]\nname='a'", "cannot read the URL list"),
        ("workers = 0\n[[classes]]\nname='a'", "workers must be a positive integer, not 0"),
        ("[download]\nread_timeout = -1\n[[classes]]\nname='a'", "read_timeout must be a number more than 0"),
        ("[download]\nmax_bytes = 'big'\n[[classes]]\nname='a'", "max_bytes must be a whole number at least 1"),
        ("[download]\nper_host = 0\n[[classes]]\nname='a'", "per_host must be a whole number at least 1"),
        ("download = 5\n[[classes]]\nname='a'", "[download] must be a table"),
        ("[inaturalist]\nper_page = 'lots'\n[[classes]]\nname='a'", "per_page must be a whole number at least 1"),
        ("sources=['ddgs']\n[ddgs]\noversample = 'x'\n[[classes]]\nname='a'", "oversample must be a number"),
        ("[[classes]]\nlabel='../escape'", "cannot be a folder name"),
        ("sources = [1]\n[[classes]]\nname='a'", "sources must be a list of names"),
    ],
)
def test_bad_configs_fail_with_a_clear_message_and_no_traceback(tmp_path, capsys, content, message):
    f = tmp_path / "bad.toml"
    f.write_text(content)
    assert main(["--config", str(f), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_inputs_fail_with_a_clear_message(tmp_path, capsys):
    assert main([]) == 1
    assert main(["--folder", str(tmp_path / "nope")]) == 1
    assert main(["--config", str(tmp_path / "nope.toml")]) == 1
    err = capsys.readouterr().err
    assert "nothing to gather" in err and "is not a folder" in err and "cannot read config" in err


def test_files_dropped_into_the_output_by_hand_are_adopted_or_set_aside(tmp_path):
    src = tmp_path / "scrape"
    (src / "cobra").mkdir(parents=True)
    (src / "cobra" / "a.jpg").write_bytes(image_bytes("JPEG", seed=1))
    out = tmp_path / "out"
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    (out / "cobra" / "mine.jpg").write_bytes(image_bytes("JPEG", seed=9))
    (out / "cobra" / "notes.jpg").write_bytes(b"<html>not a photo</html>")
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    rows = assert_manifest_matches_disk(out)
    adopted = [r for r in rows if r["source"] == "adopted"]
    assert [r["path"] for r in adopted] == ["cobra/mine.jpg"] and adopted[0]["use"] == "train-only"
    assert (out / "_quarantine" / "unrecorded" / "cobra" / "notes.jpg").is_file()


def test_a_manifest_not_in_gathers_format_stops_the_run_before_any_image_moves(tmp_path, capsys):
    src = tmp_path / "scrape"
    (src / "cobra").mkdir(parents=True)
    (src / "cobra" / "a.jpg").write_bytes(image_bytes("JPEG", seed=1))
    out = tmp_path / "out"
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    before = files_on_disk(out)
    manifest = out / "manifest.csv"
    text = manifest.read_text().replace(",", ";")  # re-saved by a spreadsheet with another separator
    manifest.write_text(text)
    assert main(["--folder", str(src), "--out", str(out)]) == 1
    assert "not in gather's format" in capsys.readouterr().err
    assert files_on_disk(out) == before and manifest.read_text() == text
    manifest.unlink()  # no manifest at all: the gathered images stay where they are and are recorded again
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    assert files_on_disk(out) == before and not (out / mf.QUARANTINE).exists()
    assert {r["path"] for r in assert_manifest_matches_disk(out)} == before


def test_url_list_labels_that_are_not_folder_names_are_refused(tmp_path, capsys):
    for line in (
        "../../etc http://127.0.0.1:9/a.jpg",
        "_trash http://127.0.0.1:9/a.jpg",
        ".hidden http://127.0.0.1:9/a.jpg",
    ):
        urls = tmp_path / "u.txt"
        urls.write_text(line + "\n")
        assert main(["--urls", str(urls), "--out", str(tmp_path / "o"), "--allow-host", "127.0.0.1"]) == 1
        assert "cannot be a folder name" in capsys.readouterr().err
    assert not (tmp_path / "etc").exists()


def test_a_broken_classes_json_is_reported_not_replaced(tmp_path, capsys):
    src = tmp_path / "scrape"
    (src / "cobra").mkdir(parents=True)
    (src / "cobra" / "a.jpg").write_bytes(image_bytes("JPEG", seed=1))
    out = tmp_path / "out"
    out.mkdir()
    (out / "classes.json").write_text('{"cobra": {"venomous": true},')  # a hand edit gone wrong
    assert main(["--folder", str(src), "--out", str(out)]) == 1
    assert "classes.json is not valid JSON" in capsys.readouterr().err
    assert (out / "classes.json").read_text() == '{"cobra": {"venomous": true},'


def test_a_url_file_without_labels_names_its_class_after_itself(tmp_path):
    with serve({"/a.jpg": jpeg_reply()}) as s:
        urls = tmp_path / "Bush viper.txt"
        urls.write_text(s.url("/a.jpg") + "\n")
        assert main(["--urls", str(urls), "--out", str(tmp_path / "o"), *FAST]) == 0
    assert [r["path"].split("/")[0] for r in assert_manifest_matches_disk(tmp_path / "o")] == ["bush_viper"]
