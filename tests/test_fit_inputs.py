"""train.fit on awkward inputs: classes without training or validation photos, overlapping folders, signals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from snake_model.artifact import sha256_file
from snake_model.ood import choose_threshold
from snake_model.predictor import Predictor
from tests.conftest import make_dataset
from train import fit, plots
from train.data import list_images, random_split


def fast_fit(data: Path, out: Path, *more: str) -> int:
    return fit.main([str(data), "--out", str(out), "--size", "48", "--quiet", *more])


def write_splits(data: Path, valid: set[str]) -> None:
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    rows = [f"{f},{'valid' if f in valid else 'train'}" for f in files]
    (data / "splits.csv").write_text("path,split\n" + "\n".join(rows) + "\n")


def decoys(folder: Path, n: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(folder / f"d{i}.png")
    return folder


def test_random_split_keeps_a_training_image_in_every_class(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=10)
    for f in sorted((data / "green_bar").iterdir())[2:]:
        f.unlink()  # 2 images: round(2 * 0.75) = 2 would all go to validation
    ds = list_images(data)
    train, valid = random_split(ds, 0.75, seed=0)
    for ci, c in enumerate(ds.classes):
        assert any(ds.labels[i] == ci for i in train), c
        assert any(ds.labels[i] == ci for i in valid), c


def test_a_class_without_training_images_is_refused_before_training_by_both_recipes(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=4)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    write_splits(data, {f for f in files if f.startswith("blue_square/")} | {files[-1]})
    for recipe in ("fast", "original"):
        assert fast_fit(data, tmp_path / "o", "--recipe", recipe) == 2
        err = capsys.readouterr().err
        assert "'blue_square'" in err and "no training images" in err and "splits.csv" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["class folder", "data dir", "parent of data dir"])
def test_a_background_folder_overlapping_the_data_dir_is_refused(tmp_path, capsys, where):
    data = make_dataset(tmp_path / "data", per_class=4)
    bg = {"class folder": data / "red_disc", "data dir": data, "parent of data dir": tmp_path}[where]
    assert fast_fit(data, tmp_path / "o", "--background", str(bg)) == 2
    err = capsys.readouterr().err
    assert "--background" in err and "DATA_DIR" in err and "labelled both" in err, err
    assert not (tmp_path / "o").exists()


def test_decoys_in_a_non_class_folder_of_the_data_dir_are_accepted(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=4)
    decoys(data / "_not_snake", 4)  # where train.clean puts the photos it marks "not a snake": never a class
    out = tmp_path / "o"
    assert fast_fit(data, out, "--background", str(data / "_not_snake"), "--max-false-abstain", "0.5") == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["labels"] == ["blue_square", "green_bar", "red_disc", "not_a_snake"]
    m = json.loads((out / "metrics.json").read_text())
    named = [p for p in m["train_paths"] + m["valid_paths"] if p.endswith(".png")]  # the decoys
    assert len(named) == 4 and all(p.startswith("_not_snake/") for p in named), named


def test_a_background_folder_inside_a_class_folder_is_refused_naming_the_class(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=4)
    bg = decoys(data / "red_disc" / "more", 3)
    assert fast_fit(data, tmp_path / "o", "--background", str(bg)) == 2
    err = capsys.readouterr().err
    assert "inside the class folder 'red_disc'" in err and "as red_disc and as not_a_snake" in err, err
    assert "_not_snake" in err, err  # says where decoys may go
    assert not (tmp_path / "o").exists()


def test_a_background_photo_that_links_to_a_class_photo_is_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=4)
    bg = decoys(tmp_path / "decoys", 3)
    (bg / "linked.jpg").symlink_to(next((data / "red_disc").iterdir()))
    assert fast_fit(data, tmp_path / "o", "--background", str(bg)) == 2
    err = capsys.readouterr().err
    assert "also lists as class photos" in err and "linked.jpg" in err, err


def test_ctrl_c_during_training_is_one_line_and_leaves_out_as_it_was(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "model"
    before = fake_model(out, "old")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("train.recipe_fast.train_fast", interrupted)
    assert fast_fit(data, out) == 130
    err = capsys.readouterr().err
    assert f"interrupted; --out {out} is left as it was" in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model"]  # no staging folder left behind


def test_export_pkl_needs_the_original_recipe(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=4)
    assert fast_fit(data, tmp_path / "o", "--export-pkl") == 2
    err = capsys.readouterr().err
    assert "--export-pkl needs --recipe original" in err and "no fastai Learner" in err, err
    assert not (tmp_path / "o").exists()


def test_an_out_folder_inside_the_data_dir_is_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=4)
    assert fast_fit(data, data / "model") == 2
    err = capsys.readouterr().err
    assert "inside DATA_DIR" in err and "runs/model" in err, err
    assert sorted(p.name for p in data.iterdir()) == ["blue_square", "green_bar", "red_disc"]


def test_sigterm_during_fit_removes_the_staging_folder_and_restores_the_handler(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=4)
    got = []

    def ours(signum, frame):  # stands in for the default action (which would end pytest) and sees if fit caught it
        got.append(signum)

    def late_step(cm, labels, path, title):  # the weights are already in the staging folder
        assert (Path(path).parent / "model.safetensors").is_file()
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(plots, "confusion_png", late_step)
    previous = signal.signal(signal.SIGTERM, ours)
    try:
        with pytest.raises(SystemExit) as e:
            fast_fit(data, tmp_path / "model")
        assert e.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is ours and got == []
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no model, no hidden staging folder


def fake_model(folder: Path, tag: str, *names: str) -> dict[str, bytes]:
    """A model folder whose config.json holds its weights' sha256 (what load_artifact checks); its files' bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(f"weights of {tag}".encode())
    for name in names:
        (folder / name).write_text(f"{name} of {tag}")
    cfg = {"tag": tag, "weights_sha256": sha256_file(folder / "model.safetensors")}
    (folder / "config.json").write_text(json.dumps(cfg))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def model_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name in fit.ARTIFACT_FILES}


