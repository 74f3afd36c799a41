"""The Gradio app through gradio_client on a loopback port: predict, explain, bad inputs, concurrency."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client(tiny_artifact):
    import app
    from snake_model.predictor import Predictor

    pred = Predictor(tiny_artifact)
    demo = app.build_demo(pred, "test", None, tiny_artifact)
    demo.queue(default_concurrency_limit=4, max_size=64)
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        max_file_size=app.MAX_UPLOAD_BYTES,
    )
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), pred
    finally:
        demo.close()


@pytest.fixture(scope="module")
def good_image(tmp_path_factory):
    p = tmp_path_factory.mktemp("imgs") / "disc.png"
    Image.new("RGB", (90, 70), (200, 40, 40)).save(p)
    return p


def _confidences(result):
    label, decision = result
    return {c["label"]: c["confidence"] for c in label["confidences"]}, decision


def test_predict_returns_every_label_with_confidences_summing_to_one(client, good_image):
    c, pred = client
    conf, decision = _confidences(c.predict(handle_file(str(good_image)), api_name="/predict"))
    assert set(conf) == {pred.spec.display_name(lab) for lab in pred.labels}
    assert abs(sum(conf.values()) - 1) < 1e-6
    assert set(decision["probs"]) == set(pred.labels) and isinstance(decision["abstain"], bool)
    assert decision["abstain"] == (decision["ood_score"] > decision["abstain_threshold"])


BAD = {
    "empty.jpg": b"",
    "page.jpg": b"<!doctype html><html><body>403</body></html>",
    "vector.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
    "doc.pdf": b"%PDF-1.7 hello",
    "cut.jpg": None,  # filled with a truncated JPEG
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_upload_gets_a_clear_error_and_the_next_call_works(client, good_image, tmp_path, name):
    import io

    c, _ = client
    data = BAD[name]
    if data is None:
        buf = io.BytesIO()
        Image.effect_noise((120, 120), 50).convert("RGB").save(buf, "JPEG")
        data = buf.getvalue()[:600]
    bad = tmp_path / name
    bad.write_bytes(data)
    with pytest.raises(Exception) as info:
        c.predict(handle_file(str(bad)), api_name="/predict")
    msg = str(info.value)
    assert any(w in msg for w in ("empty", "HTML", "SVG", "PDF", "truncated")), msg
    conf, _ = _confidences(c.predict(handle_file(str(good_image)), api_name="/predict"))
    assert abs(sum(conf.values()) - 1) < 1e-6


def test_explain_returns_a_heatmap_image_for_predicted_and_chosen_class(client, good_image):
    c, pred = client
    path, note = c.predict(handle_file(str(good_image)), "predicted class", api_name="/explain")
    im = Image.open(path)
    assert im.size == (pred.spec.image_size, pred.spec.image_size)
    chosen = pred.spec.display_name(pred.labels[0])
    _, note2 = c.predict(handle_file(str(good_image)), chosen, api_name="/explain")
    assert chosen in note2


def test_concurrent_calls_all_succeed(client, good_image):
    c, _ = client
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: c.predict(handle_file(str(good_image)), api_name="/predict"), range(16)))
    assert all(abs(sum(_confidences(r)[0].values()) - 1) < 1e-6 for r in results)


def test_serving_path_never_unpickles(tiny_artifact, good_image):
    code = f"""
import pickle, torch
def refuse(*a, **k): raise AssertionError("unpickling on the serving path")
pickle.load = pickle.loads = torch.load = refuse
class NoUnpickler(pickle.Unpickler):
    def __init__(self, *a, **k): refuse()
pickle.Unpickler = NoUnpickler
import os; os.environ["MODEL_DIR"] = {str(tiny_artifact)!r}
import app
pred, origin, err = app.load_predictor()
assert err is None, err
demo = app.build_demo(pred, origin, err, pred.model_dir)
label, decision = app.App(pred, origin).classify({str(good_image)!r})
print("OK", round(sum(label.values()), 6))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK 1.0" in out.stdout


def test_a_broken_model_is_shown_on_the_page_not_a_crash(tmp_path, monkeypatch):
    import app

    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    pred, origin, err = app.load_predictor()
    assert pred is None and "config.json" in err
    demo = app.build_demo(pred, origin, err)
    assert any("could not be loaded" in str(getattr(b, "value", "")) for b in demo.blocks.values())
