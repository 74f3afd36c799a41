"""The predictor: images in, calibrated probabilities out, with the training run's validation transform."""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .artifact import load_artifact, load_ood_bank
from .loader import load_image
from .preprocess import preprocess
from .spec import ModelSpec

log = logging.getLogger(__name__)

ImageInput = Image.Image | bytes | str | Path


@dataclass
class Prediction:
    """One image's answer: probabilities per label, the top label and the abstain decision."""

    probs: dict[str, float]
    label: str
    confidence: float
    abstain: bool
    ood_score: float


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax over the last axis, with temperature scaling."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _with_features(model):
    """A module whose forward returns logits and average-pooled body features (for the OOD score)."""
    import torch

    class WithFeatures(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.logits_and_features(x)

    return WithFeatures(model)


def onnx_session(model, image_size: int, threads: int):
    """An ONNX Runtime session computing (logits, pooled features) of model, exported in memory."""
    import onnxruntime as ort
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _with_features(model).eval(),
            (torch.zeros(1, 3, image_size, image_size),),
            buf,
            input_names=["input"],
            output_names=["logits", "features"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


class Predictor:
    """Loads an artifact directory strictly and classifies batches of images."""

    def __init__(self, model_dir: str | Path, backend: str = "auto", threads: int | None = None):
        self.model_dir = Path(model_dir)
        self.model, self.spec = load_artifact(self.model_dir)
        self.bank = load_ood_bank(self.model_dir, self.spec)
        self.labels: list[str] = list(self.spec.labels)
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.backend = "torch"
        self._session = None
        if backend in ("auto", "onnx"):
            try:
                self._session = self._onnx_session()
                self.backend = "onnx"
            except Exception as e:  # noqa: BLE001 - ONNX is only a speed-up; torch gives identical answers
                if backend == "onnx":
                    raise
                log.warning("ONNX Runtime unavailable (%s); using PyTorch eager", e)
        elif backend != "torch":
            raise ValueError(f"backend must be 'auto', 'onnx' or 'torch', got {backend!r}")

    def _onnx_session(self):
        """Export the strictly loaded torch weights to ONNX in memory (no file, no pickle) and open it."""
        return onnx_session(self.model, int(self.spec.image_size), self.threads)

    def to_image(self, item: ImageInput) -> Image.Image:
        """Any accepted input -> RGB image through the one loader."""
        if isinstance(item, Image.Image):
            return item if item.mode == "RGB" else item.convert("RGB")
        return load_image(item)

    def batch_array(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Preprocess a batch into one float32 NCHW array (written in place, no extra copies)."""
        size = int(self.spec.image_size)
        x = np.empty((len(images), 3, size, size), np.float32)
        for i, im in enumerate(images):
            preprocess(self.to_image(im), self.spec, out=x[i])
        return x

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw forward pass: preprocessed array -> (logits, pooled backbone features)."""
        if self._session is not None:
            logits, feats = self._session.run(None, {"input": x})
            return logits, feats
        import torch

        with torch.inference_mode():
            logits, feats = self.model.logits_and_features(torch.from_numpy(x))
            return logits.numpy(), feats.numpy()

    def logits(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Logits for a batch of images, shape (N, n_labels)."""
        if len(images) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.forward(self.batch_array(images))[0]

    def predict_proba(self, images: Sequence[ImageInput], calibrated: bool = True) -> np.ndarray:
        """Probabilities for a batch, shape (N, n_labels); calibrated uses the stored temperature."""
        t = self.spec.temperature if calibrated else 1.0
        return softmax(self.logits(images), t)

    def scores(self, probs: np.ndarray, feats: np.ndarray | None) -> np.ndarray:
        """OOD scores for a batch: kNN distance when the artifact has a feature bank, else max-softmax."""
        from .ood import knn_scores, softmax_scores

        if self.bank is not None and feats is not None:
            return knn_scores(feats, self.bank, int(self.spec.ood.get("k", 5)))
        return softmax_scores(probs)

    def predict_with_uncalibrated(self, images: Sequence[ImageInput]) -> tuple[np.ndarray, list[Prediction]]:
        """Uncalibrated probabilities (N, n_labels) and the Predictions of a batch, from one forward pass."""
        if len(images) == 0:
            return np.zeros((0, len(self.labels))), []
        logits, feats = self.forward(self.batch_array(images))
        probs = softmax(logits, self.spec.temperature)
        preds = [self.decide(p, s) for p, s in zip(probs, self.scores(probs, feats), strict=True)]
        return softmax(logits), preds

    def predict_batch(self, images: Sequence[ImageInput]) -> list[Prediction]:
        """Classify a batch: probabilities, top label and abstain decision for each image."""
        return self.predict_with_uncalibrated(images)[1]

    def decide(self, probs: np.ndarray, score: float | None = None) -> Prediction:
        """Turn one probability row (and its OOD score, max-softmax when omitted) into a Prediction."""
        from .ood import abstains, ood_score

        i = int(np.argmax(probs))
        score = ood_score(probs) if score is None else float(score)
        return Prediction(
            probs={lab: float(p) for lab, p in zip(self.labels, probs, strict=True)},
            label=self.labels[i],
            confidence=float(probs[i]),
            abstain=abstains(score, self.spec.abstain_threshold),
            ood_score=score,
        )

    def predict(self, image: ImageInput) -> Prediction:
        """Classify one image."""
        return self.predict_batch([image])[0]

    @property
    def info(self) -> ModelSpec:
        return self.spec
