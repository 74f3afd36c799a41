"""int8 backbones at 320 px, alone and two or three heads' probabilities averaged: could an ensemble fit the budget?

python bench/exp_int8_ensemble.py DATA_DIR [DATA_DIR ...]: for each offline ImageNet backbone (Lite0, Lite1, Lite2), the
default's features at 320 px (centre crop; the photo and its zoomed mirror view averaged inside the network, plus 4
random resized crops per training image, seed 42), computed through ONNX Runtime after static int8 quantization
(`quantize_static`, QDQ, per-channel int8 weights, uint8 activations, ranges calibrated on 64 photos of the set).
One default head (logistic, 5-fold CV, fold seeds 0-2) per backbone; rows with "+" average the heads' out-of-fold
probabilities. Prints error / NLL per seed and their means, and the time of each step per set. Files and features
are cached under /tmp/exp_int8_ensemble.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxruntime.quantization.shape_inference import quant_pre_process

from bench.exp_cv import cached_npz, cv_scores, data_args, labelled_sets
from bench.exp_quantize import export_onnx, quantize, session
from snake_model.loader import load_image
from snake_model.network import build_network
from snake_model.preprocess import preprocess
from snake_model.spec import ModelSpec
from train.recipe_fast import FAST, random_resized_crop

torch.set_num_threads(2)
S = 320
OUT = Path("/tmp/exp_int8_ensemble")
ARCHS = {"lite0": "tf_efficientnet_lite0", "lite1": "tf_efficientnet_lite1", "lite2": "tf_efficientnet_lite2"}


def int8(net, name, cal):
    """net exported to ONNX, pre-processed and quantized to int8 (QDQ); an ONNX Runtime session of the result."""
    OUT.mkdir(parents=True, exist_ok=True)
    fp, pre, q = OUT / f"{name}.onnx", OUT / f"{name}_pre.onnx", OUT / f"{name}_int8.onnx"
    export_onnx(net, fp, S)
    quant_pre_process(str(fp), str(pre))
    quantize(pre, q, cal)
    return session(q)


def feats(ds, dname, short):
    def compute():
        t0 = time.perf_counter()
        spec = ModelSpec(labels=["x"], image_size=S, resize_method="crop")
        imgs = [load_image(p) for p in ds.paths]
        x = np.stack([preprocess(im, spec) for im in imgs])
        rng = np.random.default_rng(42)
        xc = np.stack(
            [
                preprocess(random_resized_crop(im, rng, FAST["aug_scale"]), spec)
                for im in imgs
                for _ in range(FAST["aug_views"])
            ]
        )
        cal = x[np.random.default_rng(0).choice(len(x), 64, replace=False)]
        served = build_network(ARCHS[short], 1, pretrained=True, tta_flip=True, tta_zoom=FAST["tta_zoom"]).eval()
        plain = build_network(ARCHS[short], 1, pretrained=True).eval()
        t1 = time.perf_counter()
        s1 = int8(served, f"{dname}_{short}_served", cal)
        s2 = int8(plain, f"{dname}_{short}_plain", cal)
        t2 = time.perf_counter()
        f = np.concatenate([s1.run(None, {"input": x[i : i + 1]})[1] for i in range(len(x))])
        t3 = time.perf_counter()
        c = np.concatenate([s2.run(None, {"input": xc[i : i + 1]})[1] for i in range(len(xc))]).reshape(
            len(x), FAST["aug_views"], -1
        )
        t4 = time.perf_counter()
        print(
            f"  {dname} {short}: prep {t1 - t0:.0f} s, quantize {t2 - t1:.0f} s, served {t3 - t2:.0f} s ({(t3 - t2) / len(x) * 1000:.1f} ms/photo), crops {t4 - t3:.0f} s",
            flush=True,
        )
        return {"f": f, "c": c}

    return cached_npz(OUT / f"{dname}_{short}.npz", compute)


def cv(z, y, C, seed):
    oof = np.zeros((len(y), int(y.max()) + 1))
    cv_scores(z["f"], y, C, seed=seed, extra=z["c"], oof=oof)
    return oof


def score(p, y):
    return (p.argmax(1) != y).mean(), -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)))


def main() -> int:
    for data, ds, y in labelled_sets(data_args(sys.argv[1:], __doc__)):
        Z = {a: feats(ds, data.name, a) for a in ("lite0", "lite1", "lite2")}
        for C in (0.003, 0.01):
            rows = {}
            for seed in (0, 1, 2):
                P = {a: cv(Z[a], y, C, seed) for a in Z}
                for a in P:
                    rows.setdefault(a, []).append(score(P[a], y))
                for a, b in (("lite0", "lite1"), ("lite0", "lite2"), ("lite1", "lite2")):
                    rows.setdefault(f"{a}+{b}", []).append(score((P[a] + P[b]) / 2, y))
                rows.setdefault("all3", []).append(score((P["lite0"] + P["lite1"] + P["lite2"]) / 3, y))
            for k, v in rows.items():
                print(
                    f"{data.name} C={C} {k:12s}: "
                    + "  ".join(f"{e * 100:.1f}%/{n:.3f}" for e, n in v)
                    + f"  mean {np.mean([e for e, _ in v]) * 100:.1f}% / {np.mean([n for _, n in v]):.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
