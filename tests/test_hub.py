"""Push to and pull from a fake Hub on 127.0.0.1 through the real huggingface_hub client."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [p for p in (str(ROOT), str(HERE)) if p not in sys.path]  # runnable as `pytest` or `python -m pytest`

from fakehub import REPO, TOKEN, USER, FakeHub  # noqa: E402

from snake_model import hub as H  # noqa: E402
from snake_model.artifact import ArtifactError, save_artifact  # noqa: E402
from snake_model.network import build_network  # noqa: E402
from snake_model.spec import ModelSpec  # noqa: E402
from train import push  # noqa: E402


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A tiny untrained artifact with metrics, pictures, attribution and a fastai pickle next to it."""
    d = tmp_path_factory.mktemp("artifact")
    spec = ModelSpec(
        labels=["a", "b", "c"],
        image_size=64,
        class_info={"a": {"display_name": "Burmese python", "scientific_name": "Python bivittatus", "venomous": False}},
        training={"command": "python -m train.fit data --out run", "seed": 1},
    )
    save_artifact(build_network("tf_efficientnet_lite0", 3, pretrained=False), spec, d)
    per = {lab: {"precision": 0.5, "recall": 0.6, "f1": 0.55, "support": 5} for lab in spec.labels}
    metrics = {"valid_error": 0.4, "labels": spec.labels, "per_class": per, "confusion": [[1, 0, 0]] * 3}
    (d / "metrics.json").write_text(json.dumps(metrics))
    for name in ("confusion_matrix.png", "top_losses.png"):
        Image.new("RGB", (8, 8), "red").save(d / name)
    (d / "ATTRIBUTION.md").write_text("# Attribution\n\n- photo by someone, CC-BY\n")
    (d / "export.pkl").write_bytes(pickle.dumps({"not": "for the app"}))
    return d


@pytest.fixture(autouse=True)
def isolated_hf(tmp_path, monkeypatch):
    """No real token, cache, endpoint or offline flag leaks in or out."""
    from huggingface_hub import constants

    for var in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "HF_OIDC_RESOURCE",
        "HF_HUB_CACHE",
    ):
        monkeypatch.setenv(var, "")  # recorded, so teardown restores the original (or removes ours)
        monkeypatch.delenv(var)
    for var in ("MODEL_DIR", "MODEL_REPO", "MODEL_REVISION"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake_hub():
    with FakeHub(tokens={TOKEN: USER}) as hub:
        yield hub


def do_push(hub: FakeHub, artifact: Path, *extra: str) -> int:
    os.environ["HF_TOKEN"] = TOKEN  # isolated_hf recorded HF_TOKEN, so teardown removes this
    return push.main([str(artifact), "--repo", REPO, "--endpoint", hub.url, *extra])


def images(n: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)) for _ in range(n)]


def test_a_pushed_model_pulled_by_its_commit_sha_predicts_exactly_like_the_local_artifact(fake_hub, artifact, tmp_path):
    from snake_model.predictor import Predictor

    assert do_push(fake_hub, artifact) == 0
    sha = fake_hub.head(REPO)
    assert H.is_commit_sha(sha)
    pulled = H.pull_model(REPO, sha, cache_dir=tmp_path / "cache", endpoint=fake_hub.url)
    assert pulled.name == sha
    ims = images()
    local = Predictor(artifact, backend="torch").predict_proba(ims)
    remote = Predictor(pulled, backend="torch").predict_proba(ims)
    np.testing.assert_array_equal(np.asarray(local), np.asarray(remote))
    assert {p.name for p in pulled.iterdir()} == {
        "model.safetensors",
        "config.json",
        "metrics.json",
        "confusion_matrix.png",
        "README.md",
        "ATTRIBUTION.md",
    }  # top_losses.png shows training photos that no manifest marks publishable: not uploaded