def consistent(folder: Path) -> bool:
    cfg = json.loads((folder / "config.json").read_text())
    return cfg["weights_sha256"] == sha256_file(folder / "model.safetensors")


def signal_after_the_new_weights_move(monkeypatch, out: Path, signum: int) -> list[str]:
    """Send signum the moment publish() has put the new model.safetensors next to the old config.json."""
    real, sent = os.replace, []

    def replace(src, dst):
        real(src, dst)
        if Path(dst) == out / "model.safetensors" and not sent:
            sent.append(Path(dst).name)
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(os, "replace", replace)
    return sent


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_during_publish_waits_until_out_holds_the_whole_new_model(tmp_path, monkeypatch, signame):
    signum = getattr(signal, signame)
    out, staging = tmp_path / "model", tmp_path / ".model.fit-1234"
    old = fake_model(out, "old", "metrics.json", "README.md", "top_losses.png")
    (out / "my_notes.txt").write_text("mine")
    new = fake_model(staging, "new", "metrics.json", "README.md", "reliability.png")
    sent = signal_after_the_new_weights_move(monkeypatch, out, signum)
    previous = fit.catch_termination(out, staging)  # SIGTERM: fit's handler; SIGINT: Python's, KeyboardInterrupt
    int_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit if signame == "SIGTERM" else KeyboardInterrupt) as e:
            fit.publish(staging, out)
        assert sent == ["model.safetensors"]  # the signal came in the middle of the swap
        if signame == "SIGTERM":
            assert e.value.code == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGINT, int_handler)
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert model_files(out) == new != old  # not the new weights next to the old config.json
    assert consistent(out) and (out / "my_notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_sigterm_during_publish_exits_after_the_new_model_is_in_place(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "model"
    old = fake_model(out, "old", "metrics.json", "README.md", "top_losses.png")
    (out / "my_notes.txt").write_text("mine")
    got = []

    def ours(signum, frame):  # stands in for the default action (which would end pytest)
        got.append(signum)

    sent = signal_after_the_new_weights_move(monkeypatch, out, signal.SIGTERM)
    previous = signal.signal(signal.SIGTERM, ours)
    try:
        with pytest.raises(SystemExit) as e:
            fast_fit(data, out, "--no-photo-previews")
        assert e.value.code == 128 + signal.SIGTERM and sent == ["model.safetensors"]
        assert signal.getsignal(signal.SIGTERM) is ours and got == []
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert consistent(out) and model_files(out)["model.safetensors"] != old["model.safetensors"]
    assert f"stopped by signal SIGTERM after the new model was published in --out {out}" in capsys.readouterr().err
    assert not (out / "top_losses.png").exists() and (out / "my_notes.txt").read_text() == "mine"
    assert Predictor(out).labels == ["blue_square", "green_bar", "red_disc"]  # the whole new model, loadable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model"]  # no staging folder left behind


def test_original_recipe_with_fewer_training_images_than_bs_still_trains(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=4)  # 9 training images, --bs 32 by default
    args = ["--recipe", "original", "--epochs", "1", "--freeze-epochs", "0", "--no-pretrained", "--export-pkl"]
    assert fit.main([str(data), "--out", str(tmp_path / "o"), "--size", "32", "--quiet", *args]) == 0
    out = capsys.readouterr().out
    assert "only 9 training images, fewer than --bs 32: using batch size 9" in out
    assert "could not draw the batch preview" not in out
    assert "[0, " not in out and "train_loss" not in out, out  # --quiet: no per-epoch rows, raw or tabled
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert cfg["training"]["bs"] == 9
    from fastai.learner import load_learner  # --export-pkl: fastai's own export, loadable, for train.push --also-pkl

    assert list(load_learner(tmp_path / "o" / "export.pkl").dls.vocab) == cfg["labels"]


def test_a_class_without_validation_photos_decoys_and_few_images_are_reported_truthfully(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=5)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    valid = {f for f in files if f.startswith(("red_disc/", "green_bar/"))}
    valid = {f for f in valid if f[-5] in "01"}  # 2 each; blue_square: none
    write_splits(data, valid)
    bg = decoys(tmp_path / "decoys", 6)
    out = tmp_path / "m"
    assert fast_fit(data, out, "--background", str(bg), "--max-false-abstain", "0.5") == 0
    stdout = capsys.readouterr().out
    # 6: a class without validation photos is undefined (null, n/a), not 0, and the run warns about it
    assert "warning: class(es) 'blue_square' have no validation images" in stdout
    m = json.loads((out / "metrics.json").read_text())
    blue = m["per_class"]["blue_square"]
    assert blue["support"] == 0 and blue["recall"] is None and blue["f1"] is None
    card = (out / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| `blue_square`"))
    assert row.endswith("| n/a | n/a | 0 |"), row
    f1s = [v["f1"] for v in m["per_class"].values() if v["f1"] is not None]
    assert len(f1s) == 3
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    macro = next(r for r in meta["model-index"][0]["results"][0]["metrics"] if r["type"] == "f1")
    assert macro["value"] == pytest.approx(np.mean(f1s), abs=1e-4)
    # 7: the decoy class is no snake species; the abstain threshold and rate are set on the 4 real photos only
    assert "an image classifier of 3 snake species" in card and "any of the 3 snakes I know" in card
    assert m["valid_abstain_rate"] == 0.5  # 2 of the 4 snakes above the 2nd lowest score (with the decoy: 2 of 5)
    pred = Predictor(out)
    real = [p.ood_score for p in pred.predict_batch([data / f for f in sorted(valid)])]
    assert m["abstain_threshold"] == pytest.approx(choose_threshold(np.array(real), 0.5), abs=1e-4)
    # 8: too few images to cross-validate C: the card and the console say so, no made-up folds
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["folds"] == 0 and cfg["training"]["head_fit"]["folds"] == 0
    assert "| folds | `0` |" in card
    assert "linear heads (2, logits averaged): default C=0.01/0.01 (too few images to cross-validate)" in stdout


def test_an_arch_onnx_runtime_cannot_quantize_is_a_clear_error_and_out_is_kept(
    tmp_path, synth_data, monkeypatch, capsys
):
    import snake_model.quant

    def refuse(*a, **k):
        raise RuntimeError("Unsupported operator Foo")

    monkeypatch.setattr(snake_model.quant, "quantize_body", refuse)
    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text("{}")  # an earlier model folder: it must stay as it was
    assert fit.main([str(synth_data), "--out", str(out), "--size", "48", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "could not quantize --arch tf_efficientnet_lite0+tf_efficientnet_lite2 to int8" in err
    assert "Unsupported operator Foo" in err and "--no-int8" in err
    assert [p.name for p in out.iterdir()] == ["config.json"] and (out / "config.json").read_text() == "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.fit-")]  # no staging folder left behind
