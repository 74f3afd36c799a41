"""Serving speed: one image from bytes to probabilities, three ways in one run, on the same weights.

python bench/serve_latency.py [--model DIR] [--runs 200] [--warmup 20]

1. fastai `learn.predict(PILImage.create(image_bytes))` on a Learner built as train.recipe_original builds it (same resize,
   size and normalisation as the artifact), over the artifact's strictly loaded weights;
2. the predictor: `Predictor(model).predict_proba([image_bytes])` (load -> preprocess -> ONNX Runtime);
3. the raw forward: `Predictor.forward(x)` on an already-preprocessed array (the fastest runtime we have).

All ways are timed round-robin (one call of each per round, order rotated) so that other load on the
machine, and this VM's drifting CPU speed, hit them alike. Targets (issue 2): predictor <= 0.4x learn.predict and <= 1.3x the raw forward.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REAL_PHOTOS = Path("/work/shared/data/na4")  # read only; never copied into the repo


def pick_image(photos: Path | None) -> tuple[bytes, str]:
    """Bytes of one real photo when a class folder is at hand, else a synthetic 128x96 JPEG."""
    if photos is not None and photos.is_dir():
        files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
        if files:
            f = files[len(files) // 2]
            return f.read_bytes(), f"{f.relative_to(photos)} (real photo)"
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue(), "synthetic 128x96 JPEG"


def fastai_learner(model_dir: Path, tmp: Path):
    """A fastai Learner equivalent to the training run's: make_dls + make_learner over the artifact's model."""
    import torch
    from PIL import Image

    from snake_model.artifact import load_artifact
    from train.data import Dataset
    from train.recipe_original import make_dls, make_learner

    model, spec = load_artifact(model_dir)
    paths, labels = [], []
    for ci in range(len(spec.labels)):  # a few dummy images: DataLoaders need items to exist
        for j in range(2):
            p = tmp / f"c{ci}" / f"{j}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (128, 96), (40 * ci % 255, 90, 30 * j)).save(p)
            paths.append(p)
            labels.append(ci)
    ds = Dataset(tmp, list(spec.labels), paths, labels)
    n = len(paths)
    args = Namespace(
        aug=True,
        aug_mult=1.0,
        size=int(spec.image_size),
        min_scale=float(spec.training.get("min_scale", 0.5)),
        bs=8,
        workers=0,
    )
    train_idx = [i for i in range(n) if i % 2 == 0]
    valid_idx = [i for i in range(n) if i % 2 == 1]
    cpu = torch.device("cpu")
    dls = make_dls(ds, train_idx, valid_idx, args, cpu, spec.mean, spec.std, spec.resize_method)
    return make_learner(dls, model, cpu)


def median_ms(samples: list[float]) -> float:
    return 1000.0 * float(np.median(samples))


def round_robin(fns: dict, runs: int, warmup: int, block: int = 1) -> dict[str, float]:
    """Median milliseconds per function over `runs` timed calls each, interleaved in blocks.

    Every round runs each function for one untimed call then `block` timed calls back to back, the order rotated
    every round. Blocks let each way run warm, as a server answering a stream of requests does (PyTorch's
    OpenMP threads, for one, go to sleep when another runtime ran in between); interleaving the blocks makes
    drift in the VM's CPU speed hit every way alike.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    keys = list(fns)
    times = {k: [] for k in keys}
    for r in range((runs + block - 1) // block):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            if block > 1:
                fns[k]()
            for _ in range(block):
                t = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t)
    return {k: median_ms(v) for k, v in times.items()}


