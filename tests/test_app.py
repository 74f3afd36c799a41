"""The Gradio app through gradio_client on a loopback port: every endpoint, hostile uploads, concurrency, Model tab."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
CLASS_INFO = {
    "red_disc": {"display_name": "Red disc", "scientific_name": "Discus ruber", "venomous": True},
    "green_bar": {"display_name": "Green bar", "scientific_name": "Virga viridis", "venomous": False},
    "blue_square": {"display_name": "Blue square", "scientific_name": "Quadratum caeruleum", "venomous": False},
}


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    """A valid PNG header claiming 100000 x 100000 pixels (10 gigapixels) with almost no data."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    return _bytes(Image.new("RGB", (120, 60), (200, 40, 40)), "JPEG", exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [Image.new("P", (40, 30), i * 40) for i in range(3)]
    return _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def truncated_jpeg() -> bytes:
    return _bytes(Image.effect_noise((120, 120), 50).convert("RGB"), "JPEG")[:600]


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("snake.jpg", _bytes(Image.new("RGB", (8, 8)), "JPEG"))
    return buf.getvalue()


# name -> (file name, bytes factory, None for "a valid answer" or words one of which the error must contain)
HOSTILE = {
    "empty": ("empty.jpg", lambda: b"", ("empty",)),
    "html_as_jpg": ("page.jpg", lambda: b"<!doctype html><html><body>403 Forbidden</body></html>", ("HTML",)),
    "svg": ("vector.svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', ("SVG",)),
    "pdf": ("doc.pdf", lambda: b"%PDF-1.7\n1 0 obj << >> endobj\n%%EOF", ("PDF",)),
    "truncated_jpeg": ("cut.jpg", truncated_jpeg, ("truncated",)),
    "bomb_png_header": ("bomb.png", bomb_png, ("megapixel", "decompression bomb")),
    "random_bytes_as_png": ("noise.png", lambda: bytes(range(256)) * 40, ("not a recognised image",)),
    "gzip": ("photo.jpg.gz", lambda: gzip.compress(b"x" * 1000), ("not a recognised image",)),
    "zip": ("photos.zip", zip_bytes, ("not a recognised image",)),
    "one_pixel": ("dot.png", lambda: _bytes(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), None),
    "png_16_bit": ("deep.png", lambda: _bytes(Image.new("I;16", (50, 40), 40000), "PNG"), None),
    "cmyk_jpeg": ("print.jpg", lambda: _bytes(Image.new("CMYK", (50, 40), (0, 200, 200, 0)), "JPEG"), None),
    "animated_gif": ("anim.gif", animated_gif, None),
    "grayscale": ("grey.jpg", lambda: _bytes(Image.new("L", (60, 50), 120), "JPEG"), None),
    "alpha": ("alpha.png", lambda: _bytes(Image.new("RGBA", (60, 50), (0, 200, 0, 90)), "PNG"), None),
    "panorama_10000x20": ("wide.png", lambda: _bytes(Image.new("RGB", (10_000, 20), (30, 90, 200)), "PNG"), None),
    "exif_rotated": ("rotated.jpg", exif_rotated_jpeg, None),
    "no_extension": ("photo", lambda: _bytes(Image.new("RGB", (70, 50), (40, 190, 60)), "JPEG"), None),
    "webp": ("pic.webp", lambda: _bytes(Image.new("RGB", (70, 50), (40, 70, 220)), "WEBP"), None),
}


@pytest.fixture(scope="module")
def rich_artifact(tiny_artifact, tmp_path_factory) -> Path:
    """The tiny artifact plus class metadata (one venomous class), licensed thumbnails and ATTRIBUTION.md."""
    d = tmp_path_factory.mktemp("rich") / "model"
    shutil.copytree(tiny_artifact, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["class_info"] = CLASS_INFO
    (d / "config.json").write_text(json.dumps(cfg))
    metrics = json.loads((d / "metrics.json").read_text())
    (d / "thumbs").mkdir()
    for i, lic in enumerate(["CC-BY 4.0", "cc-by-nc"]):
        Image.new("RGB", (32, 32), (10 * i, 90, 90)).save(d / "thumbs" / f"{i}.jpg")
        metrics["top_losses"][i] |= {"thumbnail": f"thumbs/{i}.jpg", "licence": lic, "author": f"author{i}"}
    metrics["top_losses"][2] |= {"thumbnail": "../../etc/passwd", "licence": "cc0"}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "ATTRIBUTION.md").write_text("# Credits\n\nPhoto by someone, CC BY 4.0\n")
    return d


@pytest.fixture(scope="module")
def server(rich_artifact):
    import app
    from snake_model.predictor import Predictor

    pred = Predictor(rich_artifact)
    demo = app.build_demo(pred, "test", None, rich_artifact)
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        yield url, Client(url, verbose=False), pred, demo
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(server):
    return server[1], server[2]


@pytest.fixture(scope="module")
def good_image(tmp_path_factory):
    p = tmp_path_factory.mktemp("imgs") / "disc.png"
    Image.new("RGB", (90, 70), (200, 40, 40)).save(p)
    return p


def _confidences(result):
    label, decision = result
    return {c["label"]: c["confidence"] for c in label["confidences"]}, decision


def _assert_healthy(c: Client, image: Path) -> None:
    conf, _ = _confidences(c.predict(handle_file(str(image)), api_name="/predict"))
    assert abs(sum(conf.values()) - 1) < 1e-6


def test_the_page_loads_and_predict_answers(server, good_image):
    url, c, _, _ = server
    page = httpx.get(url, timeout=30)
    assert page.status_code == 200 and "Snake classifier" in page.text
    _assert_healthy(c, good_image)


def test_only_predict_and_explain_are_public_endpoints(client):
    c, _ = client
    assert set(c.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/predict", "/explain"}


def test_predict_returns_every_class_by_display_and_scientific_name(client, good_image):
    c, pred = client
    conf, decision = _confidences(c.predict(handle_file(str(good_image)), api_name="/predict"))
    assert set(conf) == {"Red disc (Discus ruber)", "Green bar (Virga viridis)", "Blue square (Quadratum caeruleum)"}
    assert abs(sum(conf.values()) - 1) < 1e-6
    assert set(decision["probs"]) == set(pred.labels) and isinstance(decision["abstain"], bool)
    assert decision["abstain"] == (decision["ood_score"] > decision["abstain_threshold"])
    assert decision["message"]


def test_a_venomous_class_in_the_top_three_gives_a_warning(client, good_image):
    c, _ = client
    _, decision = c.predict(handle_file(str(good_image)), api_name="/predict")
    assert decision["venomous_in_top3"] == ["red_disc"]
    assert "venomous" in decision["message"].lower() and "Red disc" in decision["message"]


def test_no_venomous_metadata_means_no_warning_but_the_safety_line_stays(tiny_artifact, good_image):
    import app
    from snake_model.predictor import Predictor

    a = app.App(Predictor(tiny_artifact), "test")
    label, verdict, decision = a.ui_classify(str(good_image))
    assert decision["venomous_in_top3"] == [] and "enomous" not in verdict
    assert "Not for snakebite" in verdict
    assert a.ui_classify(None) == (None, "", None)


def test_an_unrecognised_image_gets_the_abstain_message(tiny_artifact, good_image):
    import app
    from snake_model.predictor import Predictor

    pred = Predictor(tiny_artifact)
    pred.spec.abstain_threshold = -1.0  # every score is above it: the model abstains on everything
    a = app.App(pred, "test")
    label, verdict, decision = a.ui_classify(str(good_image))
    assert decision["abstain"] is True and decision["label"] is None
    assert "doesn't look like any of the 3 snakes I know" in verdict
    assert "doesn't look like any of the 3 snakes I know" in decision["message"]
    # the Label's headline says so too: it names no species; the confidences stay, for reference
    assert label["label"] == "not one of my 3 snakes"
    assert abs(sum(c["confidence"] for c in label["confidences"]) - 1) < 1e-6


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_upload_gets_a_clear_message_or_a_valid_answer_and_the_server_survives(
    client, good_image, tmp_path, case, capfd
):
    c, pred = client
    name, make, words = HOSTILE[case]
    f = tmp_path / name
    f.write_bytes(make())
    for api in ("/predict", "/explain"):
        args = (handle_file(str(f)),) if api == "/predict" else (handle_file(str(f)), "predicted class")
        if words is None:
            out = c.predict(*args, api_name=api)
            if api == "/predict":
                conf, _ = _confidences(out)
                assert len(conf) == len(pred.labels) and abs(sum(conf.values()) - 1) < 1e-6
            else:
                assert Image.open(out[0]).size == (pred.spec.image_size, pred.spec.image_size)
        else:
            with pytest.raises(Exception) as info:
                c.predict(*args, api_name=api)
            assert any(w in str(info.value) for w in words), str(info.value)
            assert "Traceback" not in str(info.value)
    _assert_healthy(c, good_image)
    # bad input is the user's, not a server fault: no stack trace in the server's log either
    assert "Traceback" not in capfd.readouterr().err


def test_a_file_over_max_file_size_is_refused_by_client_and_server(server, good_image, tmp_path):
    import app

    url, c, _, _ = server
    big = tmp_path / "big.jpg"
    big.write_bytes(_bytes(Image.new("RGB", (8, 8)), "JPEG") + b"\0" * (app.MAX_UPLOAD_BYTES + 1))
    with pytest.raises(ValueError, match="maximum file size"):
        c.predict(handle_file(str(big)), api_name="/predict")
    with open(big, "rb") as fh:
        r = httpx.post(url + "gradio_api/upload", files={"files": ("big.jpg", fh)}, timeout=60)
    assert r.status_code == 413 and "maximum allowed size" in r.text
    _assert_healthy(c, good_image)


def test_an_image_url_is_refused_without_fetching_it(client, good_image):
    c, _ = client
    with pytest.raises(Exception, match="URLs are not fetched"):
        c.predict(handle_file("http://127.0.0.1:9/snake.jpg"), api_name="/predict")
    _assert_healthy(c, good_image)


def _raw_predict_error(url: str, value) -> str:
    """The error text the app sends back for a raw HTTP call of /predict with `value` as the image."""
    r = httpx.post(url + "gradio_api/call/predict", json={"data": [value]}, timeout=30)
    r.raise_for_status()
    events = httpx.get(url + f"gradio_api/call/predict/{r.json()['event_id']}", timeout=60).text
    assert "event: error" in events and "event: complete" not in events, events[:500]
    data = events.split("event: error", 1)[1].split("data:", 1)[1].strip().splitlines()[0]
    return json.loads(data)["error"]


def _data_url(data: bytes, mime: str = "image/png") -> str:
    import base64

    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.mark.parametrize("api", ["/predict", "/explain"])
@pytest.mark.parametrize("kind", ["http_url", "https_url", "ftp_url", "server_path", "junk", "empty"])
def test_a_bare_string_as_the_image_gets_the_apps_message_not_gradios_generic_one(server, good_image, kind, api, capfd):
    """gradio_client sends a string as is (only handle_file's dict is uploaded): it fails gradio's ImageData
    validation before any app code runs, and the client saw only "The upstream Gradio app has raised an exception"."""
    import app

    url, c, _, _ = server
    value, message = {
        "http_url": ("http://127.0.0.1:9/snake.jpg", app.URL_REFUSED),
        "https_url": ("https://example.invalid/snake.png", app.URL_REFUSED),
        "ftp_url": ("ftp://127.0.0.1:9/snake.png", app.URL_REFUSED),
        "server_path": (str(good_image), app.BARE_STRING_REFUSED),  # a real image on the server: not opened
        "junk": ("not an image at all", app.BARE_STRING_REFUSED),
        "empty": ("", app.BARE_STRING_REFUSED),
    }[kind]
    args = (value,) if api == "/predict" else (value, app.PREDICTED)
    with pytest.raises(Exception) as info:
        c.predict(*args, api_name=api)
    assert getattr(info.value, "message", None) == message, str(info.value)
    assert "handle_file(local_path)" in message and "data:image/jpeg;base64" in message
    if api == "/predict":
        assert _raw_predict_error(url, value) == message  # a raw HTTP POST gets the same words
    _assert_healthy(c, good_image)
    assert "Traceback" not in capfd.readouterr().err  # the client's mistake, not a server fault


@pytest.mark.parametrize(
    "value, kind", [(5, "a number"), (1.5, "a number"), (True, "a boolean"), ([1, 2], "a list")], ids=str
)
def test_a_non_string_non_file_image_value_gets_the_apps_message(client, value, kind):
    import app

    c, _ = client
    with pytest.raises(Exception) as info:
        c.predict(value, api_name="/predict")
    assert getattr(info.value, "message", None) == app.not_file_data_refused(kind), str(info.value)


def test_a_dict_without_file_data_meta_is_not_read_as_a_server_path(server, good_image, capfd):
    """Without meta {"_type": "gradio.FileData"} gradio neither checks nor copies the path: it must not be read."""
    import app

    url, c, _, _ = server
    for path in (str(good_image), "/etc/hostname", "/nonexistent/x.png"):  # no classifying, no existence oracle
        for value in ({"path": path}, {"path": path, "meta": {"_type": "other"}}):
            with pytest.raises(Exception) as info:
                c.predict(value, api_name="/predict")
            assert getattr(info.value, "message", None) == app.NOT_FILE_DATA_DICT_REFUSED, str(info.value)
            assert _raw_predict_error(url, value) == app.NOT_FILE_DATA_DICT_REFUSED
    with pytest.raises(Exception) as info:
        c.predict({"url": "http://127.0.0.1:9/snake.jpg"}, api_name="/predict")
    assert getattr(info.value, "message", None) == app.NOT_FILE_DATA_DICT_REFUSED
    _assert_healthy(c, good_image)
    assert "Traceback" not in capfd.readouterr().err


def test_a_bare_base64_data_url_is_classified_like_the_same_file(server, good_image):
    """A data: URL carries the image itself (nothing is fetched): it is decoded under the upload cap and goes
    through load_image like an upload, so it gets the same answer as handle_file of the same bytes."""
    url, c, pred, _ = server
    want, _ = _confidences(c.predict(handle_file(str(good_image)), api_name="/predict"))
    durl = _data_url(good_image.read_bytes())
    for value in (durl, "DATA:" + durl[5:], {"url": durl}):
        got, decision = _confidences(c.predict(value, api_name="/predict"))
        assert got == pytest.approx(want, abs=1e-9) and decision["probs"]
    path, note = c.predict(durl, "predicted class", api_name="/explain")
    assert Image.open(path).size == (pred.spec.image_size, pred.spec.image_size) and note.startswith("Heatmap")
    r = httpx.post(url + "gradio_api/call/predict", json={"data": [durl]}, timeout=30)
    events = httpx.get(url + f"gradio_api/call/predict/{r.json()['event_id']}", timeout=60).text
    assert "event: complete" in events


def test_a_bad_bare_data_url_gets_a_clear_message(client, good_image):
    import app

    c, _ = client
    over = "data:image/png;base64," + "A" * (app.MAX_UPLOAD_BYTES * 4 // 3 + 8)
    for value, words in (
        ("data:image/png;base64,@@@not base64@@@", "could not read the image data"),
        ("data:image/png,rawbytes", "base64 data URL"),
        (over, "MB limit"),
        (_data_url(b"<!doctype html><html></html>", "image/jpeg"), "HTML"),  # load_image still sniffs the bytes
        (_data_url(bomb_png()), "megapixel"),
    ):
        with pytest.raises(Exception) as info:
            c.predict(value, api_name="/predict")
        assert words in str(getattr(info.value, "message", "")), str(info.value)[:300]
    _assert_healthy(c, good_image)


def test_a_server_path_outside_the_upload_cache_is_refused(server):
    url = server[0]
    payload = {"data": [{"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}]}
    r = httpx.post(url + "gradio_api/call/predict", json=payload, timeout=30)
    r.raise_for_status()
    events = httpx.get(url + f"gradio_api/call/predict/{r.json()['event_id']}", timeout=60).text
    assert "event: error" in events and "complete" not in events


def test_no_image_gets_a_clear_message(client):
    c, _ = client
    with pytest.raises(Exception, match="No image given"):
        c.predict(None, api_name="/predict")


def test_explain_returns_a_heatmap_for_the_predicted_and_a_chosen_class(client, good_image):
    c, pred = client
    path, note = c.predict(handle_file(str(good_image)), "predicted class", api_name="/explain")
    assert Image.open(path).size == (pred.spec.image_size, pred.spec.image_size)
    chosen = "Green bar (Virga viridis)"
    out2, note2 = c.predict(handle_file(str(good_image)), chosen, api_name="/explain")
    assert chosen in note2
    assert Image.open(path).tobytes() != Image.open(out2).tobytes() or chosen in note


def test_explain_refuses_an_unknown_class(client, good_image):
    c, _ = client
    with pytest.raises(Exception, match="not in the list of choices|unknown class"):
        c.predict(handle_file(str(good_image)), "Pink elephant", api_name="/explain")


def test_sixteen_clients_for_ten_seconds_see_no_errors(server):
    from bench.load_app import hammer, report, sample_images

    url = server[0]
    with __import__("tempfile").TemporaryDirectory() as tmp:
        res = hammer(url, sample_images(Path(tmp)), clients=16, seconds=10, explain_every=7)
    print(report(res, 16))
    assert res.n_errors == 0, report(res, 16)
    assert res.latencies.get("/predict") and res.latencies.get("/explain")


def test_uploads_are_limited_the_cache_is_cleaned_and_startup_pings_nobody(server):
    import app

    demo = server[3]
    assert demo.delete_cache == app.DELETE_CACHE and demo.max_file_size == app.MAX_UPLOAD_BYTES
    assert demo._queue.max_size == app.QUEUE_SIZE
    assert demo.analytics_enabled is False  # no version check or usage ping at start-up
    limits = {fn.api_name: fn.concurrency_limit for fn in demo.fns.values() if fn.api_name}
    assert limits["predict"] == app.PREDICT_CONCURRENCY and limits["explain"] == app.EXPLAIN_CONCURRENCY


def test_uploading_in_the_page_classifies_at_once_through_a_private_event(server):
    demo = server[3]
    fns = [fn for fn in demo.fns.values() if fn.name == "ui_classify"]
    assert fns and all(fn.api_visibility == "private" for fn in fns)
    assert any(t[1] == "change" for fn in fns for t in fn.targets)


def _texts(demo) -> str:
    return "\n".join(str(getattr(b, "value", "")) for b in demo.blocks.values())


def test_the_model_tab_reads_everything_from_the_artifact(server):
    import gradio as gr

    import app

    demo = server[3]
    text = _texts(demo)
    assert "Revision:" in text and "local (not from the Hub)" in text
    assert "Data sources and licences" in text and "Photo by someone" in text
    images = [b for b in demo.blocks.values() if type(b) is gr.Image and b.value]
    assert any(b.label == "Confusion matrix (validation)" for b in images)
    tables = [b for b in demo.blocks.values() if isinstance(b, gr.Dataframe)]
    assert any({"precision", "recall"} <= set(t.value["headers"]) for t in tables)
    galleries = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery)]
    assert len(galleries) == 1 and len(galleries[0].value) == 1  # only the CC-BY thumbnail
    assert "CC-BY" in galleries[0].value[0]["caption"].upper()
    hub = {"MODEL_REPO": "alice/snakes", "MODEL_REVISION": "v1"}
    assert app.model_revision(Path("/x/snapshots/" + "a" * 40), hub) == f"v1 (commit {'a' * 40})"
    assert app.model_revision(Path("/x/snapshots/" + "b" * 40), {}) == "b" * 40
    # MODEL_REVISION means nothing for a local folder (MODEL_DIR wins, or no MODEL_REPO): not shown as its revision
    assert app.model_revision(Path("/my/model"), {**hub, "MODEL_DIR": "/my/model"}) == "local (not from the Hub)"
    assert app.model_revision(Path("/my/model"), {"MODEL_REVISION": "v1"}) == "local (not from the Hub)"


def test_without_licensed_thumbnails_top_losses_are_labels_and_losses_only(tiny_artifact):
    import gradio as gr

    import app
    from snake_model.predictor import Predictor

    demo = app.build_demo(Predictor(tiny_artifact), "test", None, tiny_artifact)
    assert not [b for b in demo.blocks.values() if isinstance(b, gr.Gallery)]
    assert "only their labels and losses are shown" in _texts(demo)


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
print("OK", round(sum(c["confidence"] for c in label["confidences"]), 6))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK 1.0" in out.stdout


@pytest.mark.parametrize(
    "env, words",
    [
        ({"MODEL_DIR": "/nonexistent/model"}, "is not a directory"),
        ({"MODEL_REPO": "not a repo id"}, "OWNER/NAME"),
        ({"MODEL_REPO": "alice/snakes", "MODEL_REVISION": "a" * 40, "HF_HUB_OFFLINE": "1"}, "local cache"),
    ],
    ids=["missing-dir", "bad-repo-id", "offline-not-cached"],
)
def test_a_model_that_cannot_be_resolved_is_shown_on_the_page_not_a_crash(env, words, tmp_path, caplog):
    import app

    env = env | {"HF_HUB_CACHE": str(tmp_path / "cache")}
    pred, origin, err = app.load_predictor(env)
    assert pred is None and words in err
    _assert_load_error_logged(caplog, words)
    demo = app.build_demo(pred, origin, err)
    assert "could not be loaded" in _texts(demo) and words in _texts(demo)


def _assert_load_error_logged(caplog, words: str) -> None:
    """The server's log (a Space's log) says at ERROR level that the model did not load, and why."""
    errors = [r for r in caplog.records if r.name == "app" and r.levelname == "ERROR"]
    assert any(words in r.getMessage() and "Could not load the model" in r.getMessage() for r in errors), [
        (r.levelname, r.getMessage()) for r in caplog.records
    ]


def test_a_broken_model_folder_is_shown_on_the_page_not_a_crash(tmp_path, caplog):
    import app

    pred, origin, err = app.load_predictor({"MODEL_DIR": str(tmp_path)})
    assert pred is None and "config.json" in err
    _assert_load_error_logged(caplog, "config.json")
    assert "could not be loaded" in _texts(app.build_demo(pred, origin, err))


def test_a_model_file_that_fails_to_read_is_logged_with_its_reason(tiny_artifact, monkeypatch, caplog):
    import app
    import snake_model.predictor

    def damaged(model_dir):
        raise RuntimeError("safetensors header is damaged")

    monkeypatch.setattr(snake_model.predictor, "Predictor", damaged)
    pred, origin, err = app.load_predictor({"MODEL_DIR": str(tiny_artifact)})
    assert pred is None and "safetensors header is damaged" in err
    _assert_load_error_logged(caplog, "RuntimeError: safetensors header is damaged")


def test_without_a_model_the_api_keeps_its_endpoints_and_answers_why(server, good_image, tmp_path, caplog):
    """A gradio_client caller of an app whose model did not load gets the reason, not "Cannot find a function with
    api_name: /predict"; the call is the same as for a working app, and the page still shows the error."""
    import app

    pred, origin, err = app.load_predictor({"MODEL_DIR": str(tmp_path / "no-such-model")})
    assert pred is None
    _assert_load_error_logged(caplog, "is not a directory")
    demo = app.build_demo(pred, origin, err)
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        c = Client(url, verbose=False)
        want = app.no_model_refused(err)
        assert "could not be loaded" in want and "is not a directory" in want and "server's log" in want
        for args, api in (
            ((handle_file(str(good_image)),), "/predict"),
            ((handle_file(str(good_image)), app.PREDICTED), "/explain"),
            ((handle_file(str(good_image)), "Red disc (Discus ruber)"), "/explain"),
        ):
            with pytest.raises(Exception) as info:
                c.predict(*args, api_name=api)
            assert getattr(info.value, "message", None) == want, str(info.value)
            assert "Cannot find a function" not in str(info.value)
        # the same endpoints, with the same parameters and returns, as the working app's
        broken = c.view_api(print_info=False, return_format="dict")["named_endpoints"]
        working = server[1].view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert set(broken) == set(working) == {"/predict", "/explain"}
        for api in broken:
            for part, keys in (
                ("parameters", ("parameter_name", "component", "parameter_has_default", "parameter_default")),
                ("returns", ("component",)),
            ):
                shape = [tuple(p[k] for k in keys) for p in broken[api][part]]
                assert shape == [tuple(p[k] for k in keys) for p in working[api][part]], (api, part)
        # the page still says what went wrong
        page = httpx.get(url + "config", timeout=30).text
        assert "The model could not be loaded" in page and "is not a directory" in page
    finally:
        demo.close()


def test_a_metrics_json_with_nulls_and_strings_still_builds_the_page(tmp_path, tiny_artifact):
    import shutil

    import gradio as gr

    import app
    from snake_model.predictor import Predictor

    d = tmp_path / "m"
    shutil.copytree(tiny_artifact, d)
    m = json.loads((d / "metrics.json").read_text())
    m["valid_error"], m["ece_after"] = None, "low"
    m["per_class"] = {lab: {"precision": None, "recall": "x", "support": 3} for lab in m["labels"]}
    m["top_losses"] = [{"actual": "a", "predicted": "b", "loss": None, "prob_actual": "?", "path": "a/x.jpg"}]
    (d / "metrics.json").write_text(json.dumps(m))
    pred = Predictor(d)
    demo = app.build_demo(pred, "test", None, d)  # metrics.json is not hashed: a bad one must not take the Space down
    assert "Validation error **n/a**" in _texts(demo) and "→ n/a after temperature" in _texts(demo)
    table = next(b for b in demo.blocks.values() if isinstance(b, gr.Dataframe))
    assert [row[1:4] for row in table.value["data"]] == [["n/a", "n/a", "n/a"]] * len(m["labels"])
    (d / "metrics.json").write_text(json.dumps({**m, "per_class": [1, 2], "top_losses": {"a": 1}}))
    app.build_demo(Predictor(d), "test", None, d)


def test_a_base64_data_url_payload_goes_through_the_loaders_caps_too(tiny_artifact, good_image):
    import base64

    import gradio as gr
    from gradio.data_classes import ImageData

    import app
    from snake_model.predictor import Predictor

    box = app.SafeImage(type="filepath")
    b64 = base64.b64encode(good_image.read_bytes()).decode()
    data = box.preprocess(ImageData(path=None, url="data:image/jpeg;base64," + b64))
    assert data == good_image.read_bytes()  # the bytes themselves, not an image gradio decoded and re-encoded
    a = app.App(Predictor(tiny_artifact), "test")
    assert abs(sum(c["confidence"] for c in a.ui_classify(data)[0]["confidences"]) - 1) < 1e-6
    bomb = _bytes(Image.new("L", (9000, 9000)), "PNG")  # 81 MP of zeros: a few hundred kB compressed
    with pytest.raises(gr.Error, match="megapixel"):
        a.ui_classify(
            box.preprocess(ImageData(path=None, url="data:image/png;base64," + base64.b64encode(bomb).decode()))
        )
    with pytest.raises(gr.Error, match="MB limit"):
        box.preprocess(ImageData(path=None, url="data:image/png;base64," + "A" * (app.MAX_UPLOAD_BYTES * 2)))
    with pytest.raises(gr.Error, match="could not read"):
        box.preprocess(ImageData(path=None, url="data:image/png;base64,@@@not base64@@@"))


def test_explain_says_when_the_model_abstains_on_the_photo(tiny_artifact, good_image):
    import app
    from snake_model.predictor import Predictor

    pred = Predictor(tiny_artifact)
    a = app.App(pred, "test")
    _, note = a.explain(str(good_image), app.PREDICTED)
    assert pred.predict(app.load_image(str(good_image))).abstain is False
    assert "don't think" not in note and note.startswith("Heatmap for **")
    pred.spec.abstain_threshold = -1.0  # every score is above it: /predict abstains on everything
    assert a.classify(str(good_image))[1]["abstain"] is True
    path, note = a.explain(str(good_image), app.PREDICTED)
    top = a.names[max(pred.predict(app.load_image(str(good_image))).probs.items(), key=lambda kv: kv[1])[0]]
    assert Path(path).is_file()
    assert "I don't think this is any of the 3 snakes I know" in note and f"**{top}**" in note
    _, chosen = a.explain(str(good_image), a.names[pred.spec.labels[0]])  # a class asked for by name: as asked
    assert chosen.startswith("Heatmap for **")


def test_class_names_are_shown_literally_not_as_markdown_or_html(tiny_artifact, good_image, tmp_path):
    import app
    from snake_model.predictor import Predictor

    art = tmp_path / "model"
    shutil.copytree(tiny_artifact, art)
    cfg = json.loads((art / "config.json").read_text())
    hostile = {"display_name": "<b>Bold</b> [link](http://x.test) *em*", "venomous": True}
    cfg["class_info"] = {lab: hostile | {"display_name": f"{hostile['display_name']} {lab}"} for lab in cfg["labels"]}
    (art / "config.json").write_text(json.dumps(cfg))
    pred = Predictor(art)
    pred.spec.abstain_threshold = 1e9  # never abstains: the verdict names the class
    a = app.App(pred, "test")
    _, verdict, _ = a.ui_classify(str(good_image))
    _, note = a.explain(str(good_image), app.PREDICTED)
    for text in (verdict, note):
        assert "<b>" not in text and "[link]" not in text and " *em*" not in text
        # shown literally: HTML as entities, Markdown punctuation escaped (md_text may escape the URL's too)
        assert "&lt;b&gt;Bold&lt;/b&gt; \\[link\\](" in text and "\\*em\\*" in text
    assert app.md_text("a_b\nc") == "a\\_b\\\\x0ac"  # shown as a_b\x0ac: a line break never starts a new block
    demo = app.build_demo(pred, "test", None, art)
    shown = [b.value for b in demo.blocks.values() if type(b).__name__ == "Markdown" and "species" in str(b.value)]
    assert shown and "<b>" not in shown[0] and "&lt;b&gt;" in shown[0]


def _copy(tiny_artifact: Path, dest: Path) -> Path:
    shutil.copytree(tiny_artifact, dest)
    return dest


def _served_urls(value) -> list[str]:
    """Every file URL in a /config value (images, gallery items), however deep."""
    if isinstance(value, dict):
        own = [value["url"]] if isinstance(value.get("url"), str) else []
        return own + [u for v in value.values() for u in _served_urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in _served_urls(v)]
    return []


def test_links_out_of_the_model_folder_are_neither_read_nor_served(tiny_artifact, tmp_path, caplog):
    """`git clone` of a model repo makes real symlinks: one to a server file must not reach the page or the web."""
    import app
    from snake_model.predictor import Predictor

    secret = tmp_path / "outside"
    secret.mkdir()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(secret / "private.png")  # a valid picture: refused for where it is
    (secret / "token.txt").write_text("hf_SECRETTOKEN_example\n")
    (secret / "metrics.json").write_text(json.dumps({"valid_error": 0.123456, "n_valid": 777}))
    d = _copy(tiny_artifact, tmp_path / "model")
    for name, target in {
        "confusion_matrix.png": secret / "private.png",
        "reliability.png": secret / "token.txt",
        "README.md": secret / "token.txt",
        "ATTRIBUTION.md": secret / "token.txt",
        "metrics.json": secret / "metrics.json",
    }.items():
        (d / name).unlink(missing_ok=True)
        (d / name).symlink_to(target)
    (d / "inside.md").write_text("fine")
    assert app.model_file(d, "inside.md") == (d / "inside.md").resolve()
    assert app.model_file(d, "../outside/token.txt") is None and app.model_file(d, str(secret / "token.txt")) is None
    demo = app.build_demo(Predictor(d), "test", None, d)
    text = _texts(demo)
    assert "SECRETTOKEN" not in text and "12.3%" not in text and "777" not in text
    assert not [b for b in demo.blocks.values() if type(b).__name__ == "Image" and b.value and "Confusion" in b.label]
    assert "leads outside the model folder" in caplog.text
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}"
        config = httpx.get(url + "/config", timeout=30).json()
        assert "SECRETTOKEN" not in json.dumps(config)
        for u in _served_urls([c.get("props", {}).get("value") for c in config["components"]]):
            body = httpx.get(u if u.startswith("http") else url + u, timeout=30).content
            assert b"SECRETTOKEN" not in body and body != (secret / "private.png").read_bytes()
    finally:
        demo.close()


def test_a_hub_cache_snapshot_whose_files_link_into_its_blobs_is_shown(tiny_artifact, tmp_path):
    """huggingface_hub's cache: snapshots/COMMIT/NAME -> ../../blobs/HASH. Those links stay readable; a link from
    the snapshot to anywhere else (another repo's blobs, a server file) is not."""
    import gradio as gr

    import app
    from snake_model.predictor import Predictor

    repo = tmp_path / "hub" / "models--alice--snakes"
    snap = repo / "snapshots" / ("c" * 40)
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    other = tmp_path / "hub" / "models--mallory--x" / "blobs"
    other.mkdir(parents=True)
    (other / "f00d").write_text("OTHER REPO TEXT")
    files = {f.name: f.read_bytes() for f in tiny_artifact.iterdir() if f.is_file()}
    files["README.md"] = b"# card\n\n## Data and licences\n\nCARD FROM THE BLOBS\n"
    files["confusion_matrix.png"] = _bytes(Image.new("RGB", (50, 40), (9, 99, 9)), "PNG")
    for i, (name, data) in enumerate(files.items()):
        (repo / "blobs" / f"blob{i}").write_bytes(data)
        (snap / name).symlink_to(Path("..", "..", "blobs", f"blob{i}"))
    (snap / "ATTRIBUTION.md").symlink_to(Path("..", "..", "..", "models--mallory--x", "blobs", "f00d"))
    assert app.model_file(snap, "README.md").parent == (repo / "blobs").resolve()
    demo = app.build_demo(Predictor(snap), "test", None, snap)
    text = _texts(demo)
    assert "CARD FROM THE BLOBS" in text and "OTHER REPO TEXT" not in text
    assert "Validation error **" in text and "Validation error **n/a**" not in text
    images = [b for b in demo.blocks.values() if type(b) is gr.Image and b.value]
    assert "Confusion matrix (validation)" in [b.label for b in images]


def test_an_abstained_answer_names_no_species_in_the_api(server, good_image):
    """The Label's headline (what a client prints as the answer) must not name a species when the model abstains."""
    _, c, pred, _ = server
    label, decision = c.predict(handle_file(str(good_image)), api_name="/predict")
    assert decision["abstain"] is False and label["label"] == decision["display_name"]
    old = pred.spec.abstain_threshold
    pred.spec.abstain_threshold = -1.0  # every score is above it: the model abstains on everything
    try:
        label, decision = c.predict(handle_file(str(good_image)), api_name="/predict")
    finally:
        pred.spec.abstain_threshold = old
    assert decision["abstain"] is True and decision["label"] is None and decision["display_name"] is None
    assert label["label"] == "not one of my 3 snakes"
    assert "doesn't look like any of the 3 snakes I know" in decision["message"]
    conf = {x["label"]: x["confidence"] for x in label["confidences"]}
    assert len(conf) == 3 and abs(sum(conf.values()) - 1) < 1e-6  # the scores stay, for reference
    assert conf == pytest.approx({a: decision["probs"][k] for k, a in _names(pred).items()}, abs=1e-9)


def _names(pred) -> dict[str, str]:
    return {lab: pred.spec.display_name(lab) for lab in pred.labels}


@pytest.fixture(scope="module")
def background_artifact(tiny_artifact, tmp_path_factory) -> Path:
    """The tiny artifact as if trained with --background: its last class renamed to the decoy class."""
    d = _copy(tiny_artifact, tmp_path_factory.mktemp("bg") / "model")
    cfg = json.loads((d / "config.json").read_text())
    cfg["labels"][-1] = "not_a_snake"
    cfg["class_info"] = {lab: v for lab, v in cfg.get("class_info", {}).items() if lab in cfg["labels"]}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_the_decoy_class_of_a_background_model_is_not_counted_or_named_as_a_snake(
    background_artifact, good_image, monkeypatch
):
    import app
    from snake_model.predictor import Predictor
    from train.card import species
    from train.data import BACKGROUND_LABEL

    assert app.BACKGROUND_LABEL == BACKGROUND_LABEL
    pred = Predictor(background_artifact)
    a = app.App(pred, "test")
    assert len(a.species) == len(species(pred.spec)) == 2
    knows = [
        b.value
        for b in app.build_demo(pred, "t", None, background_artifact).blocks.values()
        if "Knows" in str(getattr(b, "value", ""))
    ]
    assert knows and knows[0].startswith("Knows 2 species:") and "not a snake" not in knows[0].split(".")[0]
    assert a.message({"abstain": True, "venomous_in_top3": []}) == "This doesn't look like any of the 2 snakes I know."
    decoy = {"abstain": False, "label": BACKGROUND_LABEL, "display_name": "not a snake", "confidence": 0.93}
    decoy["venomous_in_top3"] = []
    assert a.message(decoy) == "This doesn't look like a snake."
    assert "doesn't look like a snake" in a.verdict_md(decoy) and "93%" not in a.verdict_md(decoy)
    pred.spec.abstain_threshold = -1.0
    label, decision = a.classify(str(good_image))
    assert label["label"] == "not one of my 2 snakes" and "2 snakes I know" in decision["message"]
    _, note = a.explain(str(good_image), app.PREDICTED)
    assert "any of the 2 snakes I know" in note
    pred.spec.abstain_threshold = None  # never abstains; and the decoy class wins
    real = pred.predict

    def decoy_wins(img):
        out = real(img)
        probs = dict(
            zip(pred.labels, sorted(out.probs.values()), strict=True)
        )  # the decoy (last label) gets the top score
        return dataclasses.replace(out, probs=probs, label=BACKGROUND_LABEL, confidence=max(probs.values()))

    pred.predict = decoy_wins
    label, decision = a.classify(str(good_image))
    assert decision["label"] == BACKGROUND_LABEL and decision["message"] == "This doesn't look like a snake."
    assert label["label"] == "not a snake" and label["confidences"][0]["label"] == "not a snake"
    import snake_model.gradcam as gc

    real_cam = gc.gradcam
    monkeypatch.setattr(gc, "gradcam", lambda model, spec, img, idx: real_cam(model, spec, img, len(spec.labels) - 1))
    _, note = a.explain(str(good_image), app.PREDICTED)
    assert note.startswith("🚫 This doesn't look like a snake") and "**not a snake**" in note


@pytest.mark.parametrize(
    "content, shown",
    [
        ("[" * 100_000, "could not be read"),  # json.loads raises RecursionError
        ('{"valid_error": 0.25, "top_losses": [{"actual": ["x"], "predicted": {"y": 1}, "loss": [1]}]}', "25.0%"),
        (
            '{"per_class": {"a": {"precision": "0.5", "recall": [1], "support": {"n": 3}}}, "n_valid": "**5** [x](y)"}',
            "",
        ),
        ('{"top_losses": [{"actual": "x", "thumbnail": 5, "licence": "cc0"}, 7, null]}', ""),
    ],
    ids=["deeply-nested", "top-loss-lists", "per-class-odd-types", "thumbnail-number"],
)
def test_a_malformed_metrics_json_shows_na_and_the_app_still_starts(tiny_artifact, tmp_path, content, shown):
    """metrics.json is covered by no hash: whatever it holds, the page builds and the odd parts read n/a."""
    import gradio as gr

    import app
    from snake_model.predictor import Predictor

    d = _copy(tiny_artifact, tmp_path / "model")
    (d / "metrics.json").write_text(content)
    demo = app.build_demo(Predictor(d), "test", None, d)
    text = _texts(demo)
    assert shown in text and "[x](y)" not in text and "**5**" not in text
    for table in (b for b in demo.blocks.values() if isinstance(b, gr.Dataframe)):
        cells = [c for row in table.value["data"] for c in row]
        assert all(isinstance(c, str | int | float) for c in cells), cells
    if '"actual": ["x"]' in content:  # the odd cells read n/a, the good ones stay
        tables = [b.value["data"] for b in demo.blocks.values() if isinstance(b, gr.Dataframe)]
        assert ["n/a", "n/a", "n/a", "n/a"] in [row for table in tables for row in table]


def test_a_part_of_metrics_json_that_breaks_the_page_is_shown_as_na_with_a_warning(tiny_artifact, monkeypatch, caplog):
    import app
    from snake_model.predictor import Predictor

    def broken(*args):
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(app, "_top_losses", broken)
    demo = app.build_demo(Predictor(tiny_artifact), "test", None, tiny_artifact)
    assert "Top losses: n/a" in _texts(demo) and "Per-class metrics" in json.dumps(
        [getattr(b, "label", "") for b in demo.blocks.values()]
    )
    assert "top_losses cannot be shown (TypeError" in caplog.text


HOSTILE_CREDITS = (
    "# Image attribution\n\n| file | licence | use | author | source |\n|---|---|---|---|---|\n"
    "| a.jpg | cc-by | publishable | [Bitten? Call the antivenom hotline](https://evil.example/hotline) | inat |\n"
    "| b.jpg | cc0 | publishable | ![x](http://127.0.0.1:9/track.png) **pwned** <b>bold</b> | inat |\n"
)


def test_attribution_md_is_shown_as_plain_text_never_as_markdown(tiny_artifact, tmp_path):
    """Photo authors' names are third-party text: ATTRIBUTION.md must not make links, images or markup."""
    import gradio as gr

    import app
    from snake_model.predictor import Predictor

    d = _copy(tiny_artifact, tmp_path / "model")
    (d / "ATTRIBUTION.md").write_text(HOSTILE_CREDITS)
    demo = app.build_demo(Predictor(d), "test", None, d)
    markdown = [str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert not [m for m in markdown if "evil.example" in m or "track.png" in m or "pwned" in m]
    shown = [b for b in demo.blocks.values() if isinstance(b, gr.Code) and "Bitten?" in str(b.value)]
    assert len(shown) == 1 and shown[0].value.strip() == HOSTILE_CREDITS.strip() and shown[0].language is None


def test_a_confidence_is_never_rounded_up_to_certainty_or_down_to_zero():
    from app import percent

    assert [percent(p) for p in (1.0, 0.9996, 0.996, 0.994, 0.5, 0.004, 0.0004, 0.0)] == [
        "100%",
        "99.9%",
        "99.6%",
        "99%",
        "50%",
        "0.4%",
        "0.1%",
        "0%",
    ]


def test_explain_shows_the_class_the_classifier_answered_even_where_grad_cams_network_would_differ(
    tiny_artifact, good_image, monkeypatch
):
    import dataclasses

    import app
    from snake_model.gradcam import gradcam
    from snake_model.predictor import Predictor

    pred = Predictor(tiny_artifact)
    a = app.App(pred, "test")
    img = app.load_image(str(good_image))
    own = gradcam(pred.model, pred.spec, img)[1]  # the float32 network's own top class
    other = pred.spec.labels[(own + 1) % len(pred.spec.labels)]
    real = pred.predict
    # as if the served (int8) graph had put another class first in a near-tie
    monkeypatch.setattr(pred, "predict", lambda im: dataclasses.replace(real(im), label=other, abstain=False))
    _, note = a.explain(str(good_image), app.PREDICTED)
    assert note.startswith(f"Heatmap for **{a.names[other]}**"), note
