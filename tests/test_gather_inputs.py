"""gather against awkward inputs: clean decisions, foreign output folders, odd names, mistyped configs, licences."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from tests.gathered import make_tree, rows_of, sha, shas_in
from tests.servers import Reply, image_bytes, jpeg_reply, serve
from train import manifest as mf
from train.decisions import Decisions
from train.gather import main
from train.sources import SourceError, check_label

FAST = ["--allow-host", "127.0.0.1", "--timeout", "0.5", "--connect-timeout", "2", "--retries", "1"]


def report(out: Path) -> dict:
    return json.loads((out / "gather_report.json").read_text())


def check_consistent(out: Path, folders: list[str] | None = None) -> list[dict]:
    """Every manifest row names an existing file with that sha, and every image in a class folder is recorded."""
    rows = rows_of(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths))
    for r in rows:
        assert sha(out / r["path"]) == r["sha256"]
    dirs = [out / f for f in folders] if folders is not None else mf.class_dirs(out)
    on_disk = {p.relative_to(out).as_posix() for d in dirs for p in d.glob("*.jpg") if mf.usable_name(p.name)}
    assert on_disk <= set(paths)
    return rows


# ---------------------------------------------------------------- F1: clean decisions and quotas


def test_a_second_gather_keeps_relabel_and_not_a_snake_decisions(tmp_path, capsys):
    src = make_tree(tmp_path / "src", {"viper": [1, 2, 3], "boa": [4]})
    out = tmp_path / "data"
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    x, y, z = sorted(p.relative_to(out).as_posix() for p in (out / "viper").iterdir())
    x_sha, y_sha = sha(out / x), sha(out / y)
    d = Decisions(out)
    d.decide(x, "relabel", "boa")
    d.decide(y, "not_snake")
    capsys.readouterr()
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "viper: 1 images (0 new)" in text and "boa: 2 images (0 new)" in text
    assert shas_in(out / "viper") == {sha(out / z)}  # neither decision was undone
    assert x_sha in shas_in(out / "boa") and y_sha not in shas_in(out / "viper")
    assert (out / "_not_snake" / Path(y).name).is_file()
    rep = report(out)
    assert rep["per_class"] == {"boa": 2, "viper": 1} and rep["kept_this_run"] == {}
    check_consistent(out)


def test_a_deleted_image_is_replaced_by_a_new_one_not_fetched_again(tmp_path, capsys):
    src = make_tree(tmp_path / "src", {"boa": [1, 2, 3, 4]})
    out = tmp_path / "data"
    args = ["--folder", str(src), "--out", str(out), "--count", "2"]
    assert main(args) == 0
    first = sorted(p.relative_to(out).as_posix() for p in (out / "boa").iterdir())
    gone = sha(out / first[0])
    Decisions(out).decide(first[0], "delete")
    capsys.readouterr()
    assert main(args) == 0
    assert "boa: 2 of 2 images (1 new)" in capsys.readouterr().out
    now = shas_in(out / "boa")
    assert len(now) == 2 and gone not in now  # a replacement, not the deleted image again
    assert report(out)["per_class"] == {"boa": 2}
    assert (out / "_trash" / first[0]).is_file()
    check_consistent(out)


# ---------------------------------------------------------------- F2: output folders gather did not make


def test_an_existing_folder_without_a_manifest_keeps_every_unrelated_file_where_it_is(tmp_path, capsys):
    proj = tmp_path / "proj"
    (proj / "docs").mkdir(parents=True)
    (proj / "code").mkdir()
    (proj / "viper").mkdir()
    (proj / "docs" / "notes.txt").write_text("my notes")
    (proj / "code" / "main.py").write_text("print('hi')")
    (proj / "docs" / "figure.png").write_bytes(image_bytes("PNG", seed=8))  # an image, but not in a class folder
    (proj / "viper" / "README.txt").write_text("about my vipers")
    (proj / "viper" / "mine.jpg").write_bytes(image_bytes("JPEG", seed=9))
    src = make_tree(tmp_path / "src", {"viper": [1]})
    for _ in range(2):
        assert main(["--folder", str(src), "--out", str(proj)]) == 0
        text = capsys.readouterr().out
        assert "quarantine" not in text and "repaired" not in text
        assert not (proj / mf.QUARANTINE).exists()
        assert (proj / "docs" / "notes.txt").read_text() == "my notes"
        assert (proj / "code" / "main.py").read_text() == "print('hi')"
        assert (proj / "docs" / "figure.png").is_file() and (proj / "viper" / "README.txt").is_file()
    rows = check_consistent(proj, ["viper"])
    assert sorted((r["path"], r["source"], r["licence"]) for r in rows)[1] == ("viper/mine.jpg", "adopted", "unknown")
    assert len(rows) == 2


def test_a_lost_manifest_keeps_the_images_and_the_clean_decisions(tmp_path, capsys):
    src = make_tree(tmp_path / "src", {"viper": [1, 2, 3], "boa": [4]})
    out = tmp_path / "data"
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    x, y, z = sorted(p.relative_to(out).as_posix() for p in (out / "viper").iterdir())
    d = Decisions(out)
    d.decide(x, "relabel", "boa")
    d.decide(y, "delete")
    before = {p.relative_to(out).as_posix(): sha(p) for p in out.rglob("*.jpg")}
    (out / "manifest.csv").unlink()
    capsys.readouterr()
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    assert "no manifest.csv" in capsys.readouterr().out
    after = {p.relative_to(out).as_posix(): sha(p) for p in out.rglob("*.jpg")}
    assert after == before  # nothing moved, nothing fetched back into viper/
    rows = check_consistent(out)
    assert {r["path"] for r in rows} == set(before)


# ---------------------------------------------------------------- F3: whitespace inside names


def test_a_label_and_a_file_name_with_doubled_spaces_are_not_fetched_again(tmp_path):
    src = make_tree(tmp_path / "src", {"boa  constrictor": [1, 2, 3]})
    out = tmp_path / "data"
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    (out / "boa  constrictor" / "my  photo.jpg").write_bytes(image_bytes("JPEG", seed=9))
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    assert report(out)["reconciled"] == {"adopted": 1}
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    rep = report(out)
    assert rep["reconciled"] == {} and rep["kept_this_run"] == {} and rep["per_class"] == {"boa  constrictor": 4}
    assert not (out / mf.QUARANTINE).exists()
    rows = check_consistent(out)
    assert "boa  constrictor/my  photo.jpg" in {r["path"] for r in rows}
    assert {r["class"] for r in rows} == {"boa  constrictor"}


@pytest.mark.parametrize("label", ["a\nb", "a\rb", "tab\there", "nul\x01"])
def test_labels_with_control_characters_are_refused(label):
    with pytest.raises(SourceError, match="cannot be a folder name"):
        check_label(label, "test")


# ---------------------------------------------------------------- F4: names that are not UTF-8


def test_a_file_name_that_is_not_utf8_is_skipped_with_a_warning_and_the_rest_is_gathered(tmp_path, capsys, caplog):
    src = make_tree(tmp_path / "src", {"viper": [1]})
    with open(os.path.join(os.fsencode(src / "viper"), b"caf\xe9.jpg"), "wb") as fh:
        fh.write(image_bytes("JPEG", seed=2))
    out = tmp_path / "data"
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert "caf\\xe9.jpg" in caplog.text and "UTF-8" in caplog.text and "rename" in caplog.text
    assert report(out)["per_class"] == {"viper": 1}
    assert report(out)["skipped"] == {"unusable_file_name": 1}
    # the same kind of name dropped into the output folder is left where it is, and the run still completes
    with open(os.path.join(os.fsencode(out / "viper"), b"x\xe9.jpg"), "wb") as fh:
        fh.write(image_bytes("JPEG", seed=3))
    caplog.clear()
    assert main(["--folder", str(src), "--out", str(out)]) == 0
    assert "x\\xe9.jpg" in caplog.text and "rename" in caplog.text
    assert "1 files whose names are not UTF-8" in capsys.readouterr().out
    assert os.path.exists(os.path.join(os.fsencode(out / "viper"), b"x\xe9.jpg"))
    check_consistent(out)


def test_a_class_folder_name_that_is_not_utf8_stops_the_run_with_a_clear_message(tmp_path, capsys):
    src = make_tree(tmp_path / "src", {"boa": [1]})
    bad = os.path.join(os.fsencode(src), b"vip\xe8re")
    os.mkdir(bad)
    with open(os.path.join(bad, b"a.jpg"), "wb") as fh:
        fh.write(image_bytes("JPEG", seed=2))
    out = tmp_path / "data"
    assert main(["--folder", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "vip\\xe8re" in err and "UTF-8" in err and "rename" in err and "Traceback" not in err


# ---------------------------------------------------------------- F5 / F9: config value types

CLS = "\n[[classes]]\nname='a'"


@pytest.mark.parametrize(
    "content, message",
    [
        ("out = 5" + CLS, "out must be a folder path"),
        ("out = ''" + CLS, "out must be a folder path"),
        ("sources=['folder']\n[folder]\npath = 5" + CLS, "[folder] path must be"),
        ("sources=['folder']\n[folder]\npath = 'x'\nlicence = 5" + CLS, "[folder] licence must be"),
        ("sources=['folder']\n[folder]\npath = 'x'\nauthor = 5" + CLS, "[folder] author must be"),
        ("sources=['urls']\n[urls]\nfile = 5" + CLS, "[urls] file must be"),
        ("sources=['urls']\n[urls]\nfile = 'u.txt'\nlabel = 5" + CLS, "[urls] label must be"),
        ("sources=['urls']\n[urls]\nfile = 'u.txt'\nlicence = 5" + CLS, "[urls] licence must be"),
        ("[[classes]]\nname='a'\nqueries = 5", "queries must be"),
        ("[[classes]]\nname='a'\nqueries = ['ok', 5]", "queries must be"),
        ("[[classes]]\nname = 5", "name must be"),
        ("[[classes]]\nname = 'a'\nscientific = 5", "scientific must be"),
        ("[[classes]]\nlabel = 5", "label must be"),
        ("classes = 5", "classes must be"),
        ("count = true" + CLS, "count must be a positive integer"),
        ("[inaturalist]\nbase_url = 5" + CLS, "[inaturalist] base_url must be"),
        ("[inaturalist]\nmin_interval = inf" + CLS, "[inaturalist] min_interval must be a number at least 0, not inf"),
        ("[download]\ntotal_timeout = inf" + CLS, "[download] total_timeout must be a number more than 0, not inf"),
        ("[inaturalist]\nphoto_size = 5" + CLS, "[inaturalist] photo_size must be"),
        ("[inaturalist]\nphoto_size = 'huge'" + CLS, "[inaturalist] photo_size must be"),
        ("[inaturalist]\nlicences = 'cc0'" + CLS, "[inaturalist] licences must be a list"),
        ("[inaturalist]\nlicences = [5]" + CLS, "[inaturalist] licences must be a list"),
        ("sources=['ddgs']\n[ddgs]\nregion = 5" + CLS, "[ddgs] region must be"),
        ("sources=['ddgs']\n[ddgs]\nsafesearch = 5" + CLS, "[ddgs] safesearch must be"),
        ("sources=['ddgs']\n[ddgs]\nlicense_image = 5" + CLS, "[ddgs] license_image must be"),
        ("[download]\nallow_hosts = '127.0.0.1'" + CLS, "[download] allow_hosts must be a list"),
        ("[licence]\npublishable = 'cc0'" + CLS, "[licence] publishable must be a list"),
        ("[licence]\npublishable = ['cc0', 1]" + CLS, "[licence] publishable must be a list"),
        ("[licence]\ninclude_train_only = 'false'" + CLS, "[licence] include_train_only must be true or false"),
        ("[licence]\ninclude_train_only = 0" + CLS, "[licence] include_train_only must be true or false"),
    ],
)
def test_config_values_of_the_wrong_type_fail_with_a_clear_message(tmp_path, capsys, monkeypatch, content, message):
    def no_run(cfg):  # a config that was wrongly accepted must not reach the network
        raise AssertionError("the config was accepted")

    monkeypatch.setattr("train.gather.gather", no_run)
    f = tmp_path / "bad.toml"
    f.write_text(content)
    assert main(["--config", str(f), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_licence_policy_given_as_lists_and_booleans_is_applied(tmp_path):
    from train.gather import load_config

    f = tmp_path / "ok.toml"
    f.write_text("[licence]\npublishable = ['CC0 1.0']\ninclude_train_only = false" + CLS)
    cfg = load_config(f)
    assert cfg.publishable == frozenset({"cc0"}) and cfg.include_train_only is False
    assert mf.licence_use("copyright", cfg.publishable) == "train-only"


# ---------------------------------------------------------------- F10: the licence column of a URL CSV


@pytest.mark.parametrize("column", ["license", "licence"])
def test_a_url_csv_licence_column_in_either_spelling_is_kept_on_every_path(tmp_path, column):
    with serve({"/a.jpg": jpeg_reply(seed=1), "/b.jpg": jpeg_reply(seed=2)}) as s:
        urls = tmp_path / "u.csv"
        urls.write_text(f"url,label,{column},author\n{s.url('/a.jpg')},x,CC BY 4.0,Al\n{s.url('/b.jpg')},x,,Bo\n")
        cli = tmp_path / "cli"
        assert main(["--urls", str(urls), "--out", str(cli), *FAST]) == 0
        cli_flag = tmp_path / "cli_flag"
        assert main(["--urls", str(urls), "--out", str(cli_flag), "--licence", "cc0", *FAST]) == 0
        conf = tmp_path / "c.toml"
        conf.write_text(
            f"out = '{(tmp_path / 'conf').as_posix()}'\nsources = ['urls']\n[urls]\nfile = '{urls.as_posix()}'\n"
            "[download]\nallow_hosts = ['127.0.0.1']\n[[classes]]\nlabel = 'x'\n"
        )
        assert main(["--config", str(conf)]) == 0

    def lic(out):
        return {r["author"]: (r["licence"], r["use"]) for r in rows_of(out)}

    assert lic(cli) == {"Al": ("cc-by", "publishable"), "Bo": ("unknown", "train-only")}
    assert lic(cli_flag) == {"Al": ("cc-by", "publishable"), "Bo": ("cc0", "publishable")}  # --licence fills gaps
    assert lic(tmp_path / "conf") == lic(cli)


# ---------------------------------------------------------------- an unexpected error while fetching one URL


def test_an_unexpected_error_fetching_one_url_is_recorded_as_its_failure_and_the_run_goes_on(
    tmp_path, capsys, monkeypatch
):
    import train.gather as g

    real_fetch = g.fetch

    def fetch(url, *a, **kw):
        if "odd" in url:
            raise UnicodeEncodeError("ascii", "Pit\xf3n", 3, 4, "ordinal not in range(128)")
        return real_fetch(url, *a, **kw)

    monkeypatch.setattr(g, "fetch", fetch)
    with serve({f"/{n}.jpg": jpeg_reply(seed=i) for i, n in enumerate(["a", "odd", "b"])}) as s:
        urls = tmp_path / "python.txt"
        urls.write_text("".join(f"{s.url(f'/{n}.jpg')}\n" for n in ["a", "odd", "b"]))
        out = tmp_path / "out"
        args = ["--urls", str(urls), "--out", str(out), "--workers", "1", *FAST]
        assert main(args) == 0
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and "failures: error 1" in captured.out
        rep = report(out)
        assert rep["per_class"] == {"python": 2} and rep["failures"] == {"error": 1}
        with open(out / "failures.csv", newline="", encoding="utf-8") as fh:
            (row,) = list(csv.DictReader(fh))
        assert row["reason"] == "error" and row["image_url"].endswith("/odd.jpg")
        assert "UnicodeEncodeError" in row["message"]
        check_consistent(out)
        # the next run does not stumble over it again (--retry-failed would try it once more)
        assert main(args) == 0
        assert report(out)["skipped"] == {"already_done": 2, "failed_before": 1}


# ---------------------------------------------------------------- --config with sources for other classes


def _config(tmp_path: Path, urls: Path | None = None) -> Path:
    conf = tmp_path / "c.toml"
    text = f"out = '{(tmp_path / 'out').as_posix()}'\ncount = 3\n"
    if urls is not None:
        text += f"sources = ['urls']\n[urls]\nfile = '{urls.as_posix()}'\n"
    else:
        text += "sources = ['inaturalist']\n[inaturalist]\nbase_url = 'http://127.0.0.1:9/v1'\n"
    text += "[download]\nallow_hosts = ['127.0.0.1']\n"
    text += "[[classes]]\nname = 'viper'\n[[classes]]\nname = 'Python'\nscientific = 'Python regius'\n"
    conf.write_text(text)
    return conf


@pytest.mark.parametrize("how", ["file_name", "class", "folder", "config_list"])
def test_config_sources_with_images_of_a_class_the_config_does_not_list_stop_before_any_download(tmp_path, capsys, how):
    with serve({f"/img{i}.jpg": jpeg_reply(seed=i) for i in range(4)}) as s:
        boa = tmp_path / "boa.txt"
        boa.write_text(f"{s.url('/img1.jpg')}\n{s.url('/img2.jpg')}\n")
        listed = tmp_path / "list.txt"
        listed.write_text(f"viper {s.url('/img0.jpg')}\nboa {s.url('/img3.jpg')}\n")
        photos = make_tree(tmp_path / "photos", {"viper": [5], "boa": [6]})
        conf = _config(tmp_path, listed if how == "config_list" else None)
        extra = {
            "file_name": ["--urls", str(boa)],
            "class": ["--urls", str(boa), "--class", "boa"],
            "folder": ["--folder", str(photos)],
            "config_list": [],
        }[how]
        assert main(["--config", str(conf), *extra]) == 1
        assert sum(s.hits.values()) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "'boa'" in err and "viper, python_regius" in err and "[[classes]]" in err and "label = 'boa'" in err
    assert ("sub-folder" in err) if how == "folder" else ("fix the label" in err)
    assert not (tmp_path / "out").exists()


def test_config_sources_whose_labels_are_all_classes_are_gathered(tmp_path, capsys):
    with serve({f"/img{i}.jpg": jpeg_reply(seed=i) for i in range(3)}) as s:
        listed = tmp_path / "list.txt"
        listed.write_text(f"viper {s.url('/img0.jpg')}\npython_regius {s.url('/img1.jpg')}\n")
        vipers = tmp_path / "viper.txt"
        vipers.write_text(f"{s.url('/img2.jpg')}\n")
        # a sub-folder named like a class's display or scientific name is that class
        photos = make_tree(tmp_path / "photos", {"Python regius": [7]})
        conf = _config(tmp_path, listed)
        assert main(["--config", str(conf), "--urls", str(vipers), "--folder", str(photos)]) == 0
    assert report(tmp_path / "out")["per_class"] == {"viper": 2, "python_regius": 2}


def test_class_and_author_without_a_url_list_or_folder_are_refused(tmp_path, capsys):
    conf = _config(tmp_path)
    assert main(["--config", str(conf), "--class", "viper"]) == 1
    assert "--class" in capsys.readouterr().err
    assert main(["--config", str(conf), "--author", "Ann"]) == 1
    assert "--author" in capsys.readouterr().err


# ---------------------------------------------------------------- a broken source does not end its class


class _BrokenSource:
    name = "broken"

    def candidates(self, cls, want):
        yield from ()
        raise KeyError("results")


def test_a_source_failing_for_a_class_is_skipped_and_the_next_source_goes_on(tmp_path, caplog):
    from train.download import HttpConfig
    from train.gather import GatherConfig, gather
    from train.sources import ClassSpec, URLListSource

    with serve({f"/img{i}.jpg": jpeg_reply(seed=i) for i in range(3)}) as s:
        listed = tmp_path / "list.txt"
        listed.write_text("".join(f"viper {s.url(f'/img{i}.jpg')}\n" for i in range(3)))
        out = tmp_path / "out"
        cfg = GatherConfig(
            out=out,
            classes=[ClassSpec("viper", "viper"), ClassSpec("boa", "boa")],
            sources=[_BrokenSource(), URLListSource(listed)],
            count=2,
            http=HttpConfig(allow_hosts=frozenset({"127.0.0.1"}), read_timeout=2, retries=0),
        )
        rep = gather(cfg)
    assert rep["per_class"] == {"viper": 2, "boa": 0}
    assert rep["failures"] == {"source_error": 2}  # once per class it failed for
    assert any("broken for viper: KeyError" in p for p in rep["source_problems"])
    assert "the broken source failed for class viper" in caplog.text and "next source goes on" in caplog.text


# ---------------------------------------------------------------- --author


def test_author_is_recorded_for_folder_images_and_url_rows_without_one(tmp_path, capsys):
    assert "--author" in __import__("train.gather", fromlist=["build_parser"]).build_parser().format_help()
    src = make_tree(tmp_path / "src", {"viper": [1, 2]})
    out = tmp_path / "out"
    assert main(["--folder", str(src), "--out", str(out), "--licence", "CC BY 4.0", "--author", "Ann Lee"]) == 0
    rows = rows_of(out)
    assert {(r["author"], r["licence"]) for r in rows} == {("Ann Lee", "cc-by")}
    assert all("Ann Lee" in r["attribution"] for r in rows)
    assert "Ann Lee" in (out / "ATTRIBUTION.md").read_text()
    with serve({"/a.jpg": jpeg_reply(seed=3), "/b.jpg": jpeg_reply(seed=4)}) as s:
        urls = tmp_path / "u.csv"
        urls.write_text(f"url,label,licence,author\n{s.url('/a.jpg')},boa,cc-by,Bo\n{s.url('/b.jpg')},boa,cc-by,\n")
        out2 = tmp_path / "out2"
        assert main(["--urls", str(urls), "--out", str(out2), "--author", "Ann Lee", *FAST]) == 0
    assert sorted(r["author"] for r in rows_of(out2)) == ["Ann Lee", "Bo"]  # a row's own author wins


# ---------------------------------------------------------------- a full disk


def test_a_full_disk_names_the_folder_and_says_how_to_go_on(tmp_path, capsys, monkeypatch):
    import errno

    src = make_tree(tmp_path / "src", {"viper": [1, 2]})
    out = tmp_path / "out"

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mf, "append_row", full)
    assert main(["--folder", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(out) in err and "()" not in err and "Traceback" not in err
    assert "free some space and run the same command again: it resumes" in err


# ---------------------------------------------------------------- the exit status says when nothing could be gathered


def _down_config(tmp_path: Path, count: int = 3) -> Path:
    """A config whose only source, iNaturalist, cannot be reached (a closed port: as with no network)."""
    conf = tmp_path / "down.toml"
    conf.write_text(
        f"out = '{(tmp_path / 'out').as_posix()}'\ncount = {count}\nsources = ['inaturalist']\n"
        "[download]\nallow_hosts = ['127.0.0.1']\nretries = 0\n"
        "[inaturalist]\nbase_url = 'http://127.0.0.1:9/v1'\nmin_interval = 0.0\n"
        "[[classes]]\nlabel = 'viper'\nscientific = 'Vipera berus'\n"
    )
    return conf


def test_an_unreachable_source_that_leaves_a_class_empty_exits_1_and_says_to_check_the_network(tmp_path, capsys):
    assert main(["--config", str(_down_config(tmp_path))]) == 1
    captured = capsys.readouterr()
    assert "failures: source_unavailable 1" in captured.out
    note = next(line for line in captured.out.splitlines() if "note: viper" in line)
    assert "iNaturalist" in note and "network" in note and "base_url" in note
    assert "add queries or sources" not in note  # more queries would not reach it either
    assert "viper: no images" in captured.err and "exits 1 when" in captured.err


def test_an_unreachable_source_exits_0_when_the_run_made_progress_and_1_when_it_made_none(tmp_path, capsys):
    photos = make_tree(tmp_path / "photos", {"viper": [1]})
    args = ["--config", str(_down_config(tmp_path)), "--folder", str(photos)]
    assert main(args) == 0  # one new image: progress, though iNaturalist could not be reached
    assert "viper: 1 of 3 images (1 new)" in capsys.readouterr().out
    assert main(args) == 1  # still short, nothing new, and the source is still unreachable
    captured = capsys.readouterr()
    assert "viper: 1 of 3 images (0 new)" in captured.out and "network" in captured.out
    assert "none new: a source could not be reached" in captured.err


def test_a_url_list_whose_every_url_failed_exits_1_and_names_the_failures(tmp_path, capsys):
    with serve({}) as s:  # every path is a 404
        urls = tmp_path / "viper.txt"
        urls.write_text(f"{s.url('/a.jpg')}\n{s.url('/b.jpg')}\n")
        out = tmp_path / "out"
        assert main(["--urls", str(urls), "--out", str(out), *FAST]) == 1
    captured = capsys.readouterr()
    assert "note: viper has no images: all 2 of its downloads this run failed (http_404 2)" in captured.out
    assert "failures.csv" in captured.out and "viper: no images" in captured.err


def test_a_class_without_images_exits_1_even_when_another_class_got_some(tmp_path, capsys):
    with serve({"/a.jpg": jpeg_reply(seed=1)}) as s:
        urls = tmp_path / "urls.txt"
        urls.write_text(f"boa {s.url('/a.jpg')}\nviper {s.url('/gone.jpg')}\n")
        assert main(["--urls", str(urls), "--out", str(tmp_path / "out"), *FAST]) == 1
    assert "viper: no images" in capsys.readouterr().err


# ---------------------------------------------------------------- policy refusals are not failures for good


def test_a_url_refused_by_the_address_policy_is_fetched_once_its_host_is_allowed(tmp_path, capsys):
    with serve({"/a.jpg": jpeg_reply(seed=1), "/b.jpg": jpeg_reply(seed=2)}) as s:
        urls = tmp_path / "viper.txt"
        urls.write_text(f"{s.url('/a.jpg')}\n{s.url('/b.jpg')}\n")
        out = tmp_path / "out"
        assert main(["--urls", str(urls), "--out", str(out), "--retries", "0"]) == 1  # 127.0.0.1 is refused
        captured = capsys.readouterr()
        assert "failures: blocked_address 2" in captured.out and "--allow-host" in captured.out
        assert sum(s.hits.values()) == 0
        assert main(["--urls", str(urls), "--out", str(out), *FAST]) == 0
        assert "failed_before" not in capsys.readouterr().out
        assert report(out)["per_class"] == {"viper": 2}


def test_urls_skipped_as_failed_before_come_with_a_retry_failed_hint(tmp_path, capsys):
    with serve({"/a.jpg": jpeg_reply(seed=1)}) as s:
        urls = tmp_path / "viper.txt"
        urls.write_text(f"{s.url('/a.jpg')}\n{s.url('/gone.jpg')}\n")
        args = ["--urls", str(urls), "--out", str(tmp_path / "out"), *FAST]
        assert main(args) == 0
        capsys.readouterr()
        assert main(args) == 0
    text = capsys.readouterr().out
    assert "skipped: already_done 1, failed_before 1" in text
    assert "1 URLs failed in earlier runs; add --retry-failed to try them again" in text


# ---------------------------------------------------------------- venomous and display_name in [[classes]]


def _folder_config(tmp_path: Path, classes: str) -> Path:
    make_tree(tmp_path / "photos", {"viper": [1], "boa": [2]})
    conf = tmp_path / "c.toml"
    conf.write_text(
        f"out = '{(tmp_path / 'out').as_posix()}'\ncount = 1\nsources = ['folder']\n"
        f"[folder]\npath = '{(tmp_path / 'photos').as_posix()}'\n" + classes
    )
    return conf


def test_venomous_and_display_name_in_the_config_reach_classes_json(tmp_path, capsys):
    conf = _folder_config(
        tmp_path,
        "[[classes]]\nlabel = 'viper'\nname = 'bush viper'\ndisplay_name = 'African bush viper'\nvenomous = true\n"
        "[[classes]]\nlabel = 'boa'\nvenomous = false\n",
    )
    assert main(["--config", str(conf)]) == 0
    info = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert info == {"viper": {"display_name": "African bush viper", "venomous": True}, "boa": {"venomous": False}}


def test_a_venomous_flag_set_by_hand_in_classes_json_survives_a_config_that_leaves_it_out(tmp_path):
    conf = _folder_config(tmp_path, "[[classes]]\nlabel = 'viper'\nname = 'viper'\n[[classes]]\nlabel = 'boa'\n")
    out = tmp_path / "out"
    assert main(["--config", str(conf)]) == 0
    (out / "classes.json").write_text(json.dumps({"viper": {"display_name": "viper", "venomous": True}}))
    assert main(["--config", str(conf)]) == 0
    assert json.loads((out / "classes.json").read_text())["viper"] == {"display_name": "viper", "venomous": True}


@pytest.mark.parametrize(
    ("line", "message"),
    [("venomous = 'yes'", "venomous must be true or false"), ("display_name = 3", "display_name must be")],
)
def test_a_venomous_or_display_name_of_the_wrong_type_is_refused(tmp_path, capsys, line, message):
    conf = _folder_config(tmp_path, f"[[classes]]\nlabel = 'viper'\n{line}\n[[classes]]\nlabel = 'boa'\n")
    assert main(["--config", str(conf)]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_default_config_marks_the_bush_viper_venomous_and_the_constrictors_not():
    from train.gather import load_config

    info = load_config(Path(__file__).parent.parent / "train" / "configs" / "snakes4.toml").class_info
    assert info["atheris_squamigera"]["venomous"] is True
    assert info["python_bivittatus"]["venomous"] is False and info["eunectes_murinus"]["venomous"] is False


# ---------------------------------------------------------------- failure messages name the URL or the file


def test_a_page_instead_of_an_image_is_reported_with_its_url_not_as_the_upload(tmp_path):
    page = b"<!doctype html><html><body>log in</body></html>"
    make_tree(tmp_path / "photos", {"viper": [1]})
    (tmp_path / "photos" / "viper" / "page.jpg").write_bytes(page)
    routes = {"/p.jpg": Reply(200, page, {"Content-Type": "image/jpeg"}), "/a.jpg": jpeg_reply(seed=2)}
    with serve(routes) as s:
        urls = tmp_path / "viper.txt"
        urls.write_text(f"{s.url('/a.jpg')}\n{s.url('/p.jpg')}\n")
        out = tmp_path / "out"
        assert main(["--urls", str(urls), "--folder", str(tmp_path / "photos"), "--out", str(out), *FAST]) == 0
    with open(out / "failures.csv", newline="", encoding="utf-8") as fh:
        messages = {Path(r["image_url"]).name: r["message"] for r in csv.DictReader(fh)}
    assert set(messages) == {"p.jpg", "page.jpg"}
    assert messages["p.jpg"].startswith(s.url("/p.jpg") + ": this is an HTML page")
    assert messages["page.jpg"].startswith(str(tmp_path / "photos" / "viper" / "page.jpg") + ": this is an HTML page")
    assert all("the upload" not in m for m in messages.values())
