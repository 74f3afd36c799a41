"""manifest.py: hand edits of a gathered folder, licences that need an author, and re-applying a licence policy."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.gathered import make_tree, rows_of, sha, shas_in
from tests.servers import image_bytes
from train import manifest as mf
from train.gather import main

OLD = "2024-01-01T00:00:00+00:00"  # a row written by a run that finished long ago


def row_for(out: Path, label: str, seed: int, **kw) -> dict:
    """Write a gathered image (named as gather names it) and return its manifest row."""
    data = image_bytes("JPEG", seed=seed)
    digest = hashlib.sha256(data).hexdigest()
    rel = f"{label}/{digest[:16]}.jpg"
    (out / label).mkdir(parents=True, exist_ok=True)
    (out / rel).write_bytes(data)
    row = {
        "class": label,
        "source": "urls",
        "query": "",
        "page_url": "",
        "image_url": f"https://example.org/{seed}.jpg",
        "licence": "cc-by",
        "author": "Al",
        "use": "publishable",
        "sha256": digest,
        "phash": "0" * 16,
        "width": 64,
        "height": 48,
        "fetched_at": OLD,
        "path": rel,
    }
    row.update(kw)
    row["attribution"] = mf.attribution_text(row)
    return row


def gathered(tmp_path: Path, spec: dict[str, list[int]], finished: bool = True, **kw) -> tuple[Path, list[dict]]:
    """A gather output folder with a manifest; `finished`: a run completed after the rows were written."""
    out = tmp_path / "out"
    out.mkdir(parents=True)
    rows = [row_for(out, label, s, **kw) for label, seeds in spec.items() for s in seeds]
    mf.write_manifest(out, rows)
    if finished:
        (out / mf.LAST_RUN).write_text("{}")
    return out, rows


def run_report(out: Path) -> dict:
    return json.loads((out / "gather_report.json").read_text())


# ---------------------------------------------------------------- 1: images moved or deleted by hand


def test_an_image_moved_by_hand_to_another_class_keeps_its_row_with_the_new_class(tmp_path):
    out, (x, y, z) = gathered(tmp_path, {"viper": [1, 2], "python": [3]})
    os.rename(out / x["path"], out / "python" / Path(x["path"]).name)  # "this one is a python"
    os.rename(out / y["path"], out / "python" / "renamed by me.jpg")  # moved and renamed
    rows, fixed = mf.reconcile(out, classes=["viper", "python"])
    assert fixed == {"moved_by_hand": 2}
    by_sha = {r["sha256"]: r for r in rows}
    assert (by_sha[x["sha256"]]["class"], by_sha[x["sha256"]]["path"]) == ("python", f"python/{Path(x['path']).name}")
    assert (by_sha[y["sha256"]]["class"], by_sha[y["sha256"]]["path"]) == ("python", "python/renamed by me.jpg")
    assert by_sha[x["sha256"]]["image_url"] == x["image_url"] and by_sha[x["sha256"]]["licence"] == "cc-by"
    assert not (out / mf.QUARANTINE).exists()  # not taken for a crash's orphan
    assert rows_of(out) == [{k: str(v) for k, v in r.items()} for r in rows]
    assert mf.reconcile(out, classes=["viper", "python"])[1] == {}  # settled


def test_an_image_moved_by_hand_out_of_the_class_folders_is_found_where_it_went(tmp_path):
    out, (x, y) = gathered(tmp_path, {"viper": [1, 2]})
    (out / "corn_snake").mkdir()
    os.rename(out / x["path"], out / "corn_snake" / Path(x["path"]).name)  # a class of the user's own
    (out / "_trash" / "viper").mkdir(parents=True)
    os.rename(out / y["path"], out / "_trash" / y["path"])  # a delete done by hand the workbench's way
    rows, fixed = mf.reconcile(out, classes=["viper"])
    assert fixed == {"moved_by_hand": 2}
    by_sha = {r["sha256"]: r for r in rows}
    assert (by_sha[x["sha256"]]["class"], by_sha[x["sha256"]]["path"]) == ("corn_snake", "corn_snake/" + x["path"][6:])
    assert (by_sha[y["sha256"]]["class"], by_sha[y["sha256"]]["path"]) == ("viper", "_trash/" + y["path"])
    assert mf.in_class_folder(by_sha[x["sha256"]]) and not mf.in_class_folder(by_sha[y["sha256"]])


def test_an_image_deleted_by_hand_stays_recorded_outside_the_class_folders(tmp_path):
    out, (x, y) = gathered(tmp_path, {"viper": [1, 2]})
    (out / x["path"]).unlink()  # "this one is junk"
    rows, fixed = mf.reconcile(out, classes=["viper"])
    assert fixed == {"deleted_by_hand": 1}
    tomb = next(r for r in rows if r["sha256"] == x["sha256"])
    assert tomb["path"] == "_trash/" + x["path"] and tomb["class"] == "viper"
    assert tomb["image_url"] == x["image_url"]  # so gather never fetches it again
    assert not mf.in_class_folder(tomb)  # and its class's quota is refilled with a new image
    assert not (out / tomb["path"]).exists()  # nothing was written back
    assert len(rows_of(out)) == 2
    assert mf.reconcile(out, classes=["viper"]) == (rows, {})  # a tombstone stays, silently
    assert "_trash" not in (mf.attribution_markdown(rows))


def test_an_image_deleted_by_hand_and_put_back_is_recorded_where_it_is_again(tmp_path):
    out, (x,) = gathered(tmp_path, {"viper": [1]})
    data = (out / x["path"]).read_bytes()
    (out / x["path"]).unlink()
    mf.reconcile(out, classes=["viper"])
    (out / x["path"]).write_bytes(data)  # restored from the desktop's bin
    rows, fixed = mf.reconcile(out, classes=["viper"])
    assert fixed == {"moved_by_hand": 1} and [(r["class"], r["path"]) for r in rows] == [("viper", x["path"])]


def test_a_row_newer_than_the_last_finished_run_lost_its_file_in_a_crash_and_is_fetched_again(tmp_path):
    out, (x, y) = gathered(tmp_path, {"viper": [1, 2]}, finished=False)  # no run has finished yet
    (out / x["path"]).unlink()
    rows, fixed = mf.reconcile(out, classes=["viper"])
    assert fixed == {"rows_without_file": 1} and [r["path"] for r in rows] == [y["path"]]

    out2, (a, b) = gathered(tmp_path / "2", {"viper": [1, 2]})
    (out2 / a["path"]).unlink()
    future = time.time() + 60  # the row was written after the last run that finished: the run that crashed
    rows = mf.read_manifest(out2)
    rows[0]["fetched_at"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(future))
    mf.write_manifest(out2, rows)
    assert mf.reconcile(out2, classes=["viper"])[1] == {"rows_without_file": 1}


def test_an_image_written_without_its_row_is_still_set_aside_when_another_row_lost_its_file(tmp_path):
    out, (x,) = gathered(tmp_path, {"viper": [1]})
    (out / x["path"]).unlink()
    orphan = row_for(out, "viper", 7)  # written by a run killed before its row: no row matches its sha256
    rows, fixed = mf.reconcile(out, classes=["viper"])
    assert fixed == {"deleted_by_hand": 1, "orphans_quarantined": 1}
    assert (out / mf.QUARANTINE / "orphans" / orphan["path"]).is_file()


def test_gather_keeps_hand_moves_and_deletions_and_refills_the_class_with_new_images(tmp_path, capsys):
    src = make_tree(tmp_path / "src", {"viper": [1, 2, 3, 4], "python": [5, 6]})
    out = tmp_path / "data"
    args = ["--folder", str(src), "--out", str(out), "--count", "2"]
    assert main(args) == 0
    x, y = sorted((out / "viper").iterdir())
    x_sha, y_sha = sha(x), sha(y)
    os.rename(x, out / "python" / x.name)  # relabelled by hand
    y.unlink()  # deleted by hand
    assert main(args) == 0
    rep = run_report(out)
    assert rep["reconciled"] == {"moved_by_hand": 1, "deleted_by_hand": 1}
    assert rep["per_class"] == {"python": 3, "viper": 2} and rep["kept_this_run"] == {"viper": 2}
    assert x_sha in shas_in(out / "python") and x_sha not in shas_in(out / "viper")
    assert y_sha not in shas_in(out / "viper") and len(shas_in(out / "viper")) == 2  # new images, not y again
    assert not (out / mf.QUARANTINE).exists()
    rows = rows_of(out)
    assert {r["path"] for r in rows if mf.in_class_folder(r)} == {
        p.relative_to(out).as_posix() for d in ("viper", "python") for p in (out / d).iterdir()
    }
    assert [r["class"] for r in rows if r["sha256"] == x_sha] == ["python"]
    assert [r["path"].split("/")[0] for r in rows if r["sha256"] == y_sha] == ["_trash"]
    assert y.name not in (out / "ATTRIBUTION.md").read_text()
    capsys.readouterr()
    assert main(args) == 0
    assert run_report(out)["reconciled"] == {} and run_report(out)["kept_this_run"] == {}


# ---------------------------------------------------------------- 2: CC BY without an author, local paths


@pytest.mark.parametrize("licence", ["CC BY 4.0", "cc-by-sa", "cc_by_nc"])
@pytest.mark.parametrize("author", ["", "  ", "?", "unknown"])
def test_a_licence_that_requires_attribution_without_an_author_is_train_only(licence, author):
    wide = mf.PUBLISHABLE | {"cc-by-nc"}
    assert mf.licence_use(licence, wide, author) == "train-only"
    assert "author" in mf.use_reason(licence, author, wide)
    assert mf.licence_use(licence, wide, "Ada Lovelace") == "publishable"
    assert mf.use_reason(licence, "Ada Lovelace", wide) == ""


def test_cc0_needs_no_author_and_the_policy_still_decides():
    assert mf.licence_use("CC0 1.0", mf.PUBLISHABLE, "") == "publishable"
    assert mf.licence_use("cc-by-nc", mf.PUBLISHABLE, "Al") == "train-only"
    assert "not a publishable licence" in mf.use_reason("cc-by-nc", "Al")
    assert mf.use_reason("", "Al") == "licence unknown"


def test_attribution_never_publishes_a_local_path_or_credits_nobody(tmp_path):
    local = {
        "class": "boa",
        "source": "folder",
        "query": "boa/0.jpg",
        "page_url": "",
        "image_url": "file:///home/me/photos/boa/0.jpg",
        "licence": "cc-by",
        "author": "",
        "use": "train-only",
        "path": "boa/0123456789abcdef.jpg",
    }
    web = dict(local, image_url="https://example.org/a b(1).jpg", author="Bea", use="publishable", path="boa/b.jpg")
    text = mf.attribution_markdown([local, web])
    assert "file://" not in text and "/home/me" not in text
    assert "local file" in text and "| ? |" not in text and "no author to credit" in text
    assert "https://example.org/a%20b%281%29.jpg" in text and "1 publishable" in text
    credit = mf.attribution_text(local)
    assert "file://" not in credit and "/home/me" not in credit and "local file" in credit
    assert mf.attribution_text(web).endswith(": https://example.org/a b(1).jpg")


def test_a_folder_imported_as_cc_by_without_an_author_is_not_published(tmp_path):
    src = make_tree(tmp_path / "photos", {"viper": [1, 2], "boa": [3]})
    out = tmp_path / "out"
    assert main(["--folder", str(src), "--out", str(out), "--licence", "CC BY 4.0"]) == 0
    mf.reapply_policy(out, mf.PUBLISHABLE)  # rows recorded before gather passed the author are corrected
    assert {(r["licence"], r["use"]) for r in rows_of(out)} == {("cc-by", "train-only")}
    text = (out / "ATTRIBUTION.md").read_text()
    assert "0 publishable" in text and "file://" not in text and str(src) not in text
    assert "no author to credit" in text


# ---------------------------------------------------------------- 3: a narrower licence policy


def test_narrowing_the_policy_turns_rows_gathered_earlier_train_only(tmp_path):
    out, rows = gathered(tmp_path, {"viper": [1, 2], "boa": [3]}, licence="cc-by-nc", use="publishable")
    extra = mf.read_manifest(out)
    for r in extra:
        r["note"] = "mine"  # a column added by hand survives
    mf.atomic_write(out / mf.MANIFEST, mf.rows_to_csv(extra, mf.COLUMNS + ["note"]))
    assert mf.reapply_policy(out, ["cc0", "cc-by", "cc-by-sa"]) == 3
    after = rows_of(out)
    assert {r["use"] for r in after} == {"train-only"} and {r["note"] for r in after} == {"mine"}
    assert "0 publishable" in (out / "ATTRIBUTION.md").read_text()
    assert mf.reapply_policy(out, ["cc0", "cc-by", "cc-by-sa"]) == 0
    assert mf.reapply_policy(out, ["cc0", "CC BY-NC 4.0"]) == 3  # widened again
    assert {r["use"] for r in rows_of(out)} == {"publishable"}
    assert "3 publishable" in (out / "ATTRIBUTION.md").read_text()


def test_reapply_policy_updates_the_callers_rows_in_place(tmp_path):
    out, _ = gathered(tmp_path, {"viper": [1]}, licence="cc-by-nc")
    rows, _ = mf.reconcile(out, classes=["viper"])
    assert mf.reapply_policy(out, mf.PUBLISHABLE, rows) == 1
    assert rows[0]["use"] == "train-only" and rows_of(out)[0]["use"] == "train-only"


def test_a_policy_narrowed_in_the_config_is_applied_to_images_gathered_before(tmp_path):
    from train.gather import load_config

    src = make_tree(tmp_path / "photos", {"viper": [1, 2], "boa": [3]})
    base = (
        f'out = "{(tmp_path / "out").as_posix()}"\ncount = 5\nsources = ["folder"]\n'
        f'[folder]\npath = "{src.as_posix()}"\nlicence = "cc-by-nc"\nauthor = "Me"\n'
        '[[classes]]\nlabel = "viper"\n[[classes]]\nlabel = "boa"\n[licence]\n'
    )
    (tmp_path / "a.toml").write_text(base + 'publishable = ["cc0", "cc-by", "cc-by-sa", "cc-by-nc"]\n')
    (tmp_path / "b.toml").write_text(base + 'publishable = ["cc0", "cc-by", "cc-by-sa"]\n')
    assert main(["--config", str(tmp_path / "a.toml")]) == 0
    out = tmp_path / "out"
    assert {r["use"] for r in rows_of(out)} == {"publishable"}
    assert mf.reapply_policy(out, load_config(tmp_path / "b.toml").publishable) == 3
    assert {r["use"] for r in rows_of(out)} == {"train-only"}
    assert "0 publishable" in (out / "ATTRIBUTION.md").read_text()


def test_third_party_text_in_attribution_is_shown_literally_never_a_link_an_image_or_markup():
    import html
    import re

    from tests.test_mdtext import renderers  # markdown-it-py with GFM's autolinks (and linkify when installed)

    rows = [
        {
            "class": "crotalus_atrox",
            "path": "crotalus_atrox/a.jpg",
            "licence": "cc-by",
            "use": "publishable",
            "author": "[Bitten? Call the antivenom hotline](https://evil.example/hotline)",  # an iNaturalist user name
            "source": "inaturalist",
            "page_url": "https://www.inaturalist.org/observations/1",
        },
        {
            "class": "crotalus_atrox",
            "path": "crotalus_atrox/b|`x`.jpg",
            "licence": "cc0",
            "use": "publishable",
            "author": "![x](http://127.0.0.1:9/track.png) **pwned** <b>bold</b> www.evil.example me@evil.example",
            "source": "[ddgs](https://evil.example) https://evil.example/bare",  # a search result's title
            "page_url": "https://example.org/a b(1)<x>|y?q=1&lt;=2",
        },
        {
            "class": "crotalus_atrox",
            "path": "crotalus_atrox/c.jpg",
            "licence": "cc-by-nc",
            "use": "train-only",
            "author": "_Ann_ | Lee",
            "source": "folder",
            "image_url": "file:///home/me/c.jpg",
        },
    ]
    text = mf.attribution_markdown(rows)
    for md in renderers():
        page = md.render(text)
        # The only links are the http(s) pages the manifest recorded, each still one link to the whole URL.
        assert re.findall(r'<a href="([^"]*)"', page) == [
            "https://www.inaturalist.org/observations/1",
            "https://example.org/a%20b%281%29%3Cx%3E%7Cy?q=1&amp;lt;=2",
        ]
        for tag in ("<img", "<strong", "<em", "<b>", "<h3", "<li"):
            assert tag not in page, tag
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", page, re.S)]
        assert len(cells) == 15, cells  # three rows of five: no name split a row into more cells
        for r, row_cells in zip(rows, [cells[i : i + 5] for i in range(0, 15, 5)], strict=True):
            assert row_cells[0] == r["path"] and row_cells[3] == r["author"] and row_cells[4].startswith(r["source"])
        assert html.unescape(re.sub(r"<[^>]+>", "", page)).count("(local file)") == 1
    assert "file://" not in text and "/home/me" not in text