def test_the_push_is_one_commit_with_weights_config_metrics_pictures_attribution_and_card(fake_hub, artifact):
    assert do_push(fake_hub, artifact) == 0
    commits = [r for r in fake_hub.requests if r.method == "POST" and "/commit/" in r.path]
    assert len(commits) == 1
    assert len(fake_hub.repo(REPO).commits) == 2  # the repo's initial commit + ours
    files = fake_hub.files(REPO)
    assert set(files) == {
        ".gitattributes",
        "model.safetensors",
        "config.json",
        "metrics.json",
        "confusion_matrix.png",
        "ATTRIBUTION.md",
        "README.md",
    }
    assert files["model.safetensors"] == (artifact / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert "pipeline_tag: image-classification" in card and "model-index" in card
    assert "Python bivittatus" in card and "python -m train.fit data --out run" in card


def test_the_token_never_appears_in_any_output_of_push_on_success_or_failure(
    fake_hub, artifact, tmp_path, capfd, caplog
):
    caplog.set_level(logging.DEBUG)
    assert do_push(fake_hub, artifact) == 0
    assert do_push(fake_hub, artifact, "--also-pkl", "--revision", "dev") == 0
    assert do_push(fake_hub, tmp_path / "nowhere") == 2  # bad artifact after a good token
    assert push.main([str(artifact), "--repo", "bob/x", "--endpoint", "http://127.0.0.1:9"]) != 0  # unreachable
    with FakeHub(tokens={"hf_someoneelse": "bob"}) as other:  # the token is rejected
        assert do_push(other, artifact) == 2
    out = capfd.readouterr()
    assert out.out and out.err
    for text in (out.out, out.err, caplog.text):
        assert TOKEN not in text
        assert TOKEN[3:] not in text


def test_a_missing_token_is_a_clear_error_before_any_request(fake_hub, artifact, capsys):
    assert push.main([str(artifact), "--repo", REPO, "--endpoint", fake_hub.url]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    assert fake_hub.requests == []


def test_an_invalid_token_is_a_clear_error_before_any_work(fake_hub, artifact, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert push.main([str(artifact), "--repo", REPO, "--endpoint", fake_hub.url]) == 2
    assert "rejected the token" in capsys.readouterr().err
    assert fake_hub.paths_requested() == ["/api/whoami-v2"]
    assert fake_hub.repos == {}


def test_a_dry_run_writes_the_card_and_file_list_and_sends_nothing(fake_hub, artifact, tmp_path):
    out = tmp_path / "dry"
    assert do_push(fake_hub, artifact, "--dry-run", "--dry-run-dir", str(out), "--also-pkl") == 0
    assert fake_hub.requests == []
    listed = (out / "files.txt").read_text()
    for name in ("model.safetensors", "config.json", "metrics.json", "ATTRIBUTION.md", "export.pkl", "README.md"):
        assert f"\n{name}\t" in listed
    assert "Not for snakebite or medical decisions" in (out / "README.md").read_text()


def test_also_pkl_without_an_export_pkl_is_a_clear_error(fake_hub, artifact, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("model.safetensors", "config.json", "metrics.json"):
        shutil.copy(artifact / f, bare / f)
    assert do_push(fake_hub, bare, "--also-pkl") == 2
    assert "export.pkl not found" in capsys.readouterr().err
    assert not any("/commit/" in p for p in fake_hub.paths_requested())


def test_a_pull_never_requests_or_opens_the_pickle_next_to_the_weights(fake_hub, artifact, tmp_path, monkeypatch):
    from snake_model.predictor import Predictor

    assert do_push(fake_hub, artifact, "--also-pkl") == 0
    assert "export.pkl" in fake_hub.files(REPO)

    def refuse(*a, **k):
        raise AssertionError("something unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    fake_hub.requests.clear()
    pulled = H.pull_model(REPO, fake_hub.head(REPO), cache_dir=tmp_path / "cache", endpoint=fake_hub.url)
    Predictor(pulled, backend="torch").predict_proba(images(1))
    assert not any(p.endswith(".pkl") for p in fake_hub.paths_requested())
    assert not list((tmp_path / "cache").rglob("*.pkl"))


def test_a_pinned_model_pulled_once_is_served_from_the_cache_when_the_hub_is_gone(artifact, tmp_path):
    with FakeHub(tokens={TOKEN: USER}) as hub:
        assert do_push(hub, artifact) == 0
        sha, url = hub.head(REPO), hub.url
        first = H.pull_model(REPO, sha, cache_dir=tmp_path / "cache", endpoint=url)
        branch = H.pull_model(REPO, "main", cache_dir=tmp_path / "cache", endpoint=url)
        assert branch == first
    # the server is shut down: both the pinned sha and the branch (through the cache's refs) still resolve
    assert H.pull_model(REPO, sha, cache_dir=tmp_path / "cache", endpoint=url) == first
    assert H.pull_model(REPO, "main", cache_dir=tmp_path / "cache", endpoint=url) == first


def test_the_app_choice_works_offline_from_the_cache_in_a_fresh_process_with_hf_hub_offline(
    fake_hub, artifact, tmp_path
):
    cache = tmp_path / "cache"
    assert do_push(fake_hub, artifact) == 0
    sha = fake_hub.head(REPO)
    H.pull_model(REPO, sha, cache_dir=cache, endpoint=fake_hub.url)
    fake_hub.requests.clear()
    code = (
        "import sys; from snake_model.hub import resolve_model_dir; p = resolve_model_dir(); "
        "assert 'gradio' not in sys.modules; print(p)"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_ENDPOINT": fake_hub.url,
        "MODEL_REPO": REPO,
        "MODEL_REVISION": sha,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("HF_TOKEN", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(sha)
    assert fake_hub.requests == []


def test_a_missing_repo_is_one_clear_error(fake_hub, tmp_path):
    with pytest.raises(H.ModelRepoNotFoundError, match="not found"):
        H.pull_model("alice/nothing", "0" * 40, cache_dir=tmp_path / "c", endpoint=fake_hub.url)


def test_a_missing_revision_is_one_clear_error(fake_hub, artifact, tmp_path):
    assert do_push(fake_hub, artifact) == 0
    with pytest.raises(H.ModelRevisionNotFoundError, match="MODEL_REVISION"):
        H.pull_model(REPO, "f" * 40, cache_dir=tmp_path / "c", endpoint=fake_hub.url)


def test_a_repo_without_weights_is_a_missing_file_error(fake_hub, tmp_path):
    fake_hub.create(REPO)
    with pytest.raises(H.ModelFileMissingError, match="config.json"):
        H.pull_model(REPO, fake_hub.head(REPO), cache_dir=tmp_path / "c", endpoint=fake_hub.url)


def test_tampered_weights_on_the_hub_are_refused_with_a_sha256_error(fake_hub, artifact, tmp_path):
    from huggingface_hub import CommitOperationAdd, HfApi

    assert do_push(fake_hub, artifact) == 0
    data = bytearray((artifact / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in the last tensor: still a valid safetensors file
    HfApi(endpoint=fake_hub.url, token=TOKEN).create_commit(
        REPO, [CommitOperationAdd("model.safetensors", bytes(data))], commit_message="tamper"
    )
    with pytest.raises(H.ModelIntegrityError, match="sha256"):
        H.pull_model(REPO, fake_hub.head(REPO), cache_dir=tmp_path / "c", endpoint=fake_hub.url)


def test_weights_tampered_in_the_cache_are_fetched_again_or_refused_when_the_hub_is_gone(artifact, tmp_path):
    def tamper(pulled: Path) -> None:
        blob = (pulled / "model.safetensors").resolve()
        blob.chmod(0o644)
        with open(blob, "r+b") as f:
            f.seek(-1, 2)
            f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")

    with FakeHub(tokens={TOKEN: USER}) as hub:
        assert do_push(hub, artifact) == 0
        sha, url = hub.head(REPO), hub.url
        pulled = H.pull_model(REPO, sha, cache_dir=tmp_path / "c", endpoint=url)
        tamper(pulled)
        again = H.pull_model(REPO, sha, cache_dir=tmp_path / "c", endpoint=url)  # the Hub's copy replaces it
        assert (again / "model.safetensors").read_bytes() == (artifact / "model.safetensors").read_bytes()
        tamper(again)
    # no Hub (a port nobody listens on; a stopped FakeHub still answers on a kept-alive connection)
    with pytest.raises(H.ModelIntegrityError, match="Delete the cache folder .*models--alice--snakes"):
        H.pull_model(REPO, sha, cache_dir=tmp_path / "c", endpoint="http://127.0.0.1:9")


def test_no_network_and_no_cache_is_one_clear_offline_error(tmp_path):
    with pytest.raises(H.ModelOfflineError, match="cannot reach"):
        H.pull_model(REPO, "a" * 40, cache_dir=tmp_path / "c", endpoint="http://127.0.0.1:9")
    with pytest.raises(H.ModelOfflineError, match="offline"):
        H.pull_model(REPO, "a" * 40, cache_dir=tmp_path / "c", endpoint="http://127.0.0.1:9", offline=True)


def test_every_pull_error_is_an_artifact_error_for_the_app_to_show():
    for cls in (
        H.ModelRepoNotFoundError,
        H.ModelRevisionNotFoundError,
        H.ModelFileMissingError,
        H.ModelIntegrityError,
        H.ModelOfflineError,
    ):
        assert issubclass(cls, H.ModelPullError) and issubclass(cls, ArtifactError)


def test_a_branch_revision_works_but_logs_a_warning(fake_hub, artifact, tmp_path, caplog):
    assert do_push(fake_hub, artifact) == 0
    with caplog.at_level(logging.WARNING, logger="snake_model.hub"):
        p = H.pull_model(REPO, "main", cache_dir=tmp_path / "c", endpoint=fake_hub.url)
    assert p.name == fake_hub.head(REPO)
    assert "not a commit sha" in caplog.text


def test_the_app_uses_model_dir_then_model_repo_then_the_bundled_model(fake_hub, artifact, tmp_path):
    assert H.resolve_model_dir({"MODEL_DIR": str(artifact), "MODEL_REPO": REPO}) == artifact
    assert H.resolve_model_dir({}) == ROOT / "model"
    assert do_push(fake_hub, artifact) == 0
    sha = fake_hub.head(REPO)
    env = {"MODEL_REPO": REPO, "MODEL_REVISION": sha, "HF_ENDPOINT": fake_hub.url, "HF_HUB_CACHE": str(tmp_path / "c")}
    assert H.resolve_model_dir(env).name == sha
    with pytest.raises(ArtifactError, match="MODEL_DIR"):
        H.resolve_model_dir({"MODEL_DIR": str(tmp_path / "missing")})


def test_a_push_to_a_branch_leaves_main_alone(fake_hub, artifact):
    assert do_push(fake_hub, artifact, "--revision", "experiment") == 0
    repo = fake_hub.repo(REPO)
    assert "model.safetensors" in repo.commits[repo.branches["experiment"]]
    assert "model.safetensors" not in fake_hub.files(REPO, "main")


def test_space_upload_sends_the_app_and_pins_the_model_commit(fake_hub, artifact, tmp_path):
    app = tmp_path / "app"
    (app / "snake_model" / "__pycache__").mkdir(parents=True)
    (app / "app.py").write_text("print('app')\n")
    (app / "requirements.txt").write_text("gradio\n")
    (app / "README.md").write_text("---\nsdk: gradio\napp_file: app.py\n---\n# app\n")
    (app / "snake_model" / "__init__.py").write_text("")
    (app / "snake_model" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert do_push(fake_hub, artifact, "--space", "alice/snake-space", "--app-dir", str(app)) == 0
    space = fake_hub.repo("alice/snake-space", "space")
    files = space.commits[space.branches["main"]]
    assert {"app.py", "requirements.txt", "README.md", "snake_model/__init__.py"} <= set(files)
    assert not any("__pycache__" in f for f in files)
    # the fake Hub is not huggingface.co: the Space must pull from it too
    assert space.variables == {"MODEL_REPO": REPO, "MODEL_REVISION": fake_hub.head(REPO), "HF_ENDPOINT": fake_hub.url}
    readme = files["README.md"].decode()
    assert readme.startswith("---\nsdk: gradio\napp_file: app.py\nmodels:\n  - alice/snakes\n---\n# app")
    # later, the app alone, pinned to the model repo's current head
    os.environ["HF_TOKEN"] = TOKEN
    args = ["--repo", REPO, "--space", "alice/snake-space", "--app-dir", str(app), "--endpoint", fake_hub.url]
    assert push.main(args) == 0
    assert space.variables["MODEL_REVISION"] == fake_hub.head(REPO)


def test_bad_command_lines_get_a_clear_message_and_no_traceback(fake_hub, capsys):
    assert push.main(["--repo", "not a repo", "--endpoint", fake_hub.url, "--dry-run"]) == 2
    assert "OWNER/NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        push.main([])
    assert e.value.code == 2


def test_the_cli_in_a_subprocess_uses_hf_endpoint_and_hf_token_and_never_shows_the_token(fake_hub, artifact):
    env = {**os.environ, "HF_ENDPOINT": fake_hub.url, "HF_TOKEN": TOKEN, "HF_DEBUG": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "train.push", str(artifact), "--repo", REPO]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert fake_hub.head(REPO) in r.stdout
    assert "curl" in r.stderr  # HF_DEBUG really logged every request...
    assert TOKEN not in r.stdout + r.stderr  # ...without the token
    unauthenticated = {r.path for r in fake_hub.requests if r.authorization != f"Bearer {TOKEN}"}
    assert unauthenticated <= {"/api/agent-harnesses"}  # huggingface_hub's own user-agent registry fetch


def test_photo_montages_are_uploaded_only_when_the_manifest_marks_their_photos_publishable(
    fake_hub, artifact, tmp_path, capsys
):
    import shutil

    from train import manifest as mf

    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    m = json.loads((art / "metrics.json").read_text())
    m["top_losses"] = [{"path": f"a/{i}.jpg", "actual": "a", "predicted": "b", "loss": 1.0} for i in range(3)]
    (art / "metrics.json").write_text(json.dumps(m))
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"path": f"a/{i}.jpg", "class": "a", "use": "publishable", "sha256": "0" * 64} for i in range(3)]
    (data / "manifest.csv").write_bytes(mf.rows_to_csv(rows))
    assert do_push(fake_hub, art, "--data", str(data)) == 0
    files = fake_hub.files(REPO)
    assert "top_losses.png" in files and "top_losses.png" in files["README.md"].decode()
    rows[1]["use"] = "train-only"  # one photo in the montage may not be published
    (data / "manifest.csv").write_bytes(mf.rows_to_csv(rows))
    (art / "top_losses.png").write_bytes((art / "confusion_matrix.png").read_bytes())  # a new picture to commit
    assert do_push(fake_hub, art, "--data", str(data)) == 0
    assert "not uploading top_losses.png" in capsys.readouterr().out
    files = fake_hub.files(REPO)
    assert "top_losses.png" not in files["README.md"].decode()  # the card links only what the repo can show
    assert "top_losses.png" not in files  # and the earlier push's copy is deleted in the same commit


def test_a_pull_cut_short_is_pulled_again_not_served_without_its_feature_bank(tmp_path):
    d = tmp_path / "art"
    spec = ModelSpec(labels=["a", "b"], image_size=64)
    bank = np.random.default_rng(0).normal(size=(6, 1280)).astype(np.float32)
    save_artifact(build_network("tf_efficientnet_lite0", 2, pretrained=False), spec, d, ood_bank=bank)
    (d / "metrics.json").write_text(json.dumps({"valid_error": 0.5}))
    with FakeHub(tokens={TOKEN: USER}) as hub:
        assert do_push(hub, d) == 0
        sha = hub.head(REPO)
        first = H.pull_model(REPO, sha, cache_dir=tmp_path / "cache", endpoint=hub.url)
        (first / "ood.safetensors").unlink()  # as if the pull had been killed before the bank arrived
        again = H.pull_model(REPO, sha, cache_dir=tmp_path / "cache", endpoint=hub.url)
        assert again == first and (again / "ood.safetensors").is_file()
    from snake_model.predictor import Predictor

    assert Predictor(again).spec.abstain_score == "knn"


def test_the_space_readme_names_the_model_it_serves():
    text = "---\ntitle: x\nmodels:\n  - snake-classifier/placeholder\nlicense: mit\n---\n# body\n---\nmore\n"
    out = push.space_readme(text, "bob/snakes")
    assert out == "---\ntitle: x\nlicense: mit\nmodels:\n  - bob/snakes\n---\n# body\n---\nmore\n"
    assert push.space_readme("# no front matter\n", "bob/snakes") == "# no front matter\n"
    # the project's own README (the Space's) names no model of its own; a push adds exactly the one it serves
    own = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "\nmodels:" not in own.split("\n---", 1)[0]
    front = push.space_readme(own, "bob/snakes").split("\n---", 1)[0]
    assert front.count("models:") == 1 and front.endswith("models:\n  - bob/snakes") and "sdk: gradio" in front


def test_private_into_an_existing_public_repo_uploads_nothing(fake_hub, artifact, capsys):
    assert do_push(fake_hub, artifact) == 0  # creates alice/snakes, public
    head = fake_hub.head(REPO)
    assert do_push(fake_hub, artifact, "--private") != 0
    assert "already exists and is public" in capsys.readouterr().err
    assert fake_hub.head(REPO) == head


def test_a_cache_that_cannot_be_written_is_named_in_the_error():
    err = H._translate(PermissionError(13, "Permission denied", "/ro/cache/models--a--b"), "a/b", "main", "http://x")
    assert "Permission denied: /ro/cache/models--a--b" in str(err) and "HF_HUB_CACHE" in str(err)
    assert "HTTP" not in str(H._translate(ConnectionError("down"), "a/b", "main", "http://x"))  # still "cannot reach"


def test_private_into_an_existing_public_space_uploads_no_app(fake_hub, artifact, tmp_path, capsys):
    app = tmp_path / "app"
    (app / "snake_model").mkdir(parents=True)
    for name, text in [("app.py", "x\n"), ("requirements.txt", "gradio\n"), ("README.md", "# app\n")]:
        (app / name).write_text(text)
    (app / "snake_model" / "__init__.py").write_text("")
    space = ["--space", "alice/snake-space", "--app-dir", str(app)]
    assert do_push(fake_hub, artifact, *space) == 0  # a public Space
    before = fake_hub.repo("alice/snake-space", "space").branches["main"]
    fake_hub.repo(REPO).private = True  # the model repo is private now; the Space is still public
    assert do_push(fake_hub, artifact, *space, "--private") != 0
    assert "Space alice/snake-space already exists and is public" in capsys.readouterr().err
    assert fake_hub.repo("alice/snake-space", "space").branches["main"] == before


def test_the_int8_graph_is_pushed_pulled_and_pulled_again_when_a_pull_lost_it(tmp_path):
    from snake_model.quant import quantize_body

    d = tmp_path / "art"
    net = build_network("tf_efficientnet_lite0", 2, pretrained=False).eval()
    spec = ModelSpec(labels=["a", "b"], image_size=32)
    graph = quantize_body(net.body, 32, np.random.default_rng(0).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32))
    save_artifact(net, spec, d, int8_graph=graph)
    (d / "metrics.json").write_text(json.dumps({"valid_error": 0.5}))
    with FakeHub(tokens={TOKEN: USER}) as hub:
        assert do_push(hub, d) == 0
        assert hub.files(REPO)["features.int8.onnx"] == graph
        sha = hub.head(REPO)
        first = H.pull_model(REPO, sha, cache_dir=tmp_path / "cache", endpoint=hub.url)
        (first / "features.int8.onnx").unlink()  # as if the pull had been killed before the graph arrived
        again = H.pull_model(REPO, sha, cache_dir=tmp_path / "cache", endpoint=hub.url)
        assert again == first and (again / "features.int8.onnx").read_bytes() == graph
    from snake_model.predictor import Predictor

    assert Predictor(again).backend == "onnx-int8"


def test_a_changed_int8_graph_stops_the_push_before_anything_is_sent(tmp_path, capsys):
    from snake_model.quant import quantize_body

    d = tmp_path / "art"
    net = build_network("tf_efficientnet_lite0", 2, pretrained=False).eval()
    graph = quantize_body(net.body, 32, np.random.default_rng(0).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32))
    save_artifact(net, ModelSpec(labels=["a", "b"], image_size=32), d, int8_graph=graph)
    (d / "metrics.json").write_text(json.dumps({"valid_error": 0.5}))
    (d / "features.int8.onnx").write_bytes(graph[:-1] + b"\x01")
    with FakeHub(tokens={TOKEN: USER}) as hub:
        assert do_push(hub, d) != 0
        assert not hub.repos and all(r.method == "GET" for r in hub.requests)
    err = capsys.readouterr().err
    assert "features.int8.onnx" in err and "int8 graph was changed" in err and "nothing was sent" in err
