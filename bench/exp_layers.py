"""Multi-layer features: pooled activations of the last stages, alone and concatenated (5-fold CV).

python bench/exp_layers.py DATA_DIR ARCH SIZE
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cv_error  # noqa: E402
from snake_model.loader import load_image  # noqa: E402
from snake_model.network import build_network  # noqa: E402
from snake_model.preprocess import preprocess  # noqa: E402
from snake_model.spec import ModelSpec  # noqa: E402
from train.data import list_images  # noqa: E402


@torch.inference_mode()
def layer_features(paths, arch: str, size: int) -> dict[str, np.ndarray]:
    b = build_network(arch, 1, pretrained=True).body.eval()
    spec = ModelSpec(labels=["x"], arch=arch, image_size=size, resize_method="squish")
    out: dict[str, list] = {}
    for s in range(0, len(paths), 32):
        x = torch.from_numpy(np.stack([preprocess(load_image(p), spec) for p in paths[s : s + 32]]))
        n = len(x)
        h = b.bn1(b.conv_stem(torch.cat([x, torch.flip(x, dims=[3])])))
        for i, blk in enumerate(b.blocks):
            h = blk(h)
            if i >= 4:
                for tag, v in (("avg", h.mean((2, 3))), ("max", h.amax((2, 3)))):
                    out.setdefault(f"s{i}_{tag}", []).append(((v[:n] + v[n:]) / 2).numpy())
        h = b.bn2(b.conv_head(h))
        for tag, v in (("avg", h.mean((2, 3))), ("max", h.amax((2, 3)))):
            out.setdefault(f"head_{tag}", []).append(((v[:n] + v[n:]) / 2).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def main() -> int:
    data, arch, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    ds = list_images(data)
    y = np.array(ds.labels)
    t = time.time()
    F = layer_features(ds.paths, arch, size)
    print(f"{data.name} {arch} {size}px layers: {time.time() - t:.0f}s; keys {sorted(F)}", flush=True)
    combos = {
        "head avg": ["head_avg"],
        "s5 avg": ["s5_avg"],
        "s6 avg": ["s6_avg"],
        "s5 max": ["s5_max"],
        "head avg + s5 avg": ["head_avg", "s5_avg"],
        "head avg + s5 max + s6 avg": ["head_avg", "s5_max", "s6_avg"],
        "all avg+max": sorted(F),
    }
    for name, keys in combos.items():
        x = np.hstack([F[k] for k in keys])
        res = "  ".join(f"C={C}: {cv_error(x, y, C):.3f}" for C in (0.003, 0.01, 0.03))
        print(f"  {name:<28} ({x.shape[1]:>5} dims) {res}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
