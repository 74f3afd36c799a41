"""Inputs that used to lose work or publish wrong facts: a mistyped `train.push --data`, a `$` in a class or folder
name drawn by matplotlib, and a model card (or picture) that fails after train.fit has trained its model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [p for p in (str(ROOT), str(HERE)) if p not in sys.path]  # runnable as `pytest` or `python -m pytest`

from fakehub import REPO, TOKEN, USER, FakeHub  # noqa: E402

from snake_model.artifact import save_artifact  # noqa: E402
from snake_model.network import build_network  # noqa: E402
from snake_model.spec import ModelSpec  # noqa: E402
from tests.conftest import make_dataset  # noqa: E402
from train import fit, plots, push  # noqa: E402
from train import manifest as mf  # noqa: E402

DOLLAR_NAMES = ["blue$^$square", "a$b", "\\$x$", "$$"]  # each one a mathtext parse error, or a formula


# -- train.push --data


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("artifact")
    spec = ModelSpec(labels=["a", "b", "c"], image_size=64, training={"command": "python -m train.fit data --out run"})
    save_artifact(build_network("tf_efficientnet_lite0", 3, pretrained=False), spec, d)
    per = {lab: {"precision": 0.5, "recall": 0.6, "f1": 0.55, "support": 5} for lab in spec.labels}
    metrics = {"valid_error": 0.4, "labels": spec.labels, "per_class": per, "confusion": [[1, 0, 0]] * 3}
    (d / "metrics.json").write_text(json.dumps(metrics))
    Image.new("RGB", (8, 8), "red").save(d / "confusion_matrix.png")
    return d


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A fake Hub on 127.0.0.1, and no real token, cache or endpoint leaking in or out."""
    from huggingface_hub import constants

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub(tokens={TOKEN: USER}) as hub:
        yield hub


def gathered(folder: Path) -> Path:
    """A gather output folder: manifest.csv (every photo publishable) and its photos' class folders."""
    folder.mkdir(parents=True)
    rows = [{"path": f"a/{i}.jpg", "class": "a", "use": "publishable", "sha256": "0" * 64} for i in range(3)]
    (folder / "manifest.csv").write_bytes(mf.rows_to_csv(rows))
    return folder


@pytest.mark.parametrize("case", ["missing", "file", "manifest file", "no manifest"])
def test_a_wrong_push_data_folder_stops_before_anything_is_sent(fake_hub, artifact, tmp_path, capsys, case):
    data = gathered(tmp_path / "gathered")
    given = {
        "missing": tmp_path / "typo_no_such_dir",
        "file": data / "manifest.csv.bak",
        "manifest file": data / "manifest.csv",  # the file itself, not its folder
        "no manifest": tmp_path / "photos",  # a folder of photos that gather did not write
    }[case]
    if case == "file":
        given.write_text("x")
    if case == "no manifest":
        (given / "a").mkdir(parents=True)
    for extra in ([], ["--dry-run", "--dry-run-dir", str(tmp_path / "dry")]):
        rc = push.main([str(artifact), "--repo", REPO, "--endpoint", fake_hub.url, "--data", str(given), *extra])
        assert rc == 2
        err = capsys.readouterr().err
        assert f"--data {given}" in err and "manifest.csv" in err and "drop --data" in err, err
        assert "nothing was sent" in err and TOKEN not in err
    if case == "missing":
        assert "does not exist" in err
    if case == "manifest file":
        assert f"its folder is {data}" in err
    if case == "no manifest":
        assert "holds no manifest.csv" in err
    assert fake_hub.requests == []  # not even the token check
    assert not (tmp_path / "dry").exists()


def test_a_push_data_folder_holding_a_manifest_is_used(fake_hub, artifact, tmp_path, capsys):
    data = gathered(tmp_path / "gathered")
    rc = push.main([str(artifact), "--repo", REPO, "--endpoint", fake_hub.url, "--data", str(data)])
    assert rc == 0, capsys.readouterr().err
    assert "README.md" in fake_hub.files(REPO)


