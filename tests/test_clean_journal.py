"""train.clean on bad input: a corrupt decisions journal and a --not-snake-dir that is not a safe new folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from train import clean
from train.decisions import LOG_FILE, DecisionError, Decisions


def tiny_dataset(root: Path) -> Path:
    """Two classes (boa, cobra) of three small PNGs each."""
    for c, (label, colour) in enumerate({"boa": (200, 40, 40), "cobra": (40, 60, 200)}.items()):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16 + i, 16), tuple(v + 10 * i + c for v in colour)).save(root / label / f"{i}.png")
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def journal_with_two_decisions(root: Path) -> Path:
    dec = Decisions(root)
    dec.decide("boa/0.png", "delete")
    dec.decide("cobra/1.png", "relabel", "boa")
    return root / LOG_FILE


PENDING_WITHOUT_ACTION = {
    "id": 3,
    "status": "pending",
    "sha256": "0" * 64,
    "old_label": "boa",
    "new_label": None,
    "old_path": "boa/2.png",
    "new_path": "_trash/boa/2.png",
}


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ('{"action":"delete"}', "no integer id"),
        (json.dumps(PENDING_WITHOUT_ACTION), "action None"),
        ("garbage", "not a JSON record"),
        ('{"id": 3, "status": "done", "action": "delete"}', "lacks sha256"),
        (json.dumps({**PENDING_WITHOUT_ACTION, "status": "done", "action": "undo"}), "undoes"),
    ],
)
@pytest.mark.parametrize("where", ["middle", "end"])
def test_a_corrupt_journal_line_is_named_with_its_line_number_and_nothing_is_lost(
    tmp_path, capsys, bad_line, problem, where
):
    root = tiny_dataset(tmp_path / "d")
    log = journal_with_two_decisions(root)
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    at = 2 if where == "middle" else len(lines)
    lines.insert(at, bad_line + "\n")
    log.write_text("".join(lines), encoding="utf-8")
    before = snapshot(root)

    assert clean.main([str(root), "--undo", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert f"{log} line {at + 1} " in err and problem in err and "Fix or delete that line" in err
    with pytest.raises(DecisionError, match=f"line {at + 1} "):
        Decisions(root)
    assert snapshot(root) == before  # journal, folders and manifest untouched

    # removing that one line brings every valid decision back
    del lines[at]
    log.write_text("".join(lines), encoding="utf-8")
    assert [r["action"] for r in Decisions(root).done()] == ["delete", "relabel"]
    assert clean.main([str(root), "--undo", "2"]) == 0
    assert (root / "boa" / "0.png").is_file() and (root / "cobra" / "1.png").is_file()


@pytest.mark.parametrize(
    "name, needle",
    [
        ("boa", "is the class folder"),
        ("../escaped", "one folder name"),
        ("a/b", "one folder name"),
        ("..", "one folder name"),
        (".hidden", "hidden"),
        ("", "empty"),
        ("_trash", "reserves"),
        ("_quarantine", "reserves"),
    ],
)
def test_a_not_snake_dir_that_is_a_class_or_outside_the_dataset_is_refused_before_anything_moves(
    tmp_path, capsys, name, needle
):
    root = tiny_dataset(tmp_path / "d")
    journal_with_two_decisions(root)
    before = snapshot(root)
    with pytest.raises(DecisionError, match="--not-snake-dir") as e:
        Decisions(root, not_snake_dir=name).decide("boa/1.png", "not_snake")
    assert needle in str(e.value)
    assert clean.main([str(root), "--not-snake-dir", name, "--undo", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --not-snake-dir") and needle in err
    assert snapshot(root) == before
    assert not (tmp_path / "escaped").exists()


def test_a_custom_not_snake_dir_can_be_used_again_once_it_holds_images(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    Decisions(root, not_snake_dir="not_a_snake").decide("boa/1.png", "not_snake")
    assert (root / "not_a_snake" / "1.png").is_file()
    Decisions(root, not_snake_dir="not_a_snake").decide("cobra/2.png", "not_snake")  # its own folder, not a class
    assert (root / "not_a_snake" / "2.png").is_file()
    Decisions(root).decide("boa/2.png", "not_snake")  # the default always works
    assert (root / "_not_snake" / "2.png").is_file()


def _with_manifest(root: Path) -> Path:
    rows = ["path,class,source"] + [
        f"{p.relative_to(root).as_posix()},{p.parent.name},web" for p in sorted(root.glob("*/*.png"))
    ]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize(
    "label, needle",
    [
        ("x\ny", "control character"),
        ("tab\there", "control character"),
        ("nul\x00", "control character"),
        ("manifest.csv", "is a file"),
        ("_trash", "set-aside"),
        ("../up", "one folder name"),
        ("a" * 300, "too long"),
        (" ", "empty"),
    ],
)
def test_a_relabel_to_a_name_that_cannot_be_a_class_folder_is_refused_and_nothing_changes(tmp_path, label, needle):
    root = _with_manifest(tiny_dataset(tmp_path / "d"))
    before = snapshot(root)
    dec = Decisions(root)
    with pytest.raises(DecisionError, match="relabel needs a class name") as e:
        dec.decide("boa/0.png", "relabel", label)
    assert needle in str(e.value)
    assert snapshot(root) == before and dec.records() == []


def test_a_move_that_fails_is_logged_rolled_back_and_reported_as_a_decision_error(tmp_path, monkeypatch):
    import train.decisions as D

    root = _with_manifest(tiny_dataset(tmp_path / "d"))
    before = snapshot(root)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(D, "move_noclobber", refuse)
    dec = Decisions(root)
    with pytest.raises(DecisionError, match=r"could not move boa/0.png to cobra/0_1.png \(Permission denied\)"):
        dec.decide("boa/0.png", "relabel", "cobra")
    after = snapshot(root)
    assert after.pop(LOG_FILE.as_posix()) and after == before  # only the journal changed
    assert [(r["id"], r["status"]) for r in dec.records()] == [(1, "rolled_back")]  # nothing left pending
    monkeypatch.undo()
    assert dec.decide("boa/0.png", "relabel", "cobra")["status"] == "done"  # and the next decision works


def test_the_workbench_api_refuses_bad_arguments_with_a_clear_message(tmp_path):
    from gradio_client import Client

    from tests.conftest import free_port
    from train.clean_ui import build_ui

    root = tiny_dataset(tmp_path / "d")
    rows = [
        {
            "path": f"boa/{i}.png",
            "label": "boa",
            "pred_label": "cobra",
            "pred_conf": "0.8",
            "label_quality": "0.1",
            "label_issue": "True",
            "outlier": "",
            "outlier_score": "0",
            "dup_of": "",
            "flags": "",
        }
        for i in range(3)
    ]
    before = snapshot(root)
    demo = build_ui(root, rows)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        assert len(client.predict("label", 2, api_name="/queue")) == 2
        assert client.predict("label", 0, api_name="/queue") == []
        for args, api, needle in [
            (("label", -1), "/queue", "limit must be a whole number, at least 0; got -1"),
            (("label", 1.5), "/queue", "limit must be a whole number"),
            (("nope", 3), "/queue", "unknown queue 'nope'"),
            ((0,), "/undo", "n must be a whole number, at least 1; got 0"),
            (("abc",), "/undo", "n must be a whole number, at least 1; got 'abc'"),
            (("boa/0.png", "relabel", "x\ny"), "/decide", "control character"),
        ]:
            with pytest.raises(Exception, match=needle):
                client.predict(*args, api_name=api)
        assert snapshot(root) == before  # nothing moved
    finally:
        demo.close()


def test_keeping_a_photo_twice_logs_one_decision_so_one_undo_brings_it_back(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    dec = Decisions(root)
    first = dec.decide("boa/0.png", "keep")
    again = dec.decide("boa/0.png", "keep")  # e.g. a double click, or the API called twice
    assert again["id"] == first["id"] and [r["id"] for r in dec.live()] == [first["id"]]
    dec.undo(1)
    assert dec.live() == []
    assert dec.decide("boa/0.png", "keep")["id"] != first["id"]  # after the undo it can be kept again


# ---- splits.csv follows every move, so a decision never moves a photo across the train/valid split -------------


def _with_splits(root: Path, valid: set[str], eol: str = "\n") -> Path:
    """splits.csv as train.split writes it (path,split), every image named; `valid` holds the valid ones."""
    rows = ["path,split"] + [
        f"{rel},{'valid' if rel in valid else 'train'}"
        for rel in sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.png"))
    ]
    (root / "splits.csv").write_bytes((eol.join(rows) + eol).encode())
    return root


def _files(root_or_snapshot: Path | dict) -> dict[str, str]:
    """A snapshot without the journal."""
    snap = snapshot(root_or_snapshot) if isinstance(root_or_snapshot, Path) else root_or_snapshot
    return {k: v for k, v in snap.items() if not k.startswith(".clean/")}


def _splits(root: Path) -> dict[str, str]:
    import csv

    with open(root / "splits.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = {r["path"]: r["split"] for r in rows}
    assert len(out) == len(rows), "a path named twice in splits.csv"
    return out


def _as_fit_splits(root: Path) -> dict[str, str]:
    """Where train.fit puts every photo (train.data.read_splits)."""
    from train.data import list_images, read_splits

    ds = list_images(root)
    tr, va = read_splits(ds)
    return {ds.rel(ds.paths[i]): "train" for i in tr} | {ds.rel(ds.paths[i]): "valid" for i in va}


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_a_relabelled_photo_stays_in_its_split_and_undo_restores_splits_csv_byte_for_byte(tmp_path, eol):
    root = _with_splits(_with_manifest(tiny_dataset(tmp_path / "d")), {"cobra/1.png", "boa/2.png"}, eol)
    before = snapshot(root)
    dec = Decisions(root)
    moved = dec.decide("cobra/1.png", "relabel", "boa")["new_path"]
    assert moved == "boa/1_1.png"  # boa/1.png is taken
    assert _splits(root)[moved] == "valid" and "cobra/1.png" not in _splits(root)
    assert _as_fit_splits(root)[moved] == "valid"  # not silently put in train
    other = dec.decide("boa/0.png", "relabel", "cobra")["new_path"]
    assert other == "cobra/0_1.png" and _splits(root)[other] == "train"
    assert (root / "splits.csv").read_bytes().count(eol.encode()) == 7  # line endings kept
    dec.undo(2)
    assert _files(root) == _files(before)  # splits.csv and manifest.csv byte for byte


@pytest.mark.parametrize("action", ["delete", "not_snake"])
def test_a_photo_that_leaves_the_dataset_keeps_a_harmless_row_that_undo_brings_back(tmp_path, action):
    root = _with_splits(tiny_dataset(tmp_path / "d"), {"boa/0.png", "cobra/0.png"})
    before = snapshot(root)
    dec = Decisions(root)
    gone = dec.decide("boa/0.png", action)["new_path"]
    assert gone.startswith(("_trash/", "_not_snake/")) and _splits(root)[gone] == "valid"
    assert "boa/0.png" not in _splits(root)
    fit = _as_fit_splits(root)
    assert gone not in fit and "boa/0.png" not in fit and fit["cobra/0.png"] == "valid"
    dec.undo(1)
    assert _files(root) == _files(before) and _as_fit_splits(root)["boa/0.png"] == "valid"


def test_a_stale_row_for_the_name_a_photo_moves_to_is_dropped(tmp_path):
    root = _with_splits(tiny_dataset(tmp_path / "d"), {"cobra/2.png", "boa/1.png"})
    (root / "boa" / "2.png").unlink()  # removed by hand: its row (train) stays in splits.csv
    Decisions(root).decide("cobra/2.png", "relabel", "boa")  # lands on boa/2.png
    assert _splits(root)["boa/2.png"] == "valid"  # one row for the path, the moved photo's


def test_a_photo_splits_csv_does_not_name_moves_without_touching_it(tmp_path):
    root = _with_splits(tiny_dataset(tmp_path / "d"), {"cobra/2.png", "boa/1.png"})
    Image.new("RGB", (9, 9), (1, 2, 3)).save(root / "cobra" / "new.png")  # added after the split
    text = (root / "splits.csv").read_bytes()
    rec = Decisions(root).decide("cobra/new.png", "relabel", "boa")
    assert rec["splits"] is None and (root / "splits.csv").read_bytes() == text


@pytest.mark.parametrize("step", ["pending", "moved", "manifest", "splits"])
def test_a_crash_between_steps_leaves_splits_csv_naming_the_photo_where_it_is(tmp_path, step):
    root = _with_splits(_with_manifest(tiny_dataset(tmp_path / "d")), {"cobra/1.png", "boa/2.png"})

    def crash(s):
        if s == step:
            raise KeyboardInterrupt(f"simulated crash after {s}")

    with pytest.raises(KeyboardInterrupt):
        Decisions(root, hook=crash).decide("cobra/1.png", "relabel", "boa")
    (rec,) = Decisions(root).recovered
    where = "cobra/1.png" if step == "pending" else "boa/1_1.png"
    assert rec["status"] == ("rolled_back" if step == "pending" else "done")
    assert (root / where).is_file() and _splits(root)[where] == "valid"
    assert set(_splits(root)) == {p.relative_to(root).as_posix() for p in root.glob("*/*.png")}
    assert f"{where},{where.split('/')[0]},web" in (root / "manifest.csv").read_text()


def test_replay_moves_the_rows_of_the_copys_own_splits_csv(tmp_path):
    a = _with_splits(tiny_dataset(tmp_path / "a"), {"cobra/1.png", "boa/2.png"})
    b = tmp_path / "b"
    import shutil

    shutil.copytree(a, b)
    _with_splits(b, {"cobra/2.png", "boa/0.png"})  # the copy was split differently
    Decisions(a).decide("cobra/1.png", "relabel", "boa")
    Decisions(a).decide("cobra/2.png", "relabel", "boa")
    Decisions(b).replay(a / LOG_FILE)
    assert _splits(b)["boa/1_1.png"] == "train" and _splits(b)["boa/2_1.png"] == "valid"
    assert "cobra/1.png" not in _splits(b) and "cobra/2.png" not in _splits(b)


# ---- replay resumes where it stopped ---------------------------------------------------------------------------


def _source_and_copy(tmp_path: Path) -> tuple[Path, Path, Path]:
    import shutil

    a = _with_splits(_with_manifest(tiny_dataset(tmp_path / "a")), {"cobra/1.png", "boa/2.png"})
    b = tmp_path / "b"
    shutil.copytree(a, b)
    dec = Decisions(a)
    dec.decide("boa/0.png", "keep")
    dec.decide("boa/1.png", "delete")
    dec.decide("cobra/1.png", "relabel", "boa")
    dec.decide("cobra/2.png", "not_snake")
    dec.decide("boa/2.png", "relabel", "cobra")
    dec.undo(1)
    return a, b, a / LOG_FILE


def test_a_replay_that_stopped_part_way_resumes_and_a_finished_one_is_a_no_op(tmp_path, capsys, caplog):
    a, b, log = _source_and_copy(tmp_path)
    held = tmp_path / "held.png"
    (b / "cobra" / "2.png").rename(held)  # still syncing into the copy
    assert clean.main([str(b), "--replay", str(log)]) == 2
    err = capsys.readouterr().err
    assert "replay stopped at decision 4: cobra/2.png is missing" in err and "run the same replay again" in err
    assert [r["replayed_from"] for r in Decisions(b).done()] == [1, 2, 3]

    held.rename(b / "cobra" / "2.png")
    with caplog.at_level("WARNING", logger="train.decisions"):
        assert clean.main([str(b), "--replay", str(log)]) == 0
    assert "replayed 3 decision(s)" in capsys.readouterr().out
    assert "skipped 3 decision(s)" in caplog.text
    done = Decisions(b).done()
    assert [r["replayed_from"] for r in done] == [1, 2, 3, 4, 5, 6]  # no second keep, nothing twice
    assert done[-1]["undoes"] == done[-2]["id"]
    assert _files(b) == _files(a)  # folders, manifest and splits as on the source

    before = snapshot(b)
    caplog.clear()
    with caplog.at_level("WARNING", logger="train.decisions"):
        assert clean.main([str(b), "--replay", str(log)]) == 0
    assert "replayed 0 decision(s)" in capsys.readouterr().out
    assert "all 6 decision(s)" in caplog.text and "already applied" in caplog.text
    assert snapshot(b) == before  # not even the journal changed


def test_replaying_onto_a_copy_made_after_the_decisions_is_a_no_op(tmp_path):
    import shutil

    a, _, log = _source_and_copy(tmp_path)
    c = tmp_path / "c"
    shutil.copytree(a, c)
    before = snapshot(c)
    assert Decisions(c).replay(log) == [] and snapshot(c) == before
    shutil.rmtree(c / ".clean")  # the folders were copied, the journal was not
    before = snapshot(c)
    dec = Decisions(c)
    out = dec.replay(log)
    # the moves are found done on disk and skipped; the keep (which moves nothing) and the relabel that was undone
    # (the photo is back where it started, so nothing on disk shows it) are applied again, to the same end
    assert [r["action"] for r in out] == ["keep", "relabel", "undo"] and dec.replay_skipped == [2, 3, 4]
    assert out[2]["undoes"] == out[1]["id"]
    assert _files(c) == _files(before)


# ---- a manifest.csv (or splits.csv) that is not UTF-8 ----------------------------------------------------------


@pytest.mark.parametrize("name", ["manifest.csv", "splits.csv"])
def test_a_csv_that_is_not_utf8_is_refused_by_name_before_anything_moves(tmp_path, capsys, name):
    root = _with_splits(_with_manifest(tiny_dataset(tmp_path / "d")), {"cobra/1.png", "boa/2.png"})
    f = root / name
    extra = (
        "cobra/zz.png,cobra,Jos\u00e9 N\u00fa\u00f1ez\n" if name == "manifest.csv" else "cobra/Jos\u00e9.png,train\n"
    )
    f.write_bytes(f.read_bytes() + extra.encode("cp1252"))  # re-saved by a spreadsheet in Windows-1252
    before = snapshot(root)
    dec = Decisions(root)
    for action, label in (("relabel", "cobra"), ("delete", None), ("not_snake", None)):
        with pytest.raises(DecisionError) as e:
            dec.decide("boa/1.png", action, label)
        msg = str(e.value)
        assert str(f) in msg and "not UTF-8" in msg and "must be UTF-8" in msg and "re-save it as UTF-8" in msg
        assert "No file was moved" in msg
    assert dec.decide("boa/1.png", "keep")["status"] == "done"  # keeping moves nothing and edits neither file
    after = snapshot(root)
    assert after.pop(LOG_FILE.as_posix()) and after == before


def test_an_undo_after_the_manifest_was_resaved_in_another_encoding_is_refused_before_anything_moves(tmp_path, capsys):
    root = _with_manifest(tiny_dataset(tmp_path / "d"))
    Decisions(root).decide("boa/1.png", "relabel", "cobra")
    f = root / "manifest.csv"
    f.write_bytes(f.read_bytes() + "boa/x.png,boa,Jos\u00e9\n".encode("cp1252"))  # a spreadsheet re-saved it
    before = snapshot(root)
    with pytest.raises(DecisionError, match="must be UTF-8") as e:  # the workbench's undo button
        Decisions(root).undo(1)
    assert str(e.value).startswith(f"{f} is not UTF-8") and "No file was moved" in str(e.value)
    assert snapshot(root) == before
    assert clean.main([str(root), "--undo", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {f} is not UTF-8") and "Traceback" not in err
    assert snapshot(root) == before  # the file, the manifest and the journal as they were
    f.write_bytes(f.read_bytes().decode("cp1252").encode("utf-8"))  # re-saved as UTF-8: the undo goes through
    assert clean.main([str(root), "--undo", "1"]) == 0 and (root / "boa" / "1.png").is_file()


def test_a_manifest_saved_with_a_byte_order_mark_is_still_updated(tmp_path):
    root = _with_manifest(tiny_dataset(tmp_path / "d"))
    f = root / "manifest.csv"
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())  # a spreadsheet's "CSV UTF-8"
    Decisions(root).decide("boa/1.png", "relabel", "cobra")
    text = f.read_bytes()
    assert text.startswith(b"\xef\xbb\xbf") and b"cobra/1_1.png,cobra,web" in text and b"boa/1.png" not in text


# ---- ATTRIBUTION.md follows every decision, as manifest.csv does -----------------------------------------------


def _with_gather_manifest(root: Path) -> Path:
    """manifest.csv in gather's format (one row per image) and the ATTRIBUTION.md gather writes from it."""
    from train import manifest as mf

    rows = [
        {
            "class": p.parent.name,
            "source": "folder",
            "licence": "cc-by" if i % 2 else "cc-by-nc",
            "author": f"Author {i}",
            "use": "publishable" if i % 2 else "train-only",
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            "path": p.relative_to(root).as_posix(),
        }
        for i, p in enumerate(sorted(root.glob("*/*.png")))
    ]
    mf.write_manifest(root, rows)
    mf.write_attribution(root, rows)
    return root