def stage_breakdown(pred, data: bytes, runs: int) -> dict[str, float]:
    """Where the predictor's time goes: decode, resize, normalise, session, softmax (median ms each)."""
    from snake_model.loader import load_image
    from snake_model.predictor import softmax
    from snake_model.preprocess import resize_for_model, to_array

    img = load_image(data)
    small = resize_for_model(img, pred.spec)
    x = to_array(small, pred.spec)[None].astype(np.float32)
    logits = pred.forward(x)[0]
    fns = {
        "decode (load_image bytes)": lambda: load_image(data),
        "resize (resize_for_model)": lambda: resize_for_model(img, pred.spec),
        "normalise (to_array)": lambda: to_array(small, pred.spec),
        "stack + float32": lambda: np.stack([x[0]]).astype(np.float32),
        "session (forward)": lambda: pred.forward(x),
        "softmax": lambda: softmax(logits, pred.spec.temperature),
    }
    return round_robin(fns, runs, max(3, runs // 10))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "model", help="artifact directory (default: bundled model/)")
    p.add_argument("--runs", type=int, default=200, help="timed calls of each way")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls of each way first")
    p.add_argument("--block", type=int, default=10, help="timed calls of one way back to back before the next way")
    p.add_argument("--photos", type=Path, default=REAL_PHOTOS, help="class folders to take one real photo from")
    args = p.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.block < 1:
        p.error("--runs and --block must be at least 1 and --warmup not negative")
    if not (args.model / "config.json").is_file():
        print(
            f"no model at {args.model} (needs config.json + model.safetensors); train one with "
            "`python -m train.fit DATA_DIR --out model` or pass --model DIR. Nothing to time."
        )
        return 0

    import torch

    from snake_model.predictor import Predictor

    data, what = pick_image(args.photos)
    pred = Predictor(args.model)
    x = pred.batch_array([data])
    with tempfile.TemporaryDirectory() as tmp:
        learn = fastai_learner(args.model, Path(tmp))
        from fastai.vision.core import PILImage

        def fastai_predict():
            # fastai's standard serving path: PILImage.create(bytes) then learn.predict
            return learn.predict(PILImage.create(data))

        # All ways in one round robin of blocks: whatever the VM's CPU does during the run (its speed was seen to
        # drift by 2x) hits every way alike, so the ratios hold even when the absolute milliseconds do not.
        fns = {
            "fastai learn.predict(PILImage.create(bytes))": fastai_predict,
            "predictor.predict_proba([bytes])": lambda: pred.predict_proba([data]),
            "raw forward (ONNX session)": lambda: pred.forward(x),
            "predictor.predict (app path, + abstain)": lambda: pred.predict(data),
        }
        t0 = time.time()
        with learn.no_bar():
            fa_probs = fastai_predict()[2].numpy()
            diff = float(np.abs(fa_probs - pred.predict_proba([data], calibrated=False)[0]).max())
            med = round_robin(fns, args.runs, args.warmup, block=args.block)
    fa, pr, raw = (med[k] for k in list(med)[:3])
    print(
        f"model {args.model} ({pred.spec.arch}, {pred.spec.image_size} px, {pred.spec.resize_method}); "
        f"backend {pred.backend}, {pred.threads} ONNX threads; torch threads {torch.get_num_threads()}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other load skews the numbers)"
    )
    print(
        f"image: {what}, {len(data)} bytes; {args.runs} runs after {args.warmup} warm-up, "
        f"{time.time() - t0:.0f} s; |fastai - predictor| max prob diff {diff:.1e}"
    )
    print(f"\n{'way':48s} {'median ms':>10s}")
    for k, v in med.items():
        print(f"{k:48s} {v:10.2f}")
    r1, r2 = pr / fa, pr / raw
    print(f"\npredictor / learn.predict = {r1:.2f}  (target <= 0.4: {'ok' if r1 <= 0.4 else 'MISSED'})")
    print(f"predictor / raw forward   = {r2:.2f}  (target <= 1.3: {'ok' if r2 <= 1.3 else 'MISSED'})")
    print("\npredictor stages (median ms):")
    for k, v in stage_breakdown(pred, data, max(20, args.runs // 2)).items():
        print(f"  {k:30s} {v:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
