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
