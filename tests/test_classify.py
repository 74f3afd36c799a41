"""The batch CLI: python -m snake_model.classify FILES_OR_DIR --csv out.csv [--model DIR]."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snake_model import classify

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    (d / "sub").mkdir()
    (d / ".hidden").mkdir()
    Image.new("RGB", (80, 60), (215, 40, 40)).save(d / "a_red.jpg")
    Image.new("RGB", (70, 50), (40, 190, 60)).save(d / "sub" / "b_green.png")
    Image.new("RGBA", (40, 40), (40, 70, 220, 128)).save(d / "sub" / "c_blue.png")
    (d / "broken.jpg").write_bytes(b"<html>not a photo</html>")
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("not an image, and not an image suffix: skipped when walking folders")
    Image.new("RGB", (10, 10)).save(d / ".hidden" / "skip.jpg")
    return d


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_folder_gives_one_row_per_image_with_every_class_column(tiny_artifact, photos, tmp_path):
    out = tmp_path / "out.csv"
    assert classify.main([str(photos), "--csv", str(out), "--model", str(tiny_artifact), "--quiet"]) == 0
    rows = _rows(out)
    names = sorted(Path(r["path"]).name for r in rows)
    assert names == ["a_red.jpg", "b_green.png", "broken.jpg", "c_blue.png", "empty.png"]
    from snake_model.spec import ModelSpec

    labels = ModelSpec.load(tiny_artifact / "config.json").labels
    header = list(rows[0])
    assert header[:7] == ["path", "label", "display_name", "confidence", "abstain", "ood_score", "error"]
    assert header[7:] == [f"p_{lab}" for lab in labels]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 3
    for r in good:
        probs = [float(r[f"p_{lab}"]) for lab in labels]
        assert abs(sum(probs) - 1) < 1e-4
        assert r["abstain"] in ("true", "false")
        assert float(r["confidence"]) == pytest.approx(max(probs), abs=1e-5)
        top = labels[int(np.argmax(probs))]
        assert r["label"] == ("" if r["abstain"] == "true" else top)  # an abstained row names no snake


def test_bad_files_get_an_error_row_and_never_stop_the_run(tiny_artifact, photos, tmp_path):
    out = tmp_path / "out.csv"
    missing = photos / "does_not_exist.jpg"
    args = [str(photos / "broken.jpg"), str(missing), str(photos / "a_red.jpg"), str(photos / "empty.png")]
    assert classify.main([*args, "--csv", str(out), "--model", str(tiny_artifact), "--quiet"]) == 0
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert [Path(r["path"]).name for r in _rows(out)] == [Path(a).name for a in args]  # input order kept
    assert "HTML" in rows["broken.jpg"]["error"] and rows["broken.jpg"]["label"] == ""
    assert "cannot read" in rows["does_not_exist.jpg"]["error"]
    assert "empty" in rows["empty.png"]["error"]
    assert rows["a_red.jpg"]["error"] == "" and rows["a_red.jpg"]["confidence"]


def test_batches_give_the_same_answers_as_single_images(tiny_artifact, photos):
    from snake_model.predictor import Predictor

    pred = Predictor(tiny_artifact)
    paths = list(classify.iter_inputs([photos]))
    batched = list(classify.classify_paths(pred, paths, batch=16))
    single = list(classify.classify_paths(pred, paths, batch=1))
    assert [r["path"] for r in batched] == [r["path"] for r in single]
    for a, b in zip(batched, single, strict=True):
        assert a["error"] == b["error"]
        if not a["error"]:
            assert float(a["p_red_disc"]) == pytest.approx(float(b["p_red_disc"]), abs=1e-4)


def test_without_model_flag_the_model_comes_from_model_dir(tiny_artifact, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_DIR", str(tiny_artifact))
    out = tmp_path / "out.csv"
    assert classify.main([str(photos / "a_red.jpg"), "--csv", str(out), "--quiet"]) == 0
    assert len(_rows(out)) == 1


def test_a_model_that_cannot_load_exits_2_with_a_clear_message(photos, tmp_path, capsys):
    rc = classify.main([str(photos), "--csv", str(tmp_path / "o.csv"), "--model", str(tmp_path), "--quiet"])
    assert rc == 2 and "cannot load the model" in capsys.readouterr().err


def test_the_module_runs_as_a_command_with_a_progress_bar_on_stderr(tiny_artifact, photos, tmp_path):
    out = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "snake_model.classify", str(photos), "--csv", str(out), "--model", str(tiny_artifact)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "img" in p.stderr and "5 images: 3 classified" in p.stderr
    assert p.stdout == "" and len(_rows(out)) == 5


def test_snake_model_never_imports_gradio(tiny_artifact, photos, tmp_path):
    code = (
        "import sys; from snake_model import classify; "
        f"classify.main([{str(photos)!r}, '--csv', {str(tmp_path / 'o.csv')!r}, '--model', {str(tiny_artifact)!r}, "
        "'--quiet']); print('gradio' in sys.modules)"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().endswith("False")


def test_a_csv_path_in_a_missing_folder_is_a_clear_error(tiny_artifact, photos, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "dir" / "out.csv"
    assert classify.main([str(photos), "--csv", str(out), "--model", str(tiny_artifact), "--quiet"]) == 2
    assert "cannot write --csv" in capsys.readouterr().err


def test_cli_rows_give_the_apps_decision_with_the_artifacts_own_abstain_score(tiny_artifact, photos, tmp_path):
    from snake_model.predictor import Predictor

    pred = Predictor(tiny_artifact)
    assert pred.spec.abstain_score == "knn"  # train.fit's models abstain by kNN distance, not max-softmax
    out = tmp_path / "out.csv"
    assert classify.main([str(photos), "--csv", str(out), "--model", str(tiny_artifact), "--quiet"]) == 0
    for r in _rows(out):
        if r["error"]:
            continue
        ref = pred.predict(Path(r["path"]))
        assert float(r["ood_score"]) == pytest.approx(ref.ood_score, abs=1e-5)
        assert r["abstain"] == str(ref.abstain).lower()
    with pytest.raises(ValueError, match="kNN"):
        pred.decide(np.array([0.5, 0.3, 0.2]))


def test_a_model_path_that_is_a_file_is_a_clear_error(photos, tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert classify.main([str(photos), "--csv", str(out), "--model", str(photos / "a_red.jpg"), "--quiet"]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_an_open_pil_image_gets_the_same_answer_as_its_file(tiny_artifact, tmp_path):
    import io

    from PIL import Image

    from snake_model.predictor import Predictor

    pred = Predictor(tiny_artifact)
    rng = np.random.default_rng(3)
    rgba = Image.fromarray(rng.integers(0, 255, (50, 70, 4), dtype=np.uint8), "RGBA")  # half-transparent pixels
    rgba.save(tmp_path / "a.png")
    rot = Image.fromarray(rng.integers(0, 255, (40, 90, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees": a phone photo held upright
    buf = io.BytesIO()
    rot.save(buf, "JPEG", exif=exif)
    (tmp_path / "r.jpg").write_bytes(buf.getvalue())
    for name in ("a.png", "r.jpg"):
        from_file = pred.predict_proba([tmp_path / name])
        from_pil = pred.predict_proba([Image.open(tmp_path / name)])
        np.testing.assert_allclose(from_pil, from_file, atol=1e-6)


def test_file_names_that_are_not_utf8_are_classified_and_never_stop_the_run(tiny_artifact, tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    Image.new("RGB", (80, 60), (215, 40, 40)).save(d / "a_red.jpg")
    try:
        for name in (b"caf\xe9.jpg", b"z_caf\xe9.jpg"):
            Image.new("RGB", (60, 60), (40, 190, 60)).save(os.path.join(os.fsencode(d), name), "JPEG")
        with open(os.path.join(os.fsencode(d), b"broken\xe9.jpg"), "wb") as fh:
            fh.write(b"<html>not a photo</html>")
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    out = tmp_path / "out.csv"
    assert classify.main([str(d), "--csv", str(out), "--model", str(tiny_artifact), "--quiet", "--batch", "2"]) == 0
    rows = {Path(r["path"]).name: r for r in _rows(out)}  # the CSV is valid UTF-8
    assert sorted(rows) == ["a_red.jpg", "broken\\xe9.jpg", "caf\\xe9.jpg", "z_caf\\xe9.jpg"]
    assert rows["caf\\xe9.jpg"]["error"] == "" and rows["caf\\xe9.jpg"]["confidence"]
    assert rows["z_caf\\xe9.jpg"]["error"] == "" and rows["a_red.jpg"]["error"] == ""
    assert "HTML" in rows["broken\\xe9.jpg"]["error"]


@pytest.mark.parametrize("case", ["same_name", "symlink", "image_name_in_input_folder"])
def test_a_csv_that_would_overwrite_or_pollute_an_input_is_refused(tiny_artifact, tmp_path, capsys, case):
    d = tmp_path / "cin"
    (d / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 40, 40)).save(d / "victim.jpg")
    Image.new("RGB", (40, 30), (40, 200, 40)).save(d / "sub" / "ok.jpg")
    before = (d / "victim.jpg").read_bytes()
    inputs = [str(d / "victim.jpg"), str(d / "sub" / "ok.jpg")]
    if case == "same_name":
        out, needle = d / "victim.jpg", "one of the input images"
    elif case == "symlink":
        out, needle = tmp_path / "link.csv", "one of the input images"
        out.symlink_to(d / "victim.jpg")
    else:
        inputs, out, needle = [str(d)], d / "sub" / "result.jpg", "inside the input folder"
    assert classify.main([*inputs, "--csv", str(out), "--model", str(tiny_artifact), "--quiet"]) == 2
    assert needle in capsys.readouterr().err
    assert (d / "victim.jpg").read_bytes() == before and not (d / "sub" / "result.jpg").exists()


def test_a_crash_midway_leaves_the_old_csv_whole(tiny_artifact, photos, tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("path,label\nold.jpg,x\n")

    def crash(predictor, paths, batch, progress=None):
        yield classify._error_row(Path("first.jpg"), "first.jpg: cannot read")
        raise RuntimeError("power cut")

    monkeypatch.setattr(classify, "classify_paths", crash)
    with pytest.raises(RuntimeError):
        classify.main([str(photos), "--csv", str(out), "--model", str(tiny_artifact), "--quiet"])
    assert out.read_text() == "path,label\nold.jpg,x\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no temporary file left behind


def test_cells_a_spreadsheet_would_run_as_formulas_are_quoted(tiny_artifact, tmp_path, monkeypatch):
    d = tmp_path / "inj"
    d.mkdir()
    formula = "=2+5+cmd|' -C calc'!A0.jpg"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(d / formula)
    (d / "@SUM(1+1).jpg").write_bytes(b"")  # unreadable: the error cell starts with the file name
    monkeypatch.chdir(d)
    out = tmp_path / "out.csv"
    assert classify.main([formula, "@SUM(1+1).jpg", "--csv", str(out), "--model", str(tiny_artifact), "--quiet"]) == 0
    rows = _rows(out)
    assert rows[0]["path"] == "'" + formula and rows[0]["error"] == ""
    assert rows[1]["path"] == "'@SUM(1+1).jpg" and rows[1]["error"].startswith("'@SUM(1+1).jpg")
    assert float(rows[0]["confidence"]) > 0  # numbers are untouched
    for v in ("-0.250000", "+1.5", "-3e-05", "0.5", 7, None):
        assert classify.printable(v) == v
    for v in ("-cmd", "+x", "\tx", "\rx", "=1", "@x", "-1+1"):
        assert classify.printable(v) == "'" + v


def test_nothing_classified_exits_2_with_the_errors_in_the_csv(tiny_artifact, photos, tmp_path, capsys):
    out = tmp_path / "out.csv"
    args = [str(photos / "empty.png"), str(tmp_path / "gone.jpg"), "--csv", str(out)]
    assert classify.main([*args, "--model", str(tiny_artifact), "--quiet"]) == 2
    assert "none of the 2 image(s) could be classified" in capsys.readouterr().err
    assert [bool(r["error"]) for r in _rows(out)] == [True, True]


def test_a_file_reached_twice_gets_one_row(tiny_artifact, photos, tmp_path):
    out = tmp_path / "out.csv"
    args = [str(photos / "sub" / "b_green.png"), str(photos), str(photos / "a_red.jpg"), "--csv", str(out)]
    assert classify.main([*args, "--model", str(tiny_artifact), "--quiet"]) == 0
    paths = [r["path"] for r in _rows(out)]
    assert paths[0] == str(photos / "sub" / "b_green.png")  # the first mention is kept
    assert sorted(Path(p).name for p in paths) == ["a_red.jpg", "b_green.png", "broken.jpg", "c_blue.png", "empty.png"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes and device files")
def test_a_fifo_or_a_link_to_a_device_in_a_folder_gets_an_error_row_and_never_hangs(tiny_artifact, tmp_path):
    import threading

    d = tmp_path / "with_specials"
    d.mkdir()
    Image.new("RGB", (60, 40), (215, 40, 40)).save(d / "a_red.jpg")
    os.mkfifo(d / "b_pipe.png")  # reading it used to wait for a writer forever
    (d / "c_device.jpg").symlink_to(os.devnull)  # /dev/zero here read until MemoryError; /dev/null fails safely
    out = tmp_path / "out.csv"
    rc: list = []
    t = threading.Thread(
        target=lambda: rc.append(classify.main([str(d), "--csv", str(out), "--model", str(tiny_artifact), "--quiet"])),
        daemon=True,
    )
    t.start()
    t.join(120)
    if t.is_alive():  # let the stuck reader go before failing
        os.close(os.open(d / "b_pipe.png", os.O_WRONLY | os.O_NONBLOCK))
    assert not t.is_alive(), "classify hung on a FIFO"
    assert rc == [0]
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert sorted(rows) == ["a_red.jpg", "b_pipe.png", "c_device.jpg"]
    assert rows["a_red.jpg"]["error"] == ""
    for name in ("b_pipe.png", "c_device.jpg"):
        assert "not a regular file" in rows[name]["error"] and rows[name]["label"] == ""


def _nan_forward(pred, *, logits: bool, feats: bool):
    """pred.forward made to return NaN logits and/or NaN features, as a model with NaN weights does."""
    real = pred.forward

    def forward(x):
        lg, ft = real(x)
        return (np.full_like(lg, np.nan) if logits else lg), (np.full_like(ft, np.nan) if feats else ft)

    pred.forward = forward


@pytest.mark.parametrize("logits, feats", [(True, False), (False, True), (True, True)])
def test_non_finite_logits_or_ood_scores_abstain_and_show_no_nan(
    tiny_artifact, photos, tmp_path, caplog, logits, feats
):
    import logging
    import math

    from snake_model.predictor import Predictor

    pred = Predictor(tiny_artifact, backend="torch")
    _nan_forward(pred, logits=logits, feats=feats)
    with caplog.at_level(logging.WARNING, logger="snake_model.predictor"):
        p = pred.predict(photos / "a_red.jpg")
    assert p.abstain, "a NaN answer must abstain (NaN > threshold is False)"
    assert math.isfinite(p.confidence) and all(math.isfinite(v) for v in p.probs.values())
    assert not math.isnan(p.ood_score)
    assert "non-finite" in caplog.text
    if logits:
        assert p.confidence == 0.0
    # the CLI's row: no label, no "nan" anywhere
    row = next(classify.classify_paths(pred, [photos / "a_red.jpg"]))
    assert row["abstain"] == "true" and row["label"] == "" and row["display_name"] == ""
    assert not any("nan" in str(v).lower() for v in row.values()), row


def test_the_max_softmax_decision_abstains_on_nan_probabilities_even_without_a_threshold(tiny_artifact):
    import math

    from snake_model.predictor import Predictor

    pred = Predictor(tiny_artifact, backend="torch")
    pred.spec.abstain_score = "max_softmax"
    pred.spec.abstain_threshold = None  # "never abstain" models still never answer NaN
    n = len(pred.labels)
    p = pred.decide(np.full(n, np.nan))
    assert p.abstain and p.confidence == 0.0 and math.isinf(p.ood_score)
    assert not pred.decide(np.eye(n)[0]).abstain


def test_abstains_on_a_non_finite_score_or_threshold():
    from snake_model.ood import abstains

    assert abstains(float("nan"), 0.5) and abstains(float("nan"), None)
    assert abstains(float("inf"), 0.5) and abstains(float("-inf"), 0.5)
    assert abstains(0.1, float("nan"))
    assert not abstains(0.1, 0.5) and abstains(0.6, 0.5) and not abstains(0.9, None)
