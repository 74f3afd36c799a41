"""Gradio Blocks app: Classify, Explain (Grad-CAM) and Model tabs over a safe artifact.

Runs on Hugging Face Spaces and locally (`python app.py` serves on 127.0.0.1:7860; GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT work). The model comes from MODEL_DIR, else MODEL_REPO (at MODEL_REVISION) on the Hub (the pull
must finish within MODEL_PULL_TIMEOUT_S seconds, default 300), else the model bundled in ./model (snake_model.hub.resolve_model_dir). Nothing is unpickled, ever, and start-up
does no network work except that pinned pull.
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import gradio as gr
from gradio.components.label import LabelConfidence, LabelData
from gradio.data_classes import ImageData
from gradio_client.utils import is_file_obj_with_meta
from pydantic import ConfigDict

from snake_model.artifact import ArtifactError, read_json_object
from snake_model.loader import ImageLoadError, load_image
from snake_model.mdtext import md_text

log = logging.getLogger("app")


def _refuse(message: str) -> gr.Error:
    """The error the user sees in the page or the API. Gradio would also print a stack trace for it on the
    server; bad input is not a server fault, and real failures are logged with their trace by the caller."""
    return gr.Error(message, print_exception=False)


MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # launch(max_file_size): gradio refuses bigger uploads with HTTP 413
HEATMAP_TTL_S = 600  # gradio copies a heatmap into its own cache when it is returned
MAX_PIXELS = 40_000_000
QUEUE_SIZE = 64  # requests waiting beyond this get "queue full" instead of eating memory
PREDICT_CONCURRENCY = 2  # two cores: more parallel forwards only add latency
EXPLAIN_CONCURRENCY = 1  # Grad-CAM runs eager PyTorch with autograd: heavier
DELETE_CACHE = (300, 900)  # every 5 min, delete uploads and outputs older than 15 min
MAX_TEXT_BYTES = 200_000  # model card / ATTRIBUTION.md shown at most this long
PUBLISHABLE = {"cc0", "cc-by", "cc-by-sa", "public-domain", "pd", "pdm"}
SAFETY = (
    "⚠️ **Not for snakebite or medical decisions.** This model makes mistakes. If someone is bitten, call "
    "emergency services; never handle a snake because of this app's answer."
)
SAFETY_SHORT = "⚠️ Not for snakebite or medical decisions: a wrong answer can kill."
PREDICTED = "predicted class"
# The decoy class train.fit --background adds (train.data.BACKGROUND_LABEL): "anything else", not a snake species.
BACKGROUND_LABEL = "not_a_snake"


SEND_AN_IMAGE = (
    "send the image file with gradio_client.handle_file(local_path) (over plain HTTP: POST it to "
    '/gradio_api/upload and send {"path": the path that returns, "meta": {"_type": "gradio.FileData"}}), '
    f"or send it inline as a base64 data URL (data:image/jpeg;base64,...) of at most {MAX_UPLOAD_BYTES // 2**20} MB"
)
URL_REFUSED = (
    "Image URLs are not fetched by this app (not even with handle_file(url)): download the image, then "
    + SEND_AN_IMAGE
    + "."
)
BARE_STRING_REFUSED = (
    "The image was sent as a plain string, not as an image file: a string is never opened as a path on this "
    "server, and only a base64 data URL is read as an image; " + SEND_AN_IMAGE + "."
)


def percent(p: float) -> str:
    """A confidence as a whole percentage, never rounded up to a certainty it is not: 0.996 is "99.6%", not "100%"
    (and 0.004 is "0.4%", not "0%"); exactly 1 or 0 stay "100%" and "0%"."""
    if 0.995 <= p < 1:
        return f"{min(p * 100, 99.9):.1f}%"
    if 0 < p < 0.005:
        return f"{max(p * 100, 0.1):.1f}%"
    return f"{p:.0%}"


def not_file_data_refused(kind: str) -> str:
    """The message for an image input that is neither a FileData dict nor a string (kind: 'a number', ...)."""
    return f"The image was sent as {kind}, not as an image file: {SEND_AN_IMAGE}."


NOT_FILE_DATA_DICT_REFUSED = (
    'The image was sent as a dict that is not an image FileData, and the "path" in it is not read: '
    + SEND_AN_IMAGE
    + "."
)
_URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _image_payload(value):
    """The raw API value for an image input, as gradio's ImageData accepts it, or a gr.Error saying what to send.

    gradio has already moved a FileData dict (one with meta {"_type": "gradio.FileData"}) into its cache after
    checking its path lies in the upload folder; anything else arrives here untouched. A bare base64 data: URL
    becomes {"url": ...} (SafeImage.preprocess decodes it under the upload cap, load_image then applies its own
    caps); every other string is refused: it is never fetched (no request to any URL from this server) and never
    opened as a server path. Any other dict is refused too: gradio checks the path only of a dict with that meta,
    and reading an unchecked path would let a client probe for, or classify, any file on the server.
    """
    if value is None or isinstance(value, ImageData):
        return value
    if isinstance(value, str):
        if value[:5].lower() == "data:":
            return {"path": None, "url": "data:" + value[5:]}
        raise _refuse(URL_REFUSED if _URL_SCHEME.match(value) else BARE_STRING_REFUSED)
    if isinstance(value, dict):
        if is_file_obj_with_meta(value):
            return value
        url = value.get("url")
        if value.get("path") is None and isinstance(url, str) and url[:5].lower() == "data:":
            return {"path": None, "url": "data:" + url[5:]}
        raise _refuse(NOT_FILE_DATA_DICT_REFUSED)
    kind = {bool: "a boolean", int: "a number", float: "a number", list: "a list"}.get(type(value), "a JSON value")
    raise _refuse(not_file_data_refused(kind))


class _ImagePayload(ImageData):
    """gradio's ImageData (the same API schema) whose validation turns a value that is not an image into gr.Error.

    gradio validates the raw request value with `data_model.model_validate` before the component's preprocess;
    a bare string fails there with a pydantic error that the client sees only as "The upstream Gradio app has
    raised an exception". gr.Error is a ValueError, which pydantic would swallow inside a validator, so the
    check runs before pydantic's.
    """

    model_config = ConfigDict(title="ImageData")

    @classmethod
    def model_validate(cls, obj, *args, **kwargs):
        return super().model_validate(_image_payload(obj), *args, **kwargs)


class SafeImage(gr.Image):
    """gr.Image that hands the uploaded file's path to our loader instead of decoding it inside gradio.

    gradio's own decoding fails before our function runs, and the client then sees no useful message; here
    every upload reaches load_image, whose errors become gr.Error with a clear text. URLs are refused: gradio
    would download them without a size cap. A value that is not an image FileData (a bare string: a URL, a path,
    junk) is refused with a clear message by _ImagePayload; a base64 data URL is decoded under the upload cap.
    """

    is_template = True  # render with the stock Image frontend
    data_model = _ImagePayload

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        if isinstance(url_or_file_path, str) and _URL_SCHEME.match(url_or_file_path):
            raise _refuse(URL_REFUSED)
        return await super().async_move_resource_to_block_cache(url_or_file_path)

    def preprocess(self, payload):
        if payload is None:
            return None
        url = getattr(payload, "url", None)
        if payload.path is None and isinstance(url, str) and url.startswith("data:"):
            return _data_url_bytes(url)  # gradio would decode it with PIL itself, past load_image's caps
        if payload.path is None:
            try:
                return super().preprocess(payload)
            except Exception as e:  # noqa: BLE001 - base64 webcam data that does not decode
                raise _refuse(f"could not read the image data ({e})") from e
        return str(payload.path)


def _data_url_bytes(url: str) -> bytes:
    """The bytes of a base64 data: URL, refused before decoding when over the upload cap; load_image checks them."""
    import base64
    import binascii

    head, _, data = url.partition(",")
    if ";base64" not in head:
        raise _refuse("could not read the image data: send the image file, or a base64 data URL")
    if len(data) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
        raise _refuse(f"the image is over the {MAX_UPLOAD_BYTES / 1e6:.0f} MB limit; send a smaller image")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _refuse(f"could not read the image data ({e})") from e


class HeadlineLabel(gr.Label):
    """gr.Label that also takes its own dict form, {"label": headline, "confidences": [{"label", "confidence"}]}.

    gradio 6.31's Label.postprocess makes the top class of a {class: confidence} dict the headline, and reads the
    dict form as classes. When the model abstains the headline must say so, not name the top class.
    """

    is_template = True  # render with the stock Label frontend

    def postprocess(self, value):
        if isinstance(value, dict) and isinstance(value.get("confidences"), list):
            ranked = sorted(value["confidences"], key=lambda c: -c["confidence"])[: self.num_top_classes]
            return LabelData(label=value.get("label"), confidences=[LabelConfidence(**c) for c in ranked])
        return super().postprocess(value)


# ---------------------------------------------------------------- model selection


def describe_origin(model_dir: Path, env: Mapping[str, str]) -> str:
    """Where the model came from, in words."""
    if env.get("MODEL_DIR"):
        return f"local directory {model_dir}"
    if env.get("MODEL_REPO"):
        return f"Hub repo {env['MODEL_REPO'].strip()}"
    return "the model bundled with this app"


def model_revision(model_dir: Path | None, env: Mapping[str, str]) -> str:
    """MODEL_REVISION, the Hub commit the snapshot folder is named after, or 'local'."""
    commit = model_dir.name if model_dir and re.fullmatch(r"[0-9a-f]{40}", model_dir.name) else None
    from_hub = bool((env.get("MODEL_REPO") or "").strip()) and not env.get("MODEL_DIR")
    asked = (env.get("MODEL_REVISION") or "").strip() if from_hub else ""  # ignored for a local model
    if asked and commit and asked != commit:
        return f"{asked} (commit {commit})"
    return asked or commit or "local (not from the Hub)"


NO_MODEL_HINT = "Set MODEL_DIR, or MODEL_REPO and MODEL_REVISION, to a valid model and restart the app."


def no_model_refused(error: str | None) -> str:
    """What /predict and /explain answer when the model could not be loaded at start-up."""
    reason = (error or "unknown reason").rstrip(".")
    return (
        f"This app cannot classify: the model could not be loaded ({reason}). The server's log has the details. "
        f"To whoever runs the app: {NO_MODEL_HINT}"
    )


def load_predictor(env: Mapping[str, str] = os.environ):
    """(predictor, origin, error text): the predictor is None and the error says why when it cannot load."""
    from snake_model.hub import resolve_model_dir

    origin = describe_origin(Path(env.get("MODEL_DIR") or "."), env)
    try:
        model_dir = resolve_model_dir(env=env)
        origin = describe_origin(model_dir, env)
        from snake_model.predictor import Predictor

        return Predictor(model_dir), origin, None
    except ArtifactError as e:  # the artifact's own checks, or the Hub pull: the message says it all, no trace
        error = f"Could not load the model from {origin}: {e}"
        log.error("%s. %s", error, NO_MODEL_HINT)
        return None, origin, error
    except (OSError, RuntimeError) as e:  # a damaged file or an unreadable folder: still a page, not a crash
        error = f"Could not load the model from {origin}: {type(e).__name__}: {e}"
        log.exception("%s. %s", error, NO_MODEL_HINT)
        return None, origin, error


def _allowed_roots(model_dir: Path) -> list[Path]:
    """Where the real files of a model folder may lie: the folder itself and, for a Hub cache snapshot
    (models--OWNER--NAME/snapshots/COMMIT, whose files are links into ../../blobs), that repo's blobs folder."""
    root = model_dir.resolve()
    roots = [root]
    repo = root.parent.parent
    if root.parent.name == "snapshots" and repo.name.startswith("models--") and (repo / "blobs").is_dir():
        roots.append((repo / "blobs").resolve())
    return roots


