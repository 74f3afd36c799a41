"""The predictor: images in, calibrated probabilities out, with the training run's validation transform."""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .artifact import load_artifact, load_int8_graph, load_ood_bank
from .loader import load_image, normalise_image
from .preprocess import preprocess_batch
from .quant import Int8Net
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


class OnnxNet:
    """The network's (logits, pooled features) through ONNX Runtime, exported in memory (no file, no pickle).

    The graph is exported for exactly one image_size x image_size image. Every shape is then a constant: ONNX
    Runtime folds away the ~300 nodes with which timm's TensorFlow-style "same" convolutions work out their
    padding at run time, fuses each pad into its convolution and runs the whole network in its blocked
    (NCHWc) layout; with a dynamic batch axis none of that happened, and a 288-px forward took 21-22 ms
    instead of 16. A batch runs one image at a time, which on this 2-core CPU was also faster per image than one
    batched call (18 ms against 28-49 ms per 288-px image at batch 16, bench/RESULTS.md section 4).
    """

    def __init__(self, model, image_size: int, threads: int):
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
                opset_version=17,
                dynamo=False,
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # Idle pool threads sleep instead of busy-waiting. On this 2-vCPU VM a spinning pool pushed a 288-px
        # forward from ~21 ms to ~39 ms in one run of four; without spinning it stayed at 21-23 ms, and a
        # server's other threads keep their CPU.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        self.widths = [int(o.shape[1]) for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs = [self.session.run(None, {"input": x[i : i + 1]}) for i in range(len(x))]
        if not outs:
            return tuple(np.zeros((0, w), np.float32) for w in self.widths)  # type: ignore[return-value]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


class Predictor:
    """Loads an artifact directory strictly and classifies batches of images."""

    def __init__(self, model_dir: str | Path, backend: str = "auto", threads: int | None = None):
        self.model_dir = Path(model_dir)
        self.model, self.spec = load_artifact(self.model_dir)
        bank = load_ood_bank(self.model_dir, self.spec)  # float16 on disk; float32 once here, not per call
        self.bank = None if bank is None else bank.astype(np.float32)
        self.labels: list[str] = list(self.spec.labels)
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.backend = "torch"
        self._onnx: OnnxNet | Int8Net | None = None
        # Checked whatever the backend: a changed or foreign int8 graph is an ArtifactError, never a silent fallback.
        graph = load_int8_graph(self.model_dir, self.spec)
        if backend in ("auto", "onnx"):
            try:
                if graph is not None:  # the graph the head was trained on (snake_model.quant)
                    self._onnx = Int8Net(graph, self.model, int(self.spec.image_size), self.threads)
                    self.backend = "onnx-int8"
                else:
                    self._onnx = OnnxNet(self.model, int(self.spec.image_size), self.threads)
                    self.backend = "onnx"
            except Exception as e:  # noqa: BLE001 - ONNX is only a speed-up; torch gives identical answers
                if backend == "onnx":
                    raise
                log.warning("ONNX Runtime unavailable (%s); using PyTorch eager", e)
        elif backend != "torch":
            raise ValueError(f"backend must be 'auto', 'onnx' or 'torch', got {backend!r}")

    def to_image(self, item: ImageInput) -> Image.Image:
        """Any accepted input -> RGB image through the one loader."""
        if isinstance(item, Image.Image):  # treated as the loader treats a file: EXIF turn, alpha on white
            return normalise_image(item)
        return load_image(item)

    def batch_array(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Preprocess a batch into one float32 NCHW array."""
        return preprocess_batch(images, self.spec, self.to_image)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw forward pass: preprocessed array -> (logits, pooled backbone features)."""
        if self._onnx is not None:
            return self._onnx(x)
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

        if score is None and self.spec.abstain_score == "knn":
            raise ValueError("this model abstains by kNN distance of its features: use predict or predict_batch")
        probs = np.asarray(probs, dtype=np.float64)
        finite = bool(np.isfinite(probs).all())
        score = ood_score(probs) if score is None else float(score)
        if not finite or not math.isfinite(score):
            # NaN or infinite logits (NaN weights, an fp16 overflow) or features: no answer to give. Abstain, and show
            # no number that reads as a confidence: non-finite probabilities become 0, the confidence 0 and a
            # non-finite OOD score +inf ("as unusual as it gets"). artifact loading refuses non-finite weights; this
            # is the backstop for whatever still gets through.
            log.warning(
                "the model gave non-finite %s for an image (model %s): abstaining",
                "probabilities" if not finite else "OOD score",
                getattr(self, "model_dir", "?"),
            )
            probs = np.where(np.isfinite(probs), probs, 0.0)
            i = int(np.argmax(probs))
            return Prediction(
                probs={lab: float(p) for lab, p in zip(self.labels, probs, strict=True)},
                label=self.labels[i],
                confidence=float(probs[i]) if finite else 0.0,
                abstain=True,
                ood_score=score if math.isfinite(score) else float("inf"),
            )
        i = int(np.argmax(probs))
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