def test_without_a_manifest_the_montage_note_does_not_blame_a_data_folder_never_given(
    fake_hub, artifact, tmp_path, capsys
):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    Image.new("RGB", (8, 8), "blue").save(art / "top_losses.png")
    assert push.main([str(art), "--repo", REPO, "--endpoint", fake_hub.url]) == 0
    out = capsys.readouterr().out
    assert "not uploading top_losses.png" in out and "no gather manifest" in out and "give --data" in out, out
    assert "top_losses.png" not in fake_hub.files(REPO)


# -- plots: `$` in names is text, never mathtext


def test_every_plot_draws_names_with_dollar_signs_as_plain_text(tmp_path):
    import matplotlib

    n = len(DOLLAR_NAMES)
    plots.confusion_png(np.eye(n, dtype=int) * 3, DOLLAR_NAMES, tmp_path / "cm.png", title="ev$^$ (4 images)")
    ims = [Image.new("RGB", (32, 32), c) for c in ("red", "green")]
    caps = [f"{DOLLAR_NAMES[0]} / {DOLLAR_NAMES[1]}\n1.00 / 0.30", "$^$ / $\n2.00 / 0.10"]
    plots.top_losses_png(ims, caps, tmp_path / "tl.png", title="top $^$ losses")
    bins = [{"confidence": 0.5, "accuracy": 0.4, "count": 3}, {"confidence": 0.9, "accuracy": 0.8, "count": 5}]
    plots.reliability_png(bins, bins, tmp_path / "rel.png")
    for name in ("cm.png", "tl.png", "rel.png"):
        assert (tmp_path / name).stat().st_size > 1000, name

    # and they are drawn as written: capture every text the confusion matrix puts on its figure
    import matplotlib.pyplot as plt

    drawn = []
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, *a, **k):
        drawn.extend(t for t in fig.findobj(matplotlib.text.Text) if t.get_text())
        return real_savefig(fig, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "savefig", savefig)
        plots.confusion_png(np.eye(n, dtype=int), DOLLAR_NAMES, tmp_path / "cm2.png", title="ev$^$")
    texts = {t.get_text(): t for t in drawn}
    for name in [*DOLLAR_NAMES, "ev$^$"]:
        assert name in texts, (name, sorted(texts))
        assert not texts[name].get_parse_math(), name
    plt.close("all")


# -- train.evaluate: a `$` in the data folder's or a class folder's name


