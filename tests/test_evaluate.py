"""train.evaluate: numbers against a hand-computed case, a real run on a tiny artifact, bad inputs; OOD photos."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snake_model.loader import load_image
from snake_model.predictor import Predictor
from snake_model.spec import ModelSpec
from train import evaluate
from train import metrics as M

# Calibrated rows: every confidence sits mid-bin (15 bins) so the ECE below is easy to do by hand.
CAL = {
    "a0": [0.95, 0.03, 0.02],  # a, right, conf .95
    "a1": [0.85, 0.10, 0.05],  # a, right, .85
    "a2": [0.30, 0.65, 0.05],  # b, wrong, .65
    "a3": [0.35, 0.20, 0.45],  # c, wrong, .45
    "b0": [0.15, 0.75, 0.10],  # b, right, .75
    "b1": [0.03, 0.95, 0.02],  # b, right, .95
    "b2": [0.55, 0.40, 0.05],  # a, wrong, .55
    "c0": [0.05, 0.10, 0.85],  # c, right, .85
    "c1": [0.20, 0.15, 0.65],  # c, right, .65
    "c2": [0.10, 0.75, 0.15],  # b, wrong, .75
}
# Out-of-distribution photos: confidences .40, .50 and .97 (OOD scores .60, .50, .03).
OOD = {"x0": [0.40, 0.30, 0.30], "x1": [0.50, 0.25, 0.25], "x2": [0.97, 0.02, 0.01]}


def overconfident(row: list[float]) -> list[float]:
    """The uncalibrated row: same argmax, confidence .99."""
    out = [0.005] * 3
    out[int(np.argmax(row))] = 0.99
    return out


class FixedPredictor(Predictor):
    """A Predictor whose probabilities are looked up by file name; decide() is the real one."""

    def __init__(self, model_dir, **_):
        from snake_model.artifact import load_spec

        self.spec = load_spec(model_dir)
        self.labels = list(self.spec.labels)
        self.calls = []

    def predict_proba(self, images, calibrated=True):
        rows = []
        for p in images:
            load_image(p)  # unreadable files raise ImageLoadError, as in the real predictor
            stem = Path(p).stem
            row = CAL.get(stem) or OOD[stem]
            rows.append(row if calibrated else overconfident(row))
        return np.asarray(rows, dtype=np.float64)

    def predict_batch(self, images):
        return [self.decide(row) for row in self.predict_proba(images, calibrated=True)]  # max-softmax score

    def predict_with_uncalibrated(self, images):
        return self.predict_proba(images, calibrated=False), self.predict_batch(images)


def spec_only_artifact(d: Path, labels=("a", "b", "c")) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(labels=list(labels), temperature=1.7, abstain_threshold=0.4, weights_sha256="0" * 64)
    spec.save(d / "config.json")
    return d


def write_jpg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def fixed_case(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "Predictor", FixedPredictor)
    art = spec_only_artifact(tmp_path / "art")
    data = tmp_path / "data"
    for i, stem in enumerate(CAL):
        write_jpg(data / stem[0] / f"{stem}.jpg", i)
    (data / "a" / "broken.jpg").write_bytes(b"<html>not a photo</html>")
    ood = tmp_path / "ood"
    for i, stem in enumerate(OOD):
        write_jpg(ood / f"{stem}.jpg", 100 + i)
    (ood / "empty.png").write_bytes(b"")
    return art, data, ood


def test_evaluate_numbers_equal_a_hand_computed_confusion_matrix(fixed_case, tmp_path):
    art, data, ood = fixed_case
    out = tmp_path / "report"
    assert evaluate.main([str(art), str(data), "--ood", str(ood), "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())

    assert r["n"] == 10
    assert r["confusion"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]  # rows actual a, b, c
    assert r["error"] == pytest.approx(0.4)
    expected = {  # precision = diagonal / column, recall = diagonal / row
        "a": (2 / 3, 2 / 4, 4 / 7, 4),
        "b": (2 / 4, 2 / 3, 4 / 7, 3),
        "c": (2 / 3, 2 / 3, 2 / 3, 3),
    }
    for lab, (p, rec, f1, support) in expected.items():
        got = r["per_class"][lab]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, rec, f1))
        assert got["support"] == support
    # ECE by bin: .95 {2 right} .05*.2 + .85 {2 right} .15*.2 + .75 {1/2} .25*.2 + .65 {1/2} .15*.2
    #             + .55 {wrong} .55*.1 + .45 {wrong} .45*.1 = .01 + .03 + .05 + .03 + .055 + .045
    assert r["calibrated"]["ece"] == pytest.approx(0.22)
    assert r["uncalibrated"]["ece"] == pytest.approx(abs(0.6 - 0.99))  # one bin, accuracy .6
    assert r["calibrated"]["nll"] == pytest.approx(
        -np.mean(np.log([0.95, 0.85, 0.30, 0.35, 0.75, 0.95, 0.40, 0.85, 0.65, 0.15]))
    )
    # abstain when 1 - confidence > .4: a3 (.45) and b2 (.55); both are wrong
    assert r["abstain"]["rate"] == pytest.approx(0.2)
    assert r["abstain"]["error_when_answered"] == pytest.approx(2 / 8)
    # unreadable files are counted and listed, never fatal
    assert r["n_unreadable"] == 1 and list(r["unreadable"]) == ["a/broken.jpg"]
    o = r["ood"]
    assert o["n"] == 3 and o["n_unreadable"] == 1 and "empty.png" in o["unreadable"]
    # in-distribution OOD scores .05 .15 .35 .55 .25 .05 .45 .15 .35 .25; OOD .60 beats 10, .50 beats 9, .03 none
    assert o["auroc"] == pytest.approx(19 / 30)
    assert o["abstain_rate_ood"] == pytest.approx(2 / 3)
    assert o["false_abstain_rate"] == pytest.approx(0.2)
    assert [a["file"] for a in o["answered"]] == ["x2.jpg"]  # confidence .97: not abstained
    md = (out / "report.md").read_text()
    assert "40.0 %" in md and "broken.jpg" in md
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert (out / "confusion_matrix.png").stat().st_size > 1000


def test_folder_names_can_be_mapped_or_skipped(fixed_case, tmp_path, capsys):
    art, data, _ = fixed_case
    (data / "a").rename(data / "alpha")
    for i in range(2):
        write_jpg(data / "zebra" / f"a{i}.jpg", 50 + i)  # an unknown class folder, reusing known stems
    out = tmp_path / "r"
    assert evaluate.main([str(art), str(data), "--map", "alpha=a", "--skip-unknown", "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["n"] == 10 and r["skipped_folders"] == ["zebra"] and r["folders"]["alpha"] == "a"
    assert r["confusion"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert "zebra" in capsys.readouterr().err


def test_real_run_on_a_tiny_artifact_matches_the_predictor(tiny_artifact, synth_data, tmp_path):
    out = tmp_path / "eval"
    ood = tmp_path / "ood"
    for i in range(3):
        write_jpg(ood / f"noise{i}.jpg", i)
    assert evaluate.main([str(tiny_artifact), str(synth_data), "--out", str(out), "--ood", str(ood), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["n"] == 36 and np.sum(r["confusion"]) == 36
    assert r["labels"] == json.loads((tiny_artifact / "config.json").read_text())["labels"]
    # the same numbers straight from the predictor
    pred = Predictor(tiny_artifact)
    paths = sorted(synth_data.glob("*/*.jpg"))
    y = np.asarray([pred.labels.index(p.parent.name) for p in paths])
    probs = pred.predict_proba(paths)
    assert r["error"] == pytest.approx(float((probs.argmax(1) != y).mean()))
    served = pred.predict_batch(paths)  # the app's path: calibrated probabilities and the stored abstain score
    assert r["abstain"]["rate"] == pytest.approx(np.mean([p.abstain for p in served]))
    assert r["abstain"]["score"] == pred.spec.abstain_score
    in_scores = [p.ood_score for p in served]
    out_scores = [p.ood_score for p in pred.predict_batch(sorted(ood.glob("*.jpg")))]
    assert r["ood"]["auroc"] == pytest.approx(M.auroc(in_scores, out_scores))
    assert r["uncalibrated"]["ece"] == pytest.approx(M.ece(pred.predict_proba(paths, calibrated=False), y))
    assert 0.0 <= r["calibrated"]["ece"] <= 1.0 and 0.0 <= r["ood"]["auroc"] <= 1.0
    for name in ("report.md", "report.html", "confusion_matrix.png", "reliability.png"):
        assert (out / name).stat().st_size > 0


def test_default_out_is_inside_the_artifact(fixed_case):
    art, data, _ = fixed_case
    assert evaluate.main([str(art), str(data), "--quiet"]) == 0
    assert (art / "eval-data" / "report.json").is_file()


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing_data", "is not a directory"),
        ("missing_artifact", "is not a directory"),
        ("no_config", "config.json not found"),
        ("label_mismatch", "model labels: ['a', 'b', 'c']"),
        ("bad_map", "--map"),
        ("ood_missing", "--ood"),
        ("out_is_the_model", "is a model folder"),
        ("map_unknown_folder", "its sub-folders: ['a', 'b', 'c']"),
        ("out_in_data", "inside the data folder"),
        ("out_in_ood", "inside the --ood folder"),
        ("out_is_a_file", "is a file"),
    ],
)
def test_bad_inputs_exit_2_with_a_clear_message(fixed_case, tmp_path, capsys, monkeypatch, case, needle):
    art, data, _ = fixed_case
    args = [str(art), str(data), "--quiet"]
    if case == "missing_data":
        args[1] = str(tmp_path / "nope")
    elif case == "missing_artifact":
        args[0] = str(tmp_path / "nope")
    elif case == "no_config":
        (art / "config.json").unlink()
    elif case == "label_mismatch":
        (data / "c").rename(data / "purple_star")
    elif case == "bad_map":
        args += ["--map", "a"]
    elif case == "ood_missing":
        args += ["--ood", str(tmp_path / "nope")]
    elif case == "out_is_the_model":
        args += ["--out", str(art)]
        before = (art / "confusion_matrix.png").read_bytes() if (art / "confusion_matrix.png").exists() else None
    elif case == "map_unknown_folder":
        args += ["--map", "nosuch=a"]
    elif case == "out_in_data":
        args += ["--out", str(data / "c")]  # the report's PNGs would be counted as photos of c next time
    elif case == "out_in_ood":
        args += ["--ood", str(tmp_path / "ood"), "--out", str(tmp_path / "ood" / "report")]
    elif case == "out_is_a_file":
        (tmp_path / "taken").write_text("keep me")
        args += ["--out", str(tmp_path / "taken")]
        monkeypatch.setattr(evaluate, "Predictor", None)  # refused up front: the model is never loaded
    assert evaluate.main(args) == 2
    assert not list(data.rglob("*.png")) and not (tmp_path / "ood" / "report").exists()
    if case == "out_is_a_file":
        assert (tmp_path / "taken").read_text() == "keep me"
    if case == "out_is_the_model":
        after = (art / "confusion_matrix.png").read_bytes() if (art / "confusion_matrix.png").exists() else None
        assert after == before
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err


def test_ood_photos_are_real_non_snake_images(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.ood_photos import write_ood_photos

    files = write_ood_photos(tmp_path / "ood")
    assert 40 <= len(files) <= 80
    names = {f.stem for f in files}
    assert {"astronaut", "coffee", "chelsea", "china", "flower"} <= names
    assert not any("snake" in n for n in names)
    for f in random.Random(0).sample(files, 8):
        assert min(load_image(f).size) >= 16


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_bad_batch_size_stops_at_parse_time(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(tmp_path), str(tmp_path), "--batch-size", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --batch-size" in err, err
    assert "use a whole number at least 1" in err or f"{value!r} is not a whole number" in err, err


def test_file_names_that_are_not_utf8_are_reported_not_fatal(fixed_case, tmp_path, monkeypatch, capsys):
    """An unreadable labelled photo and an answered OOD photo, both named with the byte 0xE9 (not UTF-8)."""
    art, data, ood = fixed_case
    try:
        with open(os.path.join(os.fsencode(data / "a"), b"caf\xe9.jpg"), "wb") as fh:
            fh.write(b"<html>not a photo</html>")
        os.rename(os.fsencode(ood / "x2.jpg"), os.path.join(os.fsencode(ood), b"x2\xe9.jpg"))
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    monkeypatch.setitem(OOD, os.fsdecode(b"x2\xe9"), OOD["x2"])
    out = tmp_path / "report"
    assert evaluate.main([str(art), str(data), "--ood", str(ood), "--out", str(out), "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    r = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert sorted(r["unreadable"]) == sorted(["a/broken.jpg", os.fsdecode(b"a/caf\xe9.jpg")])  # the real names
    assert [a["file"] for a in r["ood"]["answered"]] == [os.fsdecode(b"x2\xe9.jpg")]
    md = (out / "report.md").read_text(encoding="utf-8")
    page = (out / "report.html").read_text(encoding="utf-8")
    for text in (md, page):
        assert "caf\\xe9.jpg" in text and "broken.jpg" in text
    assert "`x2\\xe9.jpg` (a, 0.030)" in md and "data:image/png;base64," in page


@pytest.mark.parametrize("skip_unknown", [False, True])
def test_a_class_folder_of_only_unreadable_files_is_listed_not_fatal(fixed_case, tmp_path, skip_unknown):
    art, data, _ = fixed_case
    for p in (data / "c").iterdir():
        p.unlink()
    (data / "c" / "c0.jpg").write_bytes(b"")
    (data / "c" / "c1.jpg").write_bytes(b"<html>not a photo</html>")
    args = [str(art), str(data), "--out", str(tmp_path / "r"), "--quiet"]
    if skip_unknown:  # and an unlabelled folder of junk files, skipped
        (data / "zebra").mkdir()
        (data / "zebra" / "z.jpg").write_bytes(b"junk")
        args.append("--skip-unknown")
    assert evaluate.main(args) == 0
    r = json.loads((tmp_path / "r" / "report.json").read_text())
    assert r["n"] == 7 and r["per_class"]["c"]["support"] == 0
    assert sorted(r["unreadable"]) == ["a/broken.jpg", "c/c0.jpg", "c/c1.jpg"]
    assert r["skipped_folders"] == (["zebra"] if skip_unknown else [])
    md = (tmp_path / "r" / "report.md").read_text()
    assert "c/c0.jpg" in md and "c/c1.jpg" in md


def test_a_label_without_images_shows_n_a_and_is_left_out_of_macro_f1(fixed_case, tmp_path):
    import shutil

    art, data, _ = fixed_case
    shutil.rmtree(data / "c")  # a3 is still predicted as c: precision 0, recall and F1 undefined
    out = tmp_path / "r"
    assert evaluate.main([str(art), str(data), "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    c = r["per_class"]["c"]
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, None, None, 0)
    assert r["macro_f1"] == pytest.approx((4 / 7 + 2 / 3) / 2)  # a and b only
    assert "| c | 0.000 | n/a | n/a | 0 |" in (out / "report.md").read_text()
    assert "<td>c</td><td>0.000</td><td>n/a</td><td>n/a</td><td>0</td>" in (out / "report.html").read_text()


def test_file_names_cannot_put_html_into_the_reports_or_break_code_spans(fixed_case, tmp_path, monkeypatch):
    import html

    import markdown_it  # installed with gradio (its Markdown renderer)

    art, data, ood = fixed_case
    evil = "<img src=x onerror=alert(1)>.jpg"
    (data / "a" / evil).write_bytes(b"")  # unreadable: the reason text repeats the name
    ticks = "x`` `<b>bold"  # an answered OOD photo whose name holds backticks and HTML
    (ood / "x2.jpg").rename(ood / f"{ticks}.jpg")
    monkeypatch.setitem(OOD, ticks, OOD["x2"])
    (ood / "e`vil<i>.png").write_bytes(b"")  # an unreadable OOD photo
    out = tmp_path / "r"
    assert evaluate.main([str(art), str(data), "--ood", str(ood), "--out", str(out), "--quiet"]) == 0
    md = (out / "report.md").read_text()
    rendered = markdown_it.MarkdownIt("commonmark").render(md)  # raw HTML on
    for tag in ("<img src=x", "<b>", "<i>"):  # (the two report pictures are the only <img> tags)
        assert tag not in rendered.replace('"', "")
    for name in (f"a/{evil}", f"{ticks}.jpg", "e`vil<i>.png"):
        assert f"<code>{html.escape(name, quote=False)}</code>" in rendered.replace("&quot;", '"'), name
    page = (out / "report.html").read_text()
    for tag in ("<img src=x", "<b>", "<i>"):
        assert tag not in page
    assert html.escape(f"{ticks}.jpg") in page and html.escape("e`vil<i>.png") in page  # OOD lists in the page too


def test_a_picture_that_cannot_be_drawn_is_a_warning_and_the_report_is_written(
    fixed_case, tmp_path, monkeypatch, capsys
):
    from train import plots

    art, data, _ = fixed_case
    out = tmp_path / "r"
    out.mkdir()
    (out / "confusion_matrix.png").write_bytes(b"a picture of an earlier run")

    def broken(*a, **k):
        raise ValueError("\n^\nParseSyntaxException: Expected end of text")

    monkeypatch.setattr(plots, "confusion_png", broken)
    assert evaluate.main([str(art), str(data), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: confusion_matrix.png could not be drawn (ValueError: ^ ParseSyntaxException" in err, err
    assert "Traceback" not in err
    assert not (out / "confusion_matrix.png").exists()  # the earlier run's picture does not pass for this one's
    assert json.loads((out / "report.json").read_text())["n"] == 10
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "(confusion matrix: not drawn)" in md and "![reliability diagram](reliability.png)" in md
    assert "(confusion matrix: not drawn)" in page and "data:image/png;base64," in page


def test_a_report_that_cannot_be_made_still_writes_the_numbers(fixed_case, tmp_path, monkeypatch, capsys):
    art, data, _ = fixed_case
    out = tmp_path / "r"
    out.mkdir()
    (out / "report.md").write_text("the report of an earlier run")

    def broken(*a, **k):
        raise RuntimeError("a bug in the HTML page")

    monkeypatch.setattr(evaluate, "to_html", broken)
    assert evaluate.main([str(art), str(data), "--out", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "report.md and report.html could not be made (RuntimeError: a bug in the HTML page)" in captured.err
    assert str(out / "report.json") in captured.err and "Traceback" not in captured.err
    assert "10 images: error 40.0 %" in captured.out  # the numbers are still shown
    r = json.loads((out / "report.json").read_text())
    assert r["n"] == 10 and r["confusion"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert not (out / "report.md").exists() and not (out / "report.html").exists()  # no stale report beside it


def write_metrics(art: Path, train: list[str] | None, valid: list[str] | None) -> None:
    m = {"valid_error": 0.1}
    if train is not None:
        m["train_paths"] = train
    if valid is not None:
        m["valid_paths"] = valid
    (art / "metrics.json").write_text(json.dumps(m))


def write_splits(data: Path, valid: set[str]) -> None:
    rows = ["path,split"] + [
        f"{p.relative_to(data).as_posix()},{'valid' if p.stem in valid else 'train'}"
        for p in sorted(data.glob("*/*.jpg"))
    ]
    (data / "splits.csv").write_text("\n".join(rows) + "\n")


def test_split_valid_uses_the_photos_metrics_json_records_even_after_a_re_split(fixed_case, tmp_path, capsys):
    art, data, _ = fixed_case
    valid = ["a/a0.jpg", "b/b1.jpg", "c/c2.jpg", "a/broken.jpg", "a/deleted.jpg", "--background/x.jpg"]
    train = ["a/a1.jpg", "a/a2.jpg", "a/a3.jpg", "b/b0.jpg", "b/b2.jpg", "c/c0.jpg", "c/c1.jpg"]
    write_metrics(art, train, valid)
    write_splits(data, {"a1", "b2", "c0"})  # a split run again since: training photos now in valid
    out = tmp_path / "eval"
    assert evaluate.main([str(art), str(data), "--split", "valid", "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["n"] == 3 and r["split_source"] == "metrics.json" and r["n_training_photos"] == 0
    assert {k: v["support"] for k, v in r["per_class"].items()} == {"a": 1, "b": 1, "c": 1}
    err = capsys.readouterr().err
    assert "uses the 5 valid photos recorded in" in err and "1 --background decoy" in err
    assert "2 of the recorded valid photos are missing" in err and "1 deleted or moved, 1 unreadable" in err
    assert "trained on" not in err
    # --split train: the recorded training photos, no warning (that is what was asked for)
    assert evaluate.main([str(art), str(data), "--split", "train", "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["n"] == 7 and r["n_training_photos"] == 7
    assert "warning" not in capsys.readouterr().err


def test_none_of_the_recorded_photos_in_the_data_folder_is_a_clear_error(fixed_case, tmp_path, capsys):
    art, data, _ = fixed_case
    write_metrics(art, ["x/1.jpg"], ["x/2.jpg", "x/3.jpg"])
    assert evaluate.main([str(art), str(data), "--split", "valid", "--out", str(tmp_path / "e"), "--quiet"]) == 2
    assert "none of the 2 valid photos recorded in" in capsys.readouterr().err


def test_a_warning_counts_the_evaluated_photos_the_model_trained_on(fixed_case, tmp_path, capsys):
    art, data, _ = fixed_case
    out = tmp_path / "eval"
    write_metrics(art, ["a/a1.jpg", "b/b0.jpg", "c/c0.jpg", "c/c1.jpg"], None)  # no valid_paths recorded
    write_splits(data, {"a0", "a1", "b1", "c0"})  # today's splits.csv: two of them in valid
    assert evaluate.main([str(art), str(data), "--split", "valid", "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["n"] == 4 and r["n_training_photos"] == 2 and r["split_source"] != "metrics.json"
    assert "warning: 2 of the 4 photos evaluated are photos this model trained on" in capsys.readouterr().err
    assert "2 of these images are photos the model trained on" in (out / "report.md").read_text()
    # the whole folder (e.g. a data folder that overlaps the training one)
    assert evaluate.main([str(art), str(data), "--out", str(out), "--quiet"]) == 0
    assert "warning: 4 of the 10 photos evaluated are photos this model trained on" in capsys.readouterr().err
    # no metrics.json: as before, nothing to compare with
    (art / "metrics.json").unlink()
    assert evaluate.main([str(art), str(data), "--split", "valid", "--out", str(out), "--quiet"]) == 0
    assert "trained on" not in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["n_training_photos"] == 0
