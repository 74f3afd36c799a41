"""Would int8 ONNX Runtime make room for more network? Speed and CV error of Lite0 quantized to int8.

python bench/exp_quantize.py DATA_DIR [DATA_DIR ...]: the default's served network (Lite0 at 320 px, centre crop, the
photo and its zoomed mirror view averaged) exported to ONNX once as float32 and once quantized by ONNX Runtime's
static int8 quantization (`quantize_static`, per-channel int8 weights, uint8 activations, ranges calibrated on 64
photos of the set) in QDQ and in QOperator format. Per set and format: the median time of one photo's forward
(2 threads, no spinning, as the predictor runs it), the mean cosine similarity of the pooled features to float32's,
and the default head's 5-fold CV error / NLL on the served features alone (no training crops; fold seed 0). Files go
to /tmp/exp_quantize.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cv_scores, data_args, labelled_sets  # noqa: E402

OUT = Path("/tmp/exp_quantize")
SIZE = 320
CAL = 64


def export_onnx(net, path: Path, size: int) -> None:
    """net's (logits, pooled features) as an ONNX graph for one size x size image, as the predictor exports it."""
    import torch

    from snake_model.predictor import _with_features

    torch.onnx.export(
        _with_features(net).eval(),
        (torch.zeros(1, 3, size, size),),
        str(path),
        input_names=["input"],
        output_names=["logits", "features"],
        opset_version=17,
        dynamo=False,
    )


def session(path: Path):
    """An ONNX Runtime session set up as the predictor sets its own up (2 threads, no spinning)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = 2, 1, 3
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def quantize(pre: Path, out: Path, photos: np.ndarray, fmt=None) -> None:
    """Static int8 quantization of the pre-processed graph `pre` (per-channel int8 weights, uint8 activations), its
    ranges calibrated on `photos` (N, 3, H, W) one at a time; fmt a QuantFormat (default QDQ)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from snake_model.quant import calibration_reader

    quantize_static(
        str(pre), str(out), calibration_reader(photos), quant_format=fmt or QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip


def main() -> int:
    sets = list(labelled_sets(data_args(sys.argv[1:], __doc__)))
    if not sets:
        return 0
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from snake_model.loader import load_image
    from snake_model.network import build_network
    from snake_model.preprocess import preprocess
    from snake_model.spec import ModelSpec
    from train.recipe_fast import FAST

    OUT.mkdir(parents=True, exist_ok=True)
    fp32, pre = OUT / "fp32.onnx", OUT / "fp32_pre.onnx"
    net = build_network("tf_efficientnet_lite0", 1, pretrained=True, tta_flip=True, tta_zoom=FAST["tta_zoom"])
    export_onnx(net.eval(), fp32, SIZE)
    quant_pre_process(str(fp32), str(pre))
    spec = ModelSpec(labels=["x"], image_size=SIZE, resize_method="crop", tta_flip=True, tta_zoom=FAST["tta_zoom"])
    for data, ds, y in sets:
        x = np.stack([preprocess(load_image(p), spec) for p in ds.paths])
        cal = x[np.random.default_rng(0).choice(len(x), min(CAL, len(x)), replace=False)]

        feats = {}
        for name, fmt in (("float32", None), ("int8 QDQ", QuantFormat.QDQ), ("int8 QOperator", QuantFormat.QOperator)):
            path, q_secs = fp32, 0.0
            if fmt is not None:
                path = OUT / f"{data.name}_{fmt.name}.onnx"
                t = time.perf_counter()
                quantize(pre, path, cal, fmt)
                q_secs = time.perf_counter() - t
            s = session(path)
            for i in range(5):
                s.run(None, {"input": x[i : i + 1]})
            times = []
            for i in range(min(40, len(x))):
                t = time.perf_counter()
                s.run(None, {"input": x[i : i + 1]})
                times.append(time.perf_counter() - t)
            f = np.concatenate([s.run(None, {"input": x[i : i + 1]})[1] for i in range(len(x))])
            feats[name] = f
            ref = feats["float32"]
            cos = np.mean(np.sum(f * ref, 1) / np.linalg.norm(f, axis=1) / np.linalg.norm(ref, axis=1))
            cv = "  ".join(f"C={C:g}: {e:.1%} / {n:.3f}" for C in (0.003, 0.01) for e, n in [cv_scores(f, y, C)])
            made = f", quantized in {q_secs:.0f} s" if fmt is not None else ""
            print(
                f"{data.name:5s} {name:15s} {np.median(times) * 1000:5.1f} ms/photo{made}, cosine to float32 {cos:.4f}"
                f"  CV {cv}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
