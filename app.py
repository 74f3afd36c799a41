"""Gradio Blocks app: Classify, Explain (Grad-CAM) and Model tabs over a safe artifact.

Runs on Hugging Face Spaces and locally (`python app.py` serves on 127.0.0.1:7860; GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT work). The model comes from MODEL_DIR, else MODEL_REPO (+ MODEL_REVISION) on the Hub,
else the model bundled in ./model. Nothing is unpickled, ever.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import gradio as gr

from snake_model.loader import ImageLoadError, load_image

log = logging.getLogger("app")

HERE = Path(__file__).resolve().parent
BUNDLED = HERE / "model"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
SAFETY = (
    "⚠️ **Not for snakebite or medical decisions.** This model makes mistakes. If someone is bitten, call "
    "emergency services; never handle a snake because of this app's answer."
)


class SafeImage(gr.Image):
    """gr.Image that hands the uploaded file's path to our loader instead of decoding it inside gradio.

    gradio's own decoding fails before our function runs, and the client then sees no useful message; here
    every upload reaches load_image, whose errors become gr.Error with a clear text.
    """

    is_template = True  # render with the stock Image frontend

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.path is None:
            try:
                return super().preprocess(payload)
            except Exception as e:  # noqa: BLE001 - base64 webcam data that does not decode
                raise gr.Error(f"could not read the image data ({e})") from e
        return str(payload.path)


def resolve_model_dir() -> tuple[Path | None, str, str | None]:
    """(model dir, human description of its origin, error message) from MODEL_DIR / MODEL_REPO / bundled."""
    if os.environ.get("MODEL_DIR"):
        return Path(os.environ["MODEL_DIR"]), f"local directory {os.environ['MODEL_DIR']}", None
    repo = os.environ.get("MODEL_REPO")
    if repo:
        rev = os.environ.get("MODEL_REVISION") or None
        try:
            from snake_model.hub import pull_model

            return Path(pull_model(repo, revision=rev)), f"Hub repo {repo} @ {rev or 'main'}", None
        except Exception as e:  # noqa: BLE001 - shown on the page instead of a crash
            return None, f"Hub repo {repo}", f"Could not load model {repo}@{rev or 'main'}: {e}"
    return BUNDLED, "the model bundled with this app", None


def load_predictor():
    """The predictor, its origin, and an error text (predictor None) when it cannot be loaded."""
    model_dir, origin, err = resolve_model_dir()
    if err:
        return None, origin, err
    try:
        from snake_model.predictor import Predictor

        return Predictor(model_dir), origin, None
    except Exception as e:  # noqa: BLE001 - shown on the page instead of a crash
        return None, origin, f"Could not load the model from {origin}: {e}"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


class App:
    """The handlers, bound to one predictor."""

    def __init__(self, predictor, origin: str):
        self.p = predictor
        self.origin = origin
        self.spec = predictor.spec
        self.names = {lab: self.spec.display_name(lab) for lab in self.spec.labels}
        self.venomous = {lab for lab, i in self.spec.class_info.items() if i.get("venomous")}

    def _load(self, path):
        if path is None:
            raise gr.Error("No image given: upload a photo, take one with the webcam or paste one.")
        try:
            return load_image(path, max_pixels=MAX_PIXELS, max_bytes=MAX_UPLOAD_BYTES)
        except ImageLoadError as e:
            raise gr.Error(str(e).replace(str(Path(path).name) + ": ", "")) from e

    def classify(self, path):
        """Label dict (display name -> calibrated confidence) and a decision record."""
        img = self._load(path)
        pred = self.p.predict(img)
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
        return {self.names[k]: v for k, v in pred.probs.items()}, decision

    def verdict_md(self, decision: dict) -> str:
        n = len(self.spec.labels)
        if decision["abstain"]:
            text = f"### 🤷 This doesn't look like any of the {n} snakes I know.\nThe scores below are shown for reference only."
        else:
            text = f"### {decision['display_name']}: {decision['confidence']:.0%}"
        if decision["venomous_in_top3"]:
            names = ", ".join(self.names[v] for v in decision["venomous_in_top3"])
            text += f"\n\n☠️ **Venomous species among the top 3: {names}.** Keep your distance."
        return text

    def ui_classify(self, path):
        label, decision = self.classify(path)
        return label, self.verdict_md(decision), decision

    def explain(self, path, target: str | None = None):
        """Grad-CAM overlay for the predicted class, or for the chosen class."""
        from snake_model.gradcam import gradcam, overlay

        img = self._load(path)
        by_name = {v: k for k, v in self.names.items()}
        idx = None
        if target and target != "predicted class":
            lab = by_name.get(target, target)
            if lab not in self.spec.labels:
                raise gr.Error(f"unknown class {target!r}; choose one of: {', '.join(self.names.values())}")
            idx = self.spec.labels.index(lab)
        cam, idx = gradcam(self.p.model, self.spec, img, idx)
        return overlay(
            img, self.spec, cam
        ), f"Heatmap for **{self.names[self.spec.labels[idx]]}**: warm colours mark the pixels that raised its score."


def model_tab(app: App, model_dir: Path | None) -> None:
    metrics = _read_json(model_dir / "metrics.json") if model_dir else {}
    spec = app.spec
    gr.Markdown(
        f"**Model:** `{spec.arch}`, {spec.image_size} px, resize `{spec.resize_method}`, from {app.origin}. "
        f"Weights sha256 `{spec.weights_sha256[:16]}…`"
        + (f" · revision `{os.environ.get('MODEL_REVISION')}`" if os.environ.get("MODEL_REVISION") else "")
    )
    if metrics:
        gr.Markdown(
            f"Validation error **{metrics.get('valid_error', float('nan')):.1%}** on {metrics.get('n_valid', '?')} "
            f"images · ECE {metrics.get('ece_before', float('nan')):.3f} → {metrics.get('ece_after', float('nan')):.3f} "
            f"after temperature scaling (T = {spec.temperature:.2f})"
        )
    cm = model_dir / "confusion_matrix.png" if model_dir else None
    with gr.Row():
        if cm and cm.is_file():
            gr.Image(str(cm), label="Confusion matrix (validation)", interactive=False, buttons=[])
        rel = model_dir / "reliability.png" if model_dir else None
        if rel and rel.is_file():
            gr.Image(str(rel), label="Reliability diagram", interactive=False, buttons=[])
    rows = [
        [
            app.names.get(lab, lab),
            round(v["precision"], 3),
            round(v["recall"], 3),
            round(v.get("f1", 0.0), 3),
            v["support"],
        ]
        for lab, v in metrics.get("per_class", {}).items()
    ]
    if rows:
        gr.Dataframe(
            rows,
            headers=["class", "precision", "recall", "F1", "support"],
            label="Per-class metrics",
            interactive=False,
        )
    top = metrics.get("top_losses", [])
    if top:
        gr.Markdown(
            "**Top losses** (validation images the model got most wrong; the photos' licences are unknown, "
            "so only their labels and losses are shown)"
        )
        gr.Dataframe(
            [
                [
                    app.names.get(t["actual"], t["actual"]),
                    app.names.get(t["predicted"], t["predicted"]),
                    round(t["loss"], 3),
                    round(t["prob_actual"], 3),
                ]
                for t in top
            ],
            headers=["actual", "predicted", "loss", "prob. of actual"],
            interactive=False,
        )
    gr.JSON(
        {"training": spec.training, "versions": spec.versions, "class_info": spec.class_info}, label="Training config"
    )
    card = model_dir / "README.md" if model_dir else None
    if card and card.is_file():
        with gr.Accordion("Model card (data sources and licences)", open=False):
            gr.Markdown(card.read_text(encoding="utf-8").split("\n---\n", 1)[-1])


def build_demo(predictor=None, origin: str = "", error: str | None = None, model_dir: Path | None = None) -> gr.Blocks:
    """The Blocks: Classify, Explain and Model tabs (or the load error on the page)."""
    with gr.Blocks(title="Snake classifier") as demo:
        gr.Markdown("# 🐍 Snake classifier")
        gr.Markdown(SAFETY)
        if predictor is None:
            gr.Markdown(
                f"## ❌ The model could not be loaded\n\n{error}\n\nSet MODEL_DIR, or MODEL_REPO and "
                "MODEL_REVISION, to a valid model and restart."
            )
            return demo
        app = App(predictor, origin)
        names = ", ".join(app.names.values())
        with gr.Tab("Classify"):
            gr.Markdown(f"Knows {len(app.names)} species: {names}.")
            with gr.Row():
                inp = SafeImage(sources=["upload", "webcam", "clipboard"], type="filepath", label="Photo")
                with gr.Column():
                    verdict = gr.Markdown()
                    label = gr.Label(num_top_classes=len(app.names), label="Calibrated confidence")
                    decision = gr.JSON(label="Decision (also returned by the API)", visible=False)
            btn = gr.Button("Classify", variant="primary")
            btn.click(app.classify, inp, [label, decision], api_name="predict").then(
                app.verdict_md, decision, verdict, api_visibility="private"
            )
        with gr.Tab("Explain"):
            with gr.Row():
                ex_in = SafeImage(sources=["upload", "webcam", "clipboard"], type="filepath", label="Photo")
                with gr.Column():
                    ex_out = gr.Image(label="Grad-CAM", interactive=False, type="pil")
                    ex_note = gr.Markdown()
            target = gr.Dropdown(
                ["predicted class", *app.names.values()], value="predicted class", label="Explain which class"
            )
            gr.Button("Explain", variant="primary").click(
                app.explain, [ex_in, target], [ex_out, ex_note], api_name="explain"
            )
        with gr.Tab("Model"):
            model_tab(app, model_dir)
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    predictor, origin, error = load_predictor()
    model_dir = predictor.model_dir if predictor is not None else None
    demo = build_demo(predictor, origin, error, model_dir)
    demo.queue(default_concurrency_limit=4, max_size=64)
    demo.launch(max_file_size=MAX_UPLOAD_BYTES, show_error=True)


if __name__ == "__main__":
    main()