def test_evaluate_reports_a_class_folder_and_a_data_folder_named_with_dollar_signs(tmp_path, monkeypatch, capsys):
    from test_evaluate import CAL, FixedPredictor, spec_only_artifact, write_jpg

    from train import evaluate

    monkeypatch.setattr(evaluate, "Predictor", FixedPredictor)
    labels = ("a$^$", "b", "c")
    art = spec_only_artifact(tmp_path / "art", labels=labels)
    data = tmp_path / "ev$^$"
    for i, stem in enumerate(CAL):
        write_jpg(data / {"a": labels[0]}.get(stem[0], stem[0]) / f"{stem}.jpg", i)
    out = tmp_path / "report"
    assert evaluate.main([str(art), str(data), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "warning" not in err, err
    r = json.loads((out / "report.json").read_text())
    assert r["n"] == 10 and r["confusion"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert (out / "confusion_matrix.png").stat().st_size > 1000 and (out / "reliability.png").is_file()
    assert "a$^$" in (out / "report.md").read_text()


# -- train.fit: the trained model is kept whatever its card or pictures do


def test_fit_keeps_the_model_when_the_card_and_a_picture_fail(tmp_path, monkeypatch, capsys):
    from snake_model.predictor import Predictor
    from train import card

    def broken_card(*a, **k):
        raise UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid continuation byte")

    def broken_picture(*a, **k):
        raise ValueError("mathtext says no")

    monkeypatch.setattr(card, "build_card", broken_card)
    monkeypatch.setattr(plots, "top_losses_png", broken_picture)
    data = make_dataset(tmp_path / "data", per_class=4)
    out = tmp_path / "model"
    assert fit.main([str(data), "--out", str(out), "--size", "48", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: the model card could not be built (UnicodeDecodeError" in err, err
    assert "warning: top_losses.png not written (ValueError: mathtext says no)" in err, err
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "metrics.json", "README.md", "confusion_matrix.png"} <= names
    assert "top_losses.png" not in names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.fit-")]  # no staging folder left
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "Validation error" in readme and "Not for snakebite" in readme
    probs = Predictor(out, backend="torch").predict_proba([Image.new("RGB", (60, 50), "red")])
    assert np.asarray(probs).shape == (1, 3)


def minimal_model_folder(d: Path) -> Path:
    d.mkdir()
    ModelSpec(labels=["a", "b"], image_size=48).save(d / "config.json")
    per = {lab: {"precision": 1.0, "recall": None, "support": 0} for lab in ("a", "b")}
    (d / "metrics.json").write_text(json.dumps({"valid_error": None, "n_valid": 0, "per_class": per}))
    return d


def test_the_card_fallback_prefers_card_minimal_card_then_fit_s_own_then_fixed_lines(tmp_path, monkeypatch, capsys):
    from train import card

    def broken(*a, **k):
        raise RuntimeError("card bug")

    monkeypatch.setattr(card, "build_card", broken)
    d = minimal_model_folder(tmp_path / "m")
    monkeypatch.setattr(card, "minimal_card", lambda out: "# from card.py\n", raising=False)
    fit.write_card(d)
    assert (d / "README.md").read_text() == "# from card.py\n"
    assert "RuntimeError: card bug" in capsys.readouterr().err

    monkeypatch.setattr(card, "minimal_card", broken, raising=False)
    fit.write_card(d)
    text = (d / "README.md").read_text()
    assert text.startswith("# Image classifier: 2 classes") and "n/a" in text  # valid_error null: no crash

    (d / "metrics.json").write_text("not json")
    fit.write_card(d)
    assert "could not be made" in (d / "README.md").read_text()


def test_a_card_that_cannot_be_written_stops_the_run_like_any_disk_error(tmp_path, monkeypatch, capsys):
    # an OSError is the disk or the permissions, not the card: train.fit then fails and keeps --out's old model
    d = minimal_model_folder(tmp_path / "m")
    (d / "README.md").mkdir()  # write_text raises IsADirectoryError
    with pytest.raises(IsADirectoryError):
        fit.write_card(d)
    assert os.path.isdir(d / "README.md")  # left as it was: a folder is never removed


# -- train.push: the serve hint and the card name the Hub pushed to; --also-pkl says how export.pkl is made


def test_the_serve_hint_and_the_card_name_the_endpoint_pushed_to(fake_hub, artifact, capsys):
    assert push.main([str(artifact), "--repo", REPO, "--endpoint", fake_hub.url]) == 0
    out = capsys.readouterr().out
    sha = fake_hub.head(REPO)
    hint = f"serve it with: HF_ENDPOINT={fake_hub.url.rstrip('/')} MODEL_REPO={REPO} MODEL_REVISION={sha} python app.py"
    assert hint in out, out
    card = fake_hub.files(REPO)["README.md"].decode()
    assert f"`HF_ENDPOINT={fake_hub.url.rstrip('/')} MODEL_REPO={REPO} MODEL_REVISION=<commit sha>" in card


def test_the_serve_hint_for_huggingface_co_needs_no_endpoint():
    assert push.serve_command(REPO, "a" * 40, "https://huggingface.co/") == (
        f"MODEL_REPO={REPO} MODEL_REVISION={'a' * 40} python app.py"
    )


def test_also_pkl_without_export_pkl_says_how_to_write_one(artifact, tmp_path, capsys):
    rc = push.main([str(artifact), "--repo", REPO, "--also-pkl", "--dry-run", "--dry-run-dir", str(tmp_path / "d")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "export.pkl not found" in err and "--recipe original --export-pkl" in err, err
