"""int8 backbone features through ONNX Runtime: the graph the fast recipe trains on is the graph the app serves.

Static int8 quantization (ONNX Runtime's `quantize_static`, QDQ format, per-channel int8 weights, uint8 activations,
ranges calibrated on a few dozen training photos) runs the EfficientNet-Lite bodies about 1.4-2x faster on a CPU with
VNNI, with features 0.99 cosine to float32 and the same cross-validated error (bench/RESULTS.md 1m). The graph holds
the body and its average pooling only, for one plain view: the second TTA view and the linear head are applied
outside it, exactly as SnakeNet does (the head is linear, so averaging the two views' pooled features and then
applying it equals averaging their logits). The model folder keeps the float32 weights (model.safetensors) next to
this graph: PyTorch, Grad-CAM and fastai use those, and answer within quantization noise of the int8 graph.

An ONNX file is a protobuf of tensors and operator names, not code; `check_graph` still refuses anything but the
standard operator set and tensors stored outside the file, before ONNX Runtime sees it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

INT8_FILE = "features.int8.onnx"
CALIBRATION_PHOTOS = 64


class GraphError(ValueError):
    """The int8 graph is not one this project writes: a foreign operator, external data, unreadable bytes."""


def _pooled(body):
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, b):
            super().__init__()
            self.b = b

        def forward(self, x):
            return self.b(x).mean(dim=(2, 3))

    return Pooled(body).eval()


def export_body(body, image_size: int) -> bytes:
    """The body + average pooling as a float32 ONNX graph for exactly one image_size x image_size image."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _pooled(body),
            (torch.zeros(1, 3, image_size, image_size),),
            buf,
            input_names=["input"],
            output_names=["features"],
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def calibration_reader(photos: np.ndarray):
    """An ONNX Runtime CalibrationDataReader that feeds photos (N, 3, S, S) to the graph's "input" one at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    photos = np.ascontiguousarray(photos, dtype=np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            self.i += 1
            return {"input": photos[self.i - 1 : self.i]} if self.i <= len(photos) else None

    return Reader()


def quantize_body(body, image_size: int, photos: np.ndarray) -> bytes:
    """The body's int8 graph, its activation ranges calibrated on photos (N, 3, S, S), one photo at a time."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(photos) == 0:
        raise ValueError("int8 calibration needs at least one photo")

    was = logging.root.manager.disable
    logging.disable(max(was, logging.INFO))  # ONNX Runtime logs "Increased scale[...]" per channel on the root logger
    with contextlib.ExitStack() as stack:
        stack.callback(logging.disable, was)
        d = stack.enter_context(tempfile.TemporaryDirectory(prefix="snake-int8-"))
        fp, pre, q = Path(d) / "fp32.onnx", Path(d) / "pre.onnx", Path(d) / "int8.onnx"
        fp.write_bytes(export_body(body, image_size))
        # Shape inference + graph optimisation, what quantize_static expects. Every shape is fixed, so ONNX's own
        # shape inference suffices; ONNX Runtime's symbolic one gives up on the joined graph of a MultiBody.
        quant_pre_process(str(fp), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(q),
            calibration_reader(photos),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        graph = q.read_bytes()
    check_graph(graph)
    return graph


def check_graph(graph: bytes) -> None:
    """Raise GraphError unless graph is a self-contained ONNX model of standard operators with one 4-D float input
    and one 2-D output."""
    import onnx

    try:
        m = onnx.load_from_string(graph)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise GraphError(f"not a readable ONNX model: {type(e).__name__}: {e}") from e
    if m.functions or any(n.domain not in ("", "ai.onnx") for n in m.graph.node):
        bad = sorted({n.domain for n in m.graph.node if n.domain not in ("", "ai.onnx")}) or ["local functions"]
        raise GraphError(f"the graph uses operators outside the standard ONNX set ({', '.join(bad)})")
    external = onnx.TensorProto.EXTERNAL
    if any(t.data_location == external for t in m.graph.initializer) or any(
        a.t.data_location == external for n in m.graph.node for a in n.attribute if a.HasField("t")
    ):
        raise GraphError("the graph keeps tensors in external files; it must hold all its weights itself")
    if len(m.graph.input) != 1 or len(m.graph.output) != 1:
        raise GraphError(f"the graph must have one input and one output, has {len(m.graph.input)} and "
                         f"{len(m.graph.output)}")  # fmt: skip


class Int8Body:
    """Pooled features of one plain view per image through the int8 graph (ONNX Runtime, one image per run)."""

    def __init__(self, graph: bytes, threads: int):
        import onnxruntime as ort

        check_graph(graph)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see predictor.OnnxNet
        self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.image_size = int(inp.shape[2]) if isinstance(inp.shape[2], int) else None
        self.width = int(self.session.get_outputs()[0].shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, width) pooled features."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, self.width), np.float32)
        return np.concatenate([self.session.run(None, {self.input_name: x[i : i + 1]})[0] for i in range(len(x))])


class Int8Net:
    """(logits, pooled features) as SnakeNet.logits_and_features gives them, with the body run by the int8 graph.

    With tta_flip the two views' pooled features are averaged before the linear head, as the network does."""

    def __init__(self, graph: bytes, model, image_size: int, threads: int):
        from .network import LinearHead

        if not isinstance(model.head, LinearHead):
            raise GraphError("an int8 graph serves networks with a linear head only")
        self.body = Int8Body(graph, threads)
        if self.body.image_size != int(image_size):
            raise GraphError(
                f"the int8 graph takes {self.body.image_size} px images but config.json's image_size is {image_size}"
            )
        if self.body.width != int(model.body.num_features):
            raise GraphError(
                f"the int8 graph gives {self.body.width} features but the network's head takes "
                f"{int(model.body.num_features)}; the graph and the weights do not belong together"
            )
        self.model = model
        self.w = model.head.fc.weight.detach().cpu().numpy().astype(np.float32).T.copy()
        self.b = model.head.fc.bias.detach().cpu().numpy().astype(np.float32)

    def features(self, x: np.ndarray) -> np.ndarray:
        """Pooled features of the served view(s): the plain view, averaged with the second view under tta_flip."""
        f = self.body(x)
        if self.model.tta_flip and len(x):
            import torch

            with torch.inference_mode():
                second = self.model.second_view(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
            f = (f + self.body(second)) / 2
        return f

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = self.features(x)
        return f @ self.w + self.b, f
