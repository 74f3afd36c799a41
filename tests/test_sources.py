"""The sources on their own, against a loopback iNaturalist API and a fake ddgs client (no network)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from tests.servers import Reply, fake_inaturalist, jpeg_reply, serve
from train.download import HttpConfig
from train.gather import GatherConfig, gather, main
from train.sources import DDG_IMAGE_BACKEND, ClassSpec, DDGSource, INaturalistSource, SourceError

LOCAL = HttpConfig(allow_hosts=frozenset({"127.0.0.1"}))


def inat(base: str, **kw) -> INaturalistSource:
    return INaturalistSource(base_url=base + "/v1", min_interval=0, http=LOCAL, **kw)


def observation(base: str, i: int, lic: str = "cc-by", user: str = "Ada") -> dict:
    return {
        "id": i,
        "uri": f"https://www.inaturalist.org/observations/{i}",
        "user": {"login": user.lower(), "name": user},
        "photos": [{"id": i, "license_code": lic, "url": f"{base}/photos/{i}/square.jpg"}],
    }


def json_reply(body) -> Reply:
    return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


def taxon_names(server) -> list[str]:
    from urllib.parse import parse_qs, urlsplit

    return [parse_qs(urlsplit(p).query, keep_blank_values=True)["taxon_name"][0] for _, p in server.log]


# ---------------------------------------------------------------- which taxon iNaturalist is asked for


@pytest.mark.parametrize(
    ("spec", "taxon"),
    [
        (ClassSpec("viper"), "viper"),
        (ClassSpec("bush_viper"), "bush viper"),
        (ClassSpec("viper", name="African bush viper"), "African bush viper"),
        (ClassSpec("viper", name="African bush viper", scientific="Atheris squamigera"), "Atheris squamigera"),
        (ClassSpec("viper", name="  ", scientific=" "), "viper"),
    ],
)
def test_inaturalist_asks_for_scientific_else_common_name_else_label(spec, taxon):
    with serve() as s:
        fake_inaturalist(s, [])
        assert list(inat(s.base).candidates(spec, 5)) == []
        assert taxon_names(s) == [taxon]


def test_inaturalist_never_sends_an_empty_taxon_name():
    src = inat("http://127.0.0.1:9")
    with pytest.raises(SourceError, match="iNaturalist"):
        list(src.candidates(ClassSpec(""), 5))


def test_label_only_class_in_a_config_filters_by_its_label(tmp_path):
    with serve() as s:
        fake_inaturalist(s, [])
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f"""
out = "{(tmp_path / "out").as_posix()}"
count = 2
[inaturalist]
base_url = "{s.base}/v1"
min_interval = 0
[download]
allow_hosts = ["127.0.0.1"]
[[classes]]
label = "viper"
[[classes]]
label = "python"
"""
        )
        assert main(["--config", str(cfg)]) == 1  # the fake has no photos: both classes end empty, which fails
        assert taxon_names(s) == ["viper", "python"]


# ---------------------------------------------------------------- malformed iNaturalist answers


@pytest.mark.parametrize(
    "body",
    [
        {"total_results": 1, "results": ["unexpected"]},
        {"total_results": 1, "results": "unexpected"},
        {"total_results": "many", "results": []},
        {"total_results": 1},
        ["unexpected"],
        "unexpected",
        None,
    ],
)
def test_a_malformed_inaturalist_answer_stops_the_source_naming_it_and_its_endpoint(body, caplog):
    with serve({"/v1/observations": json_reply(body)}) as s:
        src = inat(s.base)
        with caplog.at_level(logging.WARNING):
            assert list(src.candidates(ClassSpec("viper", scientific="Atheris squamigera"), 5)) == []
    assert "iNaturalist" in caplog.text and f"{s.base}/v1/observations" in caplog.text
    assert "expected shape" in caplog.text and "attribute" not in caplog.text
    assert src.problems == ["iNaturalist Atheris squamigera page 1: bad_api_response"]


def test_malformed_observations_and_photos_are_skipped_with_a_count(caplog):
    with serve() as s:
        good = [observation(s.base, 1), observation(s.base, 2, user="Bo")]
        bad_entries = [
            "unexpected",
            None,
            {"id": 3, "photos": "not a list"},
            {"id": 4, "user": "Cy", "photos": ["not a photo", {"license_code": "cc-by", "url": 5}]},
            {"id": 5, "photos": [{"license_code": 7, "url": f"{s.base}/photos/5/square.jpg"}]},
            {"id": 6, "user": ["x"], "uri": 12, "photos": [{"license_code": "cc0", "url": f"{s.base}/p/6/small.jpg"}]},
        ]
        body = {"total_results": len(good) + len(bad_entries), "results": bad_entries[:3] + good + bad_entries[3:]}
        s.routes["/v1/observations"] = json_reply(body)
        src = inat(s.base)
        with caplog.at_level(logging.WARNING):
            cands = list(src.candidates(ClassSpec("viper", scientific="Atheris squamigera"), 10))
    assert [(c.author, c.page_url, c.image_url) for c in cands] == [
        ("Ada", "https://www.inaturalist.org/observations/1", f"{s.base}/photos/1/medium.jpg"),
        ("Bo", "https://www.inaturalist.org/observations/2", f"{s.base}/photos/2/medium.jpg"),
        ("", "https://www.inaturalist.org/observations/6", f"{s.base}/p/6/medium.jpg"),  # user and uri of wrong type
    ]
    # 3 bad observations ("unexpected", None, photos not a list) and 3 bad photos (not a dict, url 5, licence 7)
    assert src.problems == ["iNaturalist Atheris squamigera: skipped 6 malformed result(s)"]
    assert "iNaturalist: skipped 6 malformed" in caplog.text and f"{s.base}/v1/observations" in caplog.text


def test_after_a_malformed_inaturalist_answer_the_next_source_still_fills_the_class(tmp_path):
    with serve({"/img1.jpg": jpeg_reply(seed=1), "/img2.jpg": jpeg_reply(seed=2)}) as s:
        s.routes["/v1/observations"] = json_reply({"total_results": 1, "results": ["unexpected"]})
        urls = tmp_path / "list.txt"
        urls.write_text(f"viper {s.url('/img1.jpg')}\nviper {s.url('/img2.jpg')}\n")
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f"""
out = "{(tmp_path / "out").as_posix()}"
count = 2
sources = ["inaturalist", "urls"]
[inaturalist]
base_url = "{s.base}/v1"
min_interval = 0
[urls]
file = "{urls.as_posix()}"
[download]
allow_hosts = ["127.0.0.1"]
[[classes]]
label = "viper"
scientific = "Atheris squamigera"
"""
        )
        assert main(["--config", str(cfg)]) == 0
        assert s.hits["/img1.jpg"] == 1 and s.hits["/img2.jpg"] == 1


# ---------------------------------------------------------------- DuckDuckGo through ddgs


class FakeDDGS:
    """Stands in for ddgs.DDGS: records each call, answers `results`."""

    def __init__(self, results):
        self.results, self.calls = results, []

    def images(self, query, **kw):
        self.calls.append((query, kw))
        return self.results


def ddg_result(image: str, **kw) -> dict:
    # shaped like a ddgs 9.16 DuckDuckGo images result: `source` is the search backend, not the photographer
    return {
        "title": "Burmese python",
        "image": image,
        "thumbnail": "",
        "url": "https://www.flickr.com/photos/someone/123",
        "height": 480,
        "width": 640,
        "source": "Bing",
        **kw,
    }


def test_ddgs_asks_duckduckgo_itself_with_the_licence_filter():
    fake = FakeDDGS([])
    src = DDGSource(client=fake, license_image="Share")
    list(src.candidates(ClassSpec("python", "Burmese python", "Python bivittatus"), 5))
    assert fake.calls and all(kw["backend"] == "duckduckgo" and kw["license_image"] == "Share" for _, kw in fake.calls)


def test_the_ddgs_backend_is_an_image_engine_of_the_installed_ddgs():
    from ddgs.engines import ENGINES

    engine = ENGINES["images"][DDG_IMAGE_BACKEND]  # a KeyError here: ddgs would silently fall back to "auto"
    # the DuckDuckGo engine turns license_image into its `f` filter (the Bing engine drops it); no network: the
    # vqd token it would fetch first is stubbed
    engine_obj = engine.__new__(engine)
    engine_obj._get_vqd = lambda q: "vqd"
    got = engine_obj.build_payload("Python bivittatus", "wt-wt", "moderate", None, license_image="any")
    assert "license:any" in got["f"]


def test_ddgs_default_client_is_called_with_backend_duckduckgo(monkeypatch):
    import ddgs

    seen = []

    class Recorder:
        def images(self, query, **kw):
            seen.append(kw)
            return []

    monkeypatch.setattr(ddgs, "DDGS", Recorder)
    src = DDGSource()
    list(src.candidates(ClassSpec("python", scientific="Python bivittatus"), 5))
    assert seen and seen[0]["backend"] == "duckduckgo" and seen[0]["license_image"] == "any"


def test_ddgs_backend_name_is_not_recorded_as_the_author(tmp_path):
    with serve({"/p.jpg": jpeg_reply(seed=3)}) as s:
        src = DDGSource(client=FakeDDGS([ddg_result(s.url("/p.jpg"))]))
        out = tmp_path / "out"
        gather(
            GatherConfig(out, [ClassSpec("python", "Burmese python", "Python bivittatus")], [src], count=1, http=LOCAL)
        )
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["author"] == "" and row["page_url"] == "https://www.flickr.com/photos/someone/123"
    assert "Bing" not in row["attribution"]
    assert "Bing" not in Path(out / "ATTRIBUTION.md").read_text()


def test_malformed_ddgs_results_are_skipped_not_fatal(caplog):
    results = [
        "unexpected",
        None,
        {"title": "no image"},
        {"image": 42},
        ddg_result("http://127.0.0.1:9/a.jpg", title=None, url=["x"]),
        ddg_result("http://127.0.0.1:9/b.jpg"),
    ]
    src = DDGSource(client=FakeDDGS(results))
    with caplog.at_level(logging.WARNING):
        cands = list(src.candidates(ClassSpec("python", queries=("python",)), 5))
    assert [(c.image_url, c.page_url, c.author) for c in cands] == [
        ("http://127.0.0.1:9/a.jpg", "", ""),
        ("http://127.0.0.1:9/b.jpg", "https://www.flickr.com/photos/someone/123", ""),
    ]
    assert cands[0].attribution.startswith("(http://127.0.0.1:9/a.jpg)")
    assert "skipped 4 malformed" in caplog.text and "DuckDuckGo" in caplog.text


@pytest.mark.parametrize("answer", [{"results": []}, 42, "text"])
def test_a_ddgs_answer_that_is_not_a_list_is_reported(answer, caplog):
    src = DDGSource(client=FakeDDGS(answer))
    with caplog.at_level(logging.WARNING):
        assert list(src.candidates(ClassSpec("python", queries=("python",)), 5)) == []
    assert "DuckDuckGo" in caplog.text and "instead of a list" in caplog.text
    assert len(src.problems) == 1 and src.problems[0].startswith("DuckDuckGo 'python': malformed answer")