def model_file(model_dir: Path | None, name: str) -> Path | None:
    """model_dir/name when it is a regular file whose real path lies in the model folder (or its Hub blobs), else None.

    A model folder from `git clone` can hold symlinks: one to a server file (a token, /etc/passwd) would be read
    into the page or served to anyone who opens it. Such a link is skipped with a warning; so is a name that is
    absolute or climbs out with "..", and anything that is not a regular file (a FIFO would block the read).
    """
    if model_dir is None or not isinstance(name, str) or not name:
        return None
    path = model_dir / name
    try:
        real = path.resolve()
        if not any(real.is_relative_to(root) for root in _allowed_roots(model_dir)):
            if os.path.lexists(path):
                log.warning("%s leads outside the model folder (to %s): not read, not shown", path, real)
            return None
        return real if real.is_file() else None
    except (OSError, RuntimeError, ValueError) as e:  # a link loop, a name with a NUL byte
        log.warning("%s cannot be checked (%s): not read, not shown", path, type(e).__name__)
        return None


def _read_text(model_dir: Path | None, name: str) -> str:
    """The start of a text file of the model folder (model_file's rules), or "" when there is none."""
    path = model_file(model_dir, name)
    if path is None:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(MAX_TEXT_BYTES)
    except OSError as e:
        log.warning("%s of %s could not be read (%s): not shown", name, model_dir, type(e).__name__)
        return ""