def _attribution(root: Path) -> tuple[str, str]:
    """(ATTRIBUTION.md as it is, what manifest's writer makes of manifest.csv as it is)."""
    from train import manifest as mf

    return (root / "ATTRIBUTION.md").read_text(encoding="utf-8"), mf.attribution_markdown(mf.read_manifest(root))


@pytest.mark.parametrize("action", ["delete", "not_snake", "relabel"])
def test_attribution_md_follows_a_decision_and_its_undo(tmp_path, action):
    root = _with_gather_manifest(tiny_dataset(tmp_path / "d"))
    before = (root / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "6 images:" in before and "`cobra/1.png`" in before
    dec = Decisions(root)
    rec = dec.decide("cobra/1.png", action, "boa" if action == "relabel" else None)
    text, want = _attribution(root)
    assert text == want and "`cobra/1.png`" not in text
    if action == "relabel":
        assert rec["new_path"] == "boa/1_1.png" and "6 images:" in text
        assert "## boa (4 images)" in text and "## cobra (2 images)" in text and "`boa/1_1.png`" in text
    else:
        assert "5 images:" in text and "## cobra (2 images)" in text and rec["new_path"] not in text
    dec.undo(1)
    text, want = _attribution(root)
    assert text == want == before


def test_attribution_md_follows_a_replay_and_a_recovered_decision(tmp_path):
    import shutil

    a = _with_gather_manifest(tiny_dataset(tmp_path / "a"))
    b = tmp_path / "b"
    shutil.copytree(a, b)
    Decisions(a).decide("boa/0.png", "delete")
    Decisions(a).decide("cobra/2.png", "relabel", "boa")
    Decisions(b).replay(a / LOG_FILE)
    assert _attribution(b)[0] == _attribution(b)[1] == _attribution(a)[0]
    assert "5 images:" in _attribution(b)[0] and "`boa/2_1.png`" in _attribution(b)[0]

    def crash(s):
        if s == "splits":
            raise KeyboardInterrupt("simulated crash after the manifest edit")

    with pytest.raises(KeyboardInterrupt):
        Decisions(b, hook=crash).decide("cobra/1.png", "not_snake")
    assert "`cobra/1.png`" in _attribution(b)[0]  # the decision is not done yet
    (rec,) = Decisions(b).recovered
    text, want = _attribution(b)
    assert rec["status"] == "done" and text == want and "`cobra/1.png`" not in text and "4 images:" in text


def test_a_failing_attribution_write_leaves_the_decision_done_with_a_warning(tmp_path, monkeypatch, caplog):
    import train.decisions as D

    root = _with_gather_manifest(tiny_dataset(tmp_path / "d"))
    before = (root / "ATTRIBUTION.md").read_text(encoding="utf-8")

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(D, "write_attribution", full)
    dec = Decisions(root)
    with caplog.at_level("WARNING", logger="train.decisions"):
        rec = dec.decide("cobra/1.png", "relabel", "boa")
    assert rec["status"] == "done" and dec.records()[-1]["status"] == "done"
    assert (root / "boa" / "1_1.png").is_file() and not (root / "cobra" / "1.png").exists()
    assert "boa/1_1.png" in (root / "manifest.csv").read_text()
    assert "ATTRIBUTION.md" in caplog.text and "No space left on device" in caplog.text
    assert "the decision is done" in caplog.text
    assert (root / "ATTRIBUTION.md").read_text(encoding="utf-8") == before  # the old one, whole
    monkeypatch.undo()
    dec.decide("boa/0.png", "delete")  # the next decision writes it again, with both changes
    text, want = _attribution(root)
    assert text == want and "`boa/1_1.png`" in text and "`boa/0.png`" not in text


def test_a_dataset_without_a_gather_manifest_gets_no_attribution_md(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    Decisions(root).decide("boa/0.png", "delete")
    assert not (root / "ATTRIBUTION.md").exists()
    root = _with_manifest(tiny_dataset(tmp_path / "e"))  # a hand-made manifest (path,class,source)
    Decisions(root).decide("boa/0.png", "relabel", "cobra")
    assert not (root / "ATTRIBUTION.md").exists()


def test_undoing_a_relabel_into_a_new_class_leaves_no_empty_class_folder(tmp_path):
    root = tiny_dataset(tmp_path / "d")

    def class_folders() -> list[str]:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    before = class_folders()
    dec = Decisions(root)
    dec.decide("boa/0.png", "relabel", "krait")
    dec.decide("boa/1.png", "relabel", "krait")
    dec.undo(1)
    assert (root / "krait" / "0.png").is_file()  # the other photo still lives there: the folder stays
    dec.undo(1)
    assert not (root / "krait").exists()  # its last photo went back: no empty "class" left for fit or the workbench
    assert class_folders() == before == ["boa", "cobra"]
    dec.decide("boa/0.png", "delete")
    dec.undo(1)
    assert not (root / "_trash").exists() and (root / "boa" / "0.png").is_file()
    dec.decide("boa/0.png", "relabel", "krait")  # and the class can be made again
    assert (root / "krait" / "0.png").is_file()


def test_undo_keeps_a_class_folder_that_was_there_before_the_relabel(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    (root / "krait").mkdir()  # made by hand as the relabel target, as the workbench API asks for a new class
    dec = Decisions(root)
    dec.decide("boa/0.png", "relabel", "krait")
    dec.undo(1)
    assert (root / "krait").is_dir() and not any((root / "krait").iterdir())
    assert (root / "boa" / "0.png").is_file()
