"""train.fit end to end: synthetic photos -> artifact -> a fresh process that imports only snake_model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from snake_model.predictor import Predictor
from train import fit

ROOT = Path(__file__).resolve().parents[1]


def test_fit_writes_the_whole_artifact_with_consistent_metrics(tiny_artifact):
    for name in (
        "model.safetensors",
        "config.json",
        "metrics.json",
        "confusion_matrix.png",
        "top_losses.png",
        "batch_preview.png",
        "reliability.png",
        "README.md",
    ):
        assert (tiny_artifact / name).is_file(), name
    m = json.loads((tiny_artifact / "metrics.json").read_text())
    cfg = json.loads((tiny_artifact / "config.json").read_text())
    cm = np.array(m["confusion"])
    assert cm.sum() == m["n_valid"] and m["labels"] == cfg["labels"] == ["blue_square", "green_bar", "red_disc"]
    assert abs(m["valid_error"] - (1 - np.trace(cm) / cm.sum())) < 1e-9
    for lab, row in zip(m["labels"], cm, strict=True):
        assert m["per_class"][lab]["support"] == row.sum()
    assert cfg["resize_method"] == "pad" and cfg["image_size"] == 64 and cfg["temperature"] > 0
    assert "python -m train.fit" in cfg["training"]["command"]


def test_a_fresh_process_importing_only_snake_model_gives_the_same_prediction(tiny_artifact, synth_data):
    img = sorted((synth_data / "red_disc").iterdir())[0]
    code = (
        "import sys, json; from snake_model.predictor import Predictor; "
        f"p = Predictor({str(tiny_artifact)!r}); pr = p.predict_proba([{str(img)!r}])[0]; "
        "bad = [m for m in ('fastai', 'gradio', 'train') if m in sys.modules]; "
        "print(json.dumps({'probs': pr.tolist(), 'bad': bad}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["bad"] == []
    local = Predictor(tiny_artifact).predict_proba([img])[0]
    np.testing.assert_allclose(res["probs"], local, atol=1e-6)
    assert abs(sum(res["probs"]) - 1) < 1e-6


def test_fast_recipe_learns_the_synthetic_classes(tmp_path, synth_data):
    out = tmp_path / "fast"
    assert fit.main([str(synth_data), "--out", str(out), "--size", "64", "--quiet", "--seed", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["valid_error"] <= 0.34  # chance is 0.67; the pretrained early layers make this easy
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["recipe"] == "fast" and cfg["abstain_threshold"] is not None
    assert cfg["tta_flip"] and cfg["tta_zoom"] == 0.8  # the default second view (bench/RESULTS.md 1i)
    # the temperature was fitted on the validation images and the head's out-of-fold training predictions
    assert m["temperature_fit_on"] == {"valid": m["n_valid"], "out_of_fold_train": m["n_train"]}
    assert "out-of-fold predictions" in (out / "README.md").read_text()
    p = Predictor(out)
    probs = p.predict_proba([sorted((synth_data / c).iterdir())[-1] for c in cfg["labels"]])
    assert probs.shape == (3, 3)


def test_unreadable_files_are_skipped_and_reported_not_fatal(tmp_path, synth_data):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    (data / "red_disc" / "broken.jpg").write_text("<html>not an image</html>")
    (data / "green_bar" / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    assert (
        fit.main(
            [
                str(data),
                "--out",
                str(out),
                "--size",
                "48",
                "--quiet",
                "--no-photo-previews",
                "--data-source",
                "Photos from a test; licence unknown.",
            ]
        )
        == 0
    )
    assert not (out / "top_losses.png").exists()  # no training photo is drawn into the artifact
    assert "licence unknown" in (out / "README.md").read_text()
    skipped = json.loads((out / "metrics.json").read_text())["skipped_images"]
    assert set(skipped) == {"red_disc/broken.jpg", "green_bar/empty.png"}
    assert "HTML" in skipped["red_disc/broken.jpg"]


def test_bad_data_dirs_get_a_clear_error_and_exit_code_2(tmp_path, capsys):
    assert fit.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "one" / "only_class").mkdir(parents=True)
    assert fit.main([str(tmp_path / "one"), "--out", str(tmp_path / "o")]) == 2
    assert "need at least 2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "train.fit", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for opt in (
        "--resize",
        "--min-scale",
        "--aug",
        "--aug-mult",
        "--size",
        "--epochs",
        "--arch",
        "--valid-pct",
        "--seed",
        "--bs",
        "--recipe",
        "--background",
    ):
        assert opt in out.stdout


def test_flip_tta_is_part_of_the_network_and_every_runtime_agrees(tmp_path, synth_data):
    out = tmp_path / "tta"
    from PIL import ImageOps

    from snake_model.loader import load_image

    args = [str(synth_data), "--size", "48", "--quiet", "--tta", "--tta-zoom", "1"]
    assert fit.main([*args, "--out", str(out), "--no-int8"]) == 0
    onnx, eager = Predictor(out, backend="onnx"), Predictor(out, backend="torch")
    assert onnx.spec.tta_flip and onnx.spec.tta_zoom == 1 and onnx.backend == "onnx" and not onnx.spec.int8
    imgs = [sorted((synth_data / c).iterdir())[0] for c in onnx.labels]
    np.testing.assert_allclose(onnx.predict_proba(imgs), eager.predict_proba(imgs), atol=1e-4)
    # the mirror image gets the same answer, because the network averages both views
    im = load_image(imgs[0])
    np.testing.assert_allclose(eager.predict_proba([im]), eager.predict_proba([ImageOps.mirror(im)]), atol=1e-5)
    # the default int8 graph too: the mirror image's two views are the photo's two views, swapped
    assert fit.main([*args, "--out", str(tmp_path / "int8")]) == 0
    int8 = Predictor(tmp_path / "int8")
    assert int8.backend == "onnx-int8" and int8.spec.int8["file"] == "features.int8.onnx"
    np.testing.assert_allclose(int8.predict_proba([im]), int8.predict_proba([ImageOps.mirror(im)]), atol=1e-5)


def test_background_folder_adds_a_not_a_snake_class(tmp_path, synth_data):
    from PIL import Image

    bg = tmp_path / "decoys"
    bg.mkdir()
    for i in range(8):
        Image.new("RGB", (70, 50), (20 * i, 200 - 10 * i, 90)).save(bg / f"d{i}.png")
    (bg / "notes.txt").write_text("not an image")
    out = tmp_path / "bg"
    assert fit.main([str(synth_data), "--out", str(out), "--size", "48", "--quiet", "--background", str(bg)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["labels"][-1] == fit.BACKGROUND_LABEL and len(cfg["labels"]) == 4
    m = json.loads((out / "metrics.json").read_text())
    assert "notes.txt" in " ".join(m["skipped_images"])
    # every photo the model trained and was validated on is named, relative (metrics.json is published): data photos
    # as the manifest names them, decoys under the --background/ prefix the model card looks for
    assert len(m["train_paths"]) == m["n_train"] and len(m["valid_paths"]) == m["n_valid"]
    named = m["train_paths"] + m["valid_paths"]
    assert len(set(named)) == len(named) == 3 * 12 + 8
    decoys = {p for p in named if p.startswith("--background/")}
    assert decoys == {f"--background/d{i}.png" for i in range(8)}
    assert {p for p in named if p not in decoys} == {
        f.relative_to(synth_data).as_posix() for f in synth_data.rglob("*.jpg")
    }
    assert not any(p.startswith("/") or str(tmp_path) in p for p in named)
    assert all(t["path"] in named for t in m["top_losses"])


def test_original_recipe_with_a_background_class_scores_each_photo_against_its_own_label(tmp_path, synth_data):
    # fastai sorts a vocabulary it is given unless told not to (the recipe passes sort=False): sorted, "not_a_snake"
    # would land between the class names, while the dataset lists it last; the model's labels keep the dataset's
    # order, and the metrics must pair every logit column with the right label
    from PIL import Image

    bg = tmp_path / "decoys"
    bg.mkdir()
    for i in range(10):
        Image.new("RGB", (70, 50), (20 * i, 200 - 10 * i, 90)).save(bg / f"d{i}.png")
    out = tmp_path / "orig_bg"
    args = [str(synth_data), "--out", str(out), "--recipe", "original", "--size", "48", "--epochs", "1"]
    assert fit.main([*args, "--bs", "8", "--quiet", "--background", str(bg), "--no-photo-previews"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"][-1] == fit.BACKGROUND_LABEL
    assert metrics["labels"] == ["blue_square", "green_bar", "red_disc", fit.BACKGROUND_LABEL]  # not sorted
    pred = Predictor(out, backend="torch")
    for row in metrics["top_losses"]:
        assert not Path(row["path"]).is_absolute()  # metrics.json is published: no local folder names
        prefix = "--background/"
        path = bg / row["path"][len(prefix) :] if row["path"].startswith(prefix) else synth_data / row["path"]
        p = pred.predict_proba([path])[0]
        assert abs(p[pred.labels.index(row["actual"])] - row["prob_actual"]) < 1e-3, row
        assert pred.labels[int(p.argmax())] == row["predicted"], row


def fast_fit(data: Path, out: Path, *more: str) -> int:
    return fit.main([str(data), "--out", str(out), "--size", "48", "--quiet", *more])


def test_a_rerun_replaces_the_model_but_keeps_your_files_and_a_failed_run_changes_nothing(
    tmp_path, monkeypatch, capsys
):
    from tests.conftest import make_dataset

    data = make_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "model"
    assert fast_fit(data, out) == 0
    assert (out / "top_losses.png").is_file()
    (out / "my_notes.txt").write_text("mine")
    assert fast_fit(data, out, "--no-photo-previews", "--seed", "7") == 0
    assert not (out / "top_losses.png").exists()  # the old model's photo grid must not stay behind
    assert (out / "my_notes.txt").read_text() == "mine"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def broken(cm, labels, path, title):  # a late step: the new weights and metrics.json are written by now
        assert (Path(path).parent / "model.safetensors").is_file() and (Path(path).parent / "metrics.json").is_file()
        raise OSError(28, "No space left on device", str(path))

    from train import plots

    monkeypatch.setattr(plots, "confusion_png", broken)
    assert fast_fit(data, out, "--seed", "8") == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "confusion_matrix.png" in err and "left as it was" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model"]  # no staging folder left behind
    Predictor(out)  # still loads


def test_bad_out_arch_classes_and_splits_files_stop_fit_before_training(tmp_path, capsys):
    from tests.conftest import make_dataset

    data = make_dataset(tmp_path / "data", per_class=6)
    assert fast_fit(data, data) == 2  # the data folder itself, by mistake
    assert "not a model folder" in capsys.readouterr().err
    assert not (data / "config.json").exists() and not (data / "README.md").exists()
    out = tmp_path / "o"
    assert fast_fit(data, out, "--arch", "no_such_net") == 2
    assert "unknown --arch 'no_such_net'" in capsys.readouterr().err
    assert fast_fit(data, out, "--arch", "resnet18.a1_in1k") == 2  # timm knows it, config.json may not hold it
    assert "no '.pretrained_tag'" in capsys.readouterr().err
    assert fast_fit(data, out, "--classes", str(tmp_path / "clases.json")) == 2
    assert "is not a file" in capsys.readouterr().err
    (data / "classes.json").write_text('["red_disc", "green_bar"]')
    assert fast_fit(data, out) == 2
    assert "should be an object" in capsys.readouterr().err
    (data / "classes.json").write_text('{"red_disc": {"venomous": "false"}}')  # a string: would warn "venomous"
    assert fast_fit(data, out) == 2
    assert "venomous must be true, false or null" in capsys.readouterr().err
    (data / "classes.json").write_text("[" * 100_000)
    assert fast_fit(data, out) == 2
    assert "nested too deeply" in capsys.readouterr().err
    (data / "classes.json").unlink()
    (data / "splits.csv").write_text("file,fold\nred_disc/red_disc_000.jpg,1\n")
    assert fast_fit(data, out) == 2
    assert "needs the columns path,split" in capsys.readouterr().err
    assert not out.exists()


def test_background_photos_keep_the_data_folders_splits_csv(tmp_path):
    from PIL import Image

    from tests.conftest import make_dataset

    data = make_dataset(tmp_path / "data", per_class=6)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    valid = set(files[::3])
    rows = [f"{f},{'valid' if f in valid else 'train'}" for f in files]
    (data / "splits.csv").write_text("path,split\n" + "\n".join(rows) + "\n")
    bg = tmp_path / "decoys"
    bg.mkdir()
    for i in range(5):
        Image.new("RGB", (60, 40), (30 * i, 90, 200 - 30 * i)).save(bg / f"d{i}.png")
    out = tmp_path / "bg"
    assert fast_fit(data, out, "--background", str(bg)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_valid"] == len(valid) + 1 and metrics["n_train"] == len(files) - len(valid) + 4


def test_the_card_of_a_model_trained_on_gathered_photos_gives_their_licences(tmp_path):
    from tests.conftest import make_dataset
    from train import gather

    src = make_dataset(tmp_path / "src", per_class=5)
    data = tmp_path / "gathered"
    assert gather.main(["--folder", str(src), "--out", str(data), "--licence", "CC BY 4.0"]) == 0
    out = tmp_path / "m"
    assert fast_fit(data, out) == 0
    card = (out / "README.md").read_text()
    assert "| folder | cc-by | 15 |" in card and "**unknown**" not in card
    assert (out / "ATTRIBUTION.md").read_bytes() == (data / "ATTRIBUTION.md").read_bytes()