# ---------------------------------------------------------------- handlers


class App:
    """The handlers, bound to one predictor."""

    def __init__(self, predictor, origin: str):
        self.p = predictor
        self.origin = origin
        self.spec = predictor.spec
        self.names = {lab: self.spec.display_name(lab) for lab in self.spec.labels}
        # the snakes it knows: the decoy class is no species (train.card.species counts the same way)
        self.species = [lab for lab in self.spec.labels if lab != BACKGROUND_LABEL]
        self.by_name = {v: k for k, v in self.names.items()}
        self.venomous = {lab for lab, i in self.spec.class_info.items() if isinstance(i, dict) and i.get("venomous")}
        self.heatmaps = Path(tempfile.mkdtemp(prefix="snake-gradcam-"))

    def _load(self, path):
        if path is None:
            raise _refuse("No image given: upload a photo, take one with the webcam or paste one.")
        try:
            return load_image(path, max_pixels=MAX_PIXELS, max_bytes=MAX_UPLOAD_BYTES)
        except ImageLoadError as e:
            msg = str(e).replace(str(Path(path).name) + ": ", "") if isinstance(path, str | Path) else str(e)
            raise _refuse(msg[:1].upper() + msg[1:]) from e

    def classify(self, path):
        """gr.Label's dict form (headline, confidences by display name) and a decision record.

        The headline is the predicted class, or "not one of my N snakes" when the model abstains: the confidences
        are still all there, for reference.
        """
        img = self._load(path)
        try:
            pred = self.p.predict(img)
        except Exception as e:  # noqa: BLE001 - a clear message, never a stack trace or a dead worker
            log.exception("predict failed")
            raise _refuse(f"The model failed on this image ({type(e).__name__}); try another photo.") from e
        ranked = sorted(pred.probs.items(), key=lambda kv: -kv[1])
        decision = {
            "label": None if pred.abstain else pred.label,
            "display_name": None if pred.abstain else self.names[pred.label],
            "confidence": pred.confidence,
            "abstain": pred.abstain,
            "ood_score": pred.ood_score,
            "abstain_threshold": self.spec.abstain_threshold,
            "venomous_in_top3": [lab for lab, _ in ranked[:3] if lab in self.venomous],
            "probs": pred.probs,
        }
        decision["message"] = self.message(decision)
        label = {
            "label": self.not_mine() if pred.abstain else self.names[pred.label],
            "confidences": [{"label": self.names[k], "confidence": v} for k, v in ranked],
        }
        return label, decision

    def not_mine(self) -> str:
        """The Label's headline when the model abstains."""
        return f"not one of my {len(self.species)} snakes"

    def _not_a_snake(self, decision: dict) -> bool:
        """The answer is the decoy class of a model trained with --background."""
        if decision.get("abstain") or BACKGROUND_LABEL not in self.names:
            return False
        if "label" in decision:
            return decision["label"] == BACKGROUND_LABEL
        return decision.get("display_name") == self.names[BACKGROUND_LABEL]

    def message(self, decision: dict) -> str:
        """The verdict in one plain sentence (also returned by the API)."""
        if decision["abstain"]:
            text = f"This doesn't look like any of the {len(self.species)} snakes I know."
        elif self._not_a_snake(decision):
            text = "This doesn't look like a snake."
        else:
            text = f"{decision['display_name']}: {percent(decision['confidence'])} confidence."
        if decision["venomous_in_top3"]:
            names = ", ".join(self.names[v] for v in decision["venomous_in_top3"])
            text += f" Warning: venomous species among the top 3: {names}. Keep your distance."
        return text

    def verdict_md(self, decision: dict | None) -> str:
        if not decision:
            return ""
        if decision["abstain"]:
            text = (
                f"### 🤷 This doesn't look like any of the {len(self.species)} snakes I know.\n"
                "The scores below are shown for reference only."
            )
        elif self._not_a_snake(decision):
            text = "### 🚫 This doesn't look like a snake."
        else:
            text = f"### {md_text(decision['display_name'])}: {percent(decision['confidence'])}"
        if decision["venomous_in_top3"]:
            names = ", ".join(md_text(self.names[v]) for v in decision["venomous_in_top3"])
            text += f"\n\n☠️ **Venomous species among the top 3: {names}.** Keep your distance."
        return text + f"\n\n{SAFETY_SHORT}"

    def ui_classify(self, path):
        """Upload/webcam/paste in the page: classify at once; a cleared image clears the answer."""
        if path is None:
            return None, "", None
        label, decision = self.classify(path)
        return label, self.verdict_md(decision), decision

    def explain(self, path, target: str | None = None):
        """Grad-CAM overlay for the predicted class, or for the chosen class."""
        from snake_model.gradcam import gradcam, overlay

        img = self._load(path)
        decision = None
        if target and target != PREDICTED:
            lab = self.by_name.get(target, target)
            if lab not in self.spec.labels:
                raise _refuse(f"unknown class {target!r}; choose one of: {', '.join(self.names.values())}")
            idx = self.spec.labels.index(lab)
        else:
            # The class /predict shows. Grad-CAM runs the float32 network, the predictor may run the int8 graph: in
            # a near-tie their top classes can differ, and the heatmap must explain the answer the user was given.
            decision = self._prediction(img)
            idx = self.spec.labels.index(decision.label)
        try:
            cam, idx = gradcam(self.p.model, self.spec, img, idx)
            out = overlay(img, self.spec, cam)
        except Exception as e:  # noqa: BLE001 - a clear message, never a stack trace or a dead worker
            log.exception("Grad-CAM failed")
            raise _refuse(f"Grad-CAM failed on this image ({type(e).__name__}); try another photo.") from e
        name = md_text(self.names[self.spec.labels[idx]])
        heatmap = self._heatmap_file(out)
        if target and target != PREDICTED:
            return heatmap, f"Heatmap for **{name}**: warm colours mark the pixels that raised its score."
        if decision is not None and decision.abstain:
            return heatmap, (
                f"🤷 I don't think this is any of the {len(self.species)} snakes I know; this heatmap shows "
                f"what drove the top score (**{name}**) anyway: warm colours mark the pixels that raised it."
            )
        if self.spec.labels[idx] == BACKGROUND_LABEL:
            return heatmap, (
                f"🚫 This doesn't look like a snake; warm colours mark the pixels that raised the **{name}** score."
            )
        return heatmap, f"Heatmap for **{name}**: warm colours mark the pixels that raised its score."

    def _prediction(self, img):
        """The same Prediction /predict makes for this image (label, abstain decision)."""
        try:
            return self.p.predict(img)
        except Exception as e:  # noqa: BLE001 - a clear message, never a stack trace or a dead worker
            log.exception("predict failed")
            raise _refuse(f"The model failed on this image ({type(e).__name__}); try another photo.") from e

    def _heatmap_file(self, img) -> str:
        """The heatmap as a PNG written once, atomically, under its content hash.

        Handing gradio a PIL image makes it rewrite a cache file named by the content hash in place, so two
        identical concurrent requests could serve a half-written file. A finished file is copied, never
        rewritten. Files older than HEATMAP_TTL_S are removed so the folder cannot grow without bound.
        """
        buf = io.BytesIO()
        img.save(buf, "PNG")
        data = buf.getvalue()
        path = self.heatmaps / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
        if path.exists():
            os.utime(path)  # handed out again: keep it past the next pruning
        else:
            fd, tmp = tempfile.mkstemp(dir=self.heatmaps, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        now = time.time()
        for old in self.heatmaps.glob("*.png"):
            try:
                if now - old.stat().st_mtime > HEATMAP_TTL_S:
                    old.unlink()
            except OSError:
                pass  # another request removed it first
        return str(path)

    def ui_explain(self, path, target: str | None = None):
        if path is None:
            return None, ""
        return self.explain(path, target)


# ---------------------------------------------------------------- the Model tab


def card_sections(card: str) -> dict[str, str]:
    """'## Heading' -> section text of a model card, front matter and image lines dropped."""
    if card.startswith("---\n") and "\n---\n" in card[4:]:
        card = card[4:].split("\n---\n", 1)[1]
    card = "\n".join(line for line in card.splitlines() if not line.lstrip().startswith("!["))
    out, head = {}, ""
    for part in re.split(r"^(## .+)$", card, flags=re.M):
        if part.startswith("## "):
            head = part[3:].strip()
        elif head:
            out[head] = part.strip()
    out[""] = card
    return out


def _picture(model_dir: Path | None, name: str):
    """A picture of the model folder (model_file's rules) decoded by the one image loader, or None with a warning.

    The decoded pixels are what gradio serves (it writes them into its own cache), never the file itself: a file
    that is not an image (an HTML page saved as a .png) is skipped instead of shown as a broken picture.
    """
    path = model_file(model_dir, name)
    if path is None:
        return None
    try:
        return load_image(path, max_pixels=MAX_PIXELS, max_bytes=MAX_UPLOAD_BYTES)
    except (ImageLoadError, OSError) as e:
        log.warning("%s of %s is not a picture that can be shown (%s): skipped", name, model_dir, e)
        return None


def licensed_thumbnails(model_dir: Path, top: list[dict]) -> list[tuple[object, str]]:
    """(picture, caption) for top-loss entries that carry a thumbnail file and a licence that allows showing it."""
    out = []
    for t in top:
        lic = str(t.get("licence") or t.get("license") or "").strip().lower().replace(" ", "-")
        thumb = t.get("thumbnail")
        if not isinstance(thumb, str) or re.sub(r"-?\d+(\.\d+)?$", "", lic) not in PUBLISHABLE:
            continue
        picture = _picture(model_dir, thumb)
        if picture is None:
            continue
        who = f" by {t['author']}" if t.get("author") else ""
        out.append(
            (picture, f"{t.get('actual')} → {t.get('predicted')}, loss {_fmt(t.get('loss'), '.2f')}; {lic}{who}")
        )
    return out


def _number(x) -> float:
    """x as a float, or NaN when metrics.json holds something else there (it is not covered by any hash)."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else float("nan")


def _score(x) -> float | str:
    """A per-class precision/recall/F1 to 3 places; "n/a" where it is undefined (null: a class with no validation
    photos) or not a number."""
    x = _number(x)
    return "n/a" if x != x else round(x, 3)


def _fmt(x, spec: str) -> str:
    """A metrics.json number in format spec; "n/a" where it is missing, null or not a number."""
    x = _number(x)
    return "n/a" if x != x else format(x, spec)


def _count(x) -> int | str:
    """A metrics.json count (n_valid, support); "n/a" where it is not a whole number."""
    return x if isinstance(x, int) and not isinstance(x, bool) else "n/a"


def _class_name(app: App, label) -> str:
    """A class of metrics.json by its display name; "n/a" where metrics.json holds something other than a name."""
    return app.names.get(label, label) if isinstance(label, str) else "n/a"


def _shown(part: str, build, fallback: str) -> None:
    """build() the components of one part of the Model tab from metrics.json; when metrics.json's content breaks it,
    log a warning and show fallback instead: metrics.json is not covered by any hash, so it must not stop the app."""
    try:
        build()
    except Exception as e:  # noqa: BLE001 - untrusted display data: any failure is "n/a", never a dead app
        log.warning("metrics.json: %s cannot be shown (%s: %s); showing n/a", part, type(e).__name__, e)
        gr.Markdown(fallback)


def read_metrics(model_dir: Path | None) -> tuple[dict, str | None]:
    """(metrics.json's object, None), or ({}, why it is not shown) when it is missing, unreadable or malformed."""
    path = model_file(model_dir, "metrics.json")
    if path is None:
        return {}, "This artifact carries no metrics.json: no validation numbers to show."
    try:
        metrics = read_json_object(path)
    except Exception as e:  # noqa: BLE001 - "[[[[..." raises RecursionError; not hashed, so never fatal
        log.warning("metrics.json of %s cannot be read (%s); its numbers are shown as n/a", model_dir, type(e).__name__)
        metrics = {}
    if not metrics:
        return {}, "This artifact's metrics.json could not be read: validation numbers n/a."
    return metrics, None


def model_tab(app: App, model_dir: Path | None) -> None:
    metrics, missing = read_metrics(model_dir)
    spec = app.spec
    gr.Markdown(
        f"**Model:** `{spec.arch}`, {spec.image_size} px, resize `{spec.resize_method}`, from {app.origin}.  \n"
        f"**Revision:** `{model_revision(model_dir, os.environ)}` · weights sha256 `{spec.weights_sha256[:16]}…`"
    )
    if missing:
        gr.Markdown(missing)
    else:
        gr.Markdown(
            f"Validation error **{_fmt(metrics.get('valid_error'), '.1%')}** on {_count(metrics.get('n_valid'))} "
            f"images · ECE {_fmt(metrics.get('ece_before'), '.3f')} → {_fmt(metrics.get('ece_after'), '.3f')} "
            f"after temperature scaling (T = {spec.temperature:.2f})"
        )
    with gr.Row():
        for name, title in (
            ("confusion_matrix.png", "Confusion matrix (validation)"),
            ("reliability.png", "Reliability"),
        ):
            picture = _picture(model_dir, name)
            if picture is not None:
                gr.Image(picture, label=title, format="png", interactive=False, buttons=["fullscreen"])
    _shown("per_class", lambda: _per_class(app, metrics.get("per_class")), "Per-class metrics: n/a")
    _shown("top_losses", lambda: _top_losses(app, model_dir, metrics.get("top_losses")), "Top losses: n/a")
    card = _read_text(model_dir, "README.md")
    sections = card_sections(card) if card else {}
    with gr.Accordion("Training config", open=False):
        if sections.get("Training"):
            gr.Markdown(sections["Training"])
        gr.JSON({"training": spec.training, "versions": spec.versions, "class_info": spec.class_info})
    gr.Markdown(
        "### Data sources and licences\n\n"
        + (
            sections.get("Data and licences", "").removeprefix("## Data and licences").strip()
            or "Not recorded in this artifact (no model card with a data section)."
        )
    )
    attribution = _read_text(model_dir, "ATTRIBUTION.md")
    if attribution:
        with gr.Accordion("Photo credits (ATTRIBUTION.md)", open=False):
            # Third-party text (photo authors' names from the photo sites): shown as plain text, never rendered
            # as Markdown, so a name can be no link, image or formatting in this page.
            gr.Code(
                plain_text(attribution),
                language=None,
                label="ATTRIBUTION.md (as plain text)",
                interactive=False,
                wrap_lines=True,
                show_line_numbers=False,
                max_lines=30,
                buttons=["copy"],
                elem_id="attribution",
            )
    if card:
        with gr.Accordion("Model card", open=False):
            gr.Markdown(sections[""])


_MD_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark: a backslash before ASCII punctuation


def plain_text(markdown: str) -> str:
    """Markdown source made easier to read as plain text: backslash escapes and HTML entities (what
    train.manifest writes to show names literally) are undone. The result is for a plain-text view, never to render."""
    return html.unescape(_MD_ESCAPE.sub(r"\1", markdown))


def _per_class(app: App, per_class) -> None:
    rows = [
        [_class_name(app, lab), _score(v["precision"]), _score(v["recall"]), _score(v.get("f1")), _count(v["support"])]
        for lab, v in (per_class.items() if isinstance(per_class, dict) else [])
        if isinstance(v, dict) and {"precision", "recall", "support"} <= set(v)
    ]
    if rows:
        gr.Dataframe(
            rows,
            headers=["class", "precision", "recall", "F1", "support"],
            label="Per-class metrics",
            interactive=False,
        )


def _top_losses(app: App, model_dir: Path | None, top) -> None:
    top = [t for t in top if isinstance(t, dict)] if isinstance(top, list) else []
    if not top:
        return
    thumbs = licensed_thumbnails(model_dir, top) if model_dir else []
    rows = [
        [
            _class_name(app, t.get("actual")),
            _class_name(app, t.get("predicted")),
            _score(t.get("loss")),
            _score(t.get("prob_actual")),
        ]
        for t in top
    ]
    shown = "their licensed thumbnails are shown" if thumbs else "only their labels and losses are shown"
    gr.Markdown(
        f"### Top losses\nValidation images the model got most wrong. Photos are shown only when the artifact "
        f"carries a thumbnail with a licence that allows it; here {shown}."
    )
    if thumbs:
        gr.Gallery(thumbs, label="Top losses (licensed thumbnails)", columns=6, height="auto", interactive=False)
    gr.Dataframe(rows, headers=["actual", "predicted", "loss", "prob. of actual"], interactive=False)


# ---------------------------------------------------------------- the page


def build_demo(predictor=None, origin: str = "", error: str | None = None, model_dir: Path | None = None) -> gr.Blocks:
    """The Blocks: Classify, Explain and Model tabs (or the load error on the page)."""
    # analytics off: no version check or usage ping to gradio's servers; start-up's only network is the model pull
    with gr.Blocks(title="Snake classifier", delete_cache=DELETE_CACHE, analytics_enabled=False) as demo:
        gr.Markdown("# 🐍 Snake classifier")
        gr.Markdown(SAFETY, elem_id="safety")
        if predictor is None:
            gr.Markdown(
                f"## ❌ The model could not be loaded\n\n{error}\n\n{NO_MODEL_HINT}",
                elem_id="load-error",
            )
            _no_model_endpoints(no_model_refused(error))
            demo.queue(default_concurrency_limit=PREDICT_CONCURRENCY, max_size=QUEUE_SIZE)
            return demo
        app = App(predictor, origin)
        model_dir = model_dir or getattr(predictor, "model_dir", None)
        sources = ["upload", "webcam", "clipboard"]
        with gr.Tab("Classify", id="classify"):
            gr.Markdown(
                f"Knows {len(app.species)} species: {', '.join(md_text(app.names[lab]) for lab in app.species)}."
                + (
                    f" Anything else should get “{md_text(app.names[BACKGROUND_LABEL])}”."
                    if BACKGROUND_LABEL in app.names
                    else ""
                )
            )
            with gr.Row():
                inp = SafeImage(sources=sources, type="filepath", label="Photo", elem_id="classify-input")
                with gr.Column():
                    verdict = gr.Markdown(elem_id="verdict")
                    label = HeadlineLabel(
                        num_top_classes=len(app.names), label="Calibrated confidence", elem_id="label"
                    )
                    decision = gr.JSON(label="Decision (also returned by the API)", visible=False)
            btn = gr.Button("Classify", variant="primary", elem_id="classify-button")
            btn.click(
                app.classify,
                inp,
                [label, decision],
                api_name="predict",
                concurrency_limit=PREDICT_CONCURRENCY,
                concurrency_id="predict",
            ).success(app.verdict_md, decision, verdict, api_visibility="private", queue=False)
            inp.change(
                app.ui_classify,
                inp,
                [label, verdict, decision],
                api_visibility="private",
                concurrency_id="predict",
                concurrency_limit=PREDICT_CONCURRENCY,
            )
        with gr.Tab("Explain", id="explain"):
            with gr.Row():
                ex_in = SafeImage(sources=sources, type="filepath", label="Photo", elem_id="explain-input")
                with gr.Column():
                    ex_out = gr.Image(
                        label="Grad-CAM", interactive=False, type="filepath", height=336, elem_id="explain-output"
                    )
                    ex_note = gr.Markdown(elem_id="explain-note")
            target = gr.Dropdown([PREDICTED, *app.names.values()], value=PREDICTED, label="Explain which class")
            gr.Button("Explain", variant="primary", elem_id="explain-button").click(
                app.explain,
                [ex_in, target],
                [ex_out, ex_note],
                api_name="explain",
                concurrency_limit=EXPLAIN_CONCURRENCY,
                concurrency_id="explain",
            )
            for trigger in (ex_in.change, target.change):
                trigger(
                    app.ui_explain,
                    [ex_in, target],
                    [ex_out, ex_note],
                    api_visibility="private",
                    concurrency_id="explain",
                    concurrency_limit=EXPLAIN_CONCURRENCY,
                )
        with gr.Tab("Model", id="model"):
            model_tab(app, model_dir)
    demo.queue(default_concurrency_limit=PREDICT_CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def _no_model_endpoints(message: str) -> None:
    """/predict and /explain with the working app's inputs and outputs (a client's call is the same) that only
    answer `message`: without them gradio_client says "Cannot find a function with api_name: /predict"."""

    # the working App's parameter names (path, target): the API's parameter names come from them
    def classify(path):
        raise _refuse(message)

    def explain(path, target: str | None = None):
        raise _refuse(message)

    with gr.Column(visible=False):
        inp = SafeImage(type="filepath", label="Photo")
        label = HeadlineLabel(label="Calibrated confidence")
        decision = gr.JSON(label="Decision (also returned by the API)")
        target = gr.Dropdown([PREDICTED], value=PREDICTED, allow_custom_value=True, label="Explain which class")
        ex_out = gr.Image(label="Grad-CAM", interactive=False, type="filepath")
        ex_note = gr.Markdown()
        btn = gr.Button("Classify")
        ex_btn = gr.Button("Explain")
    btn.click(classify, inp, [label, decision], api_name="predict")
    ex_btn.click(explain, [inp, target], [ex_out, ex_note], api_name="explain")


def launch(demo: gr.Blocks, **kwargs):
    """demo.launch with this app's limits (tests pass server_name, server_port, prevent_thread_lock)."""
    return demo.launch(max_file_size=MAX_UPLOAD_BYTES, show_error=False, **kwargs)


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    predictor, origin, error = load_predictor()
    model_dir = predictor.model_dir if predictor is not None else None
    launch(build_demo(predictor, origin, error, model_dir))


if __name__ == "__main__":
    main()
