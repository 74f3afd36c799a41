"""Pooling experiments on frozen final feature maps: avg, max, avg+max, GeM, with flip averaging.

python bench/exp_pool.py DATA_DIR [SIZE] [ARCH] : same stratified 80/20 split (seed 42) as train.fit's default.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import data_args, labelled_sets, parse_arg  # noqa: E402
from snake_model.loader import load_image  # noqa: E402
from snake_model.network import build_network  # noqa: E402
from snake_model.preprocess import preprocess  # noqa: E402
from snake_model.spec import ModelSpec  # noqa: E402
from train.data import random_split  # noqa: E402


@torch.inference_mode()
def pooled(paths, arch, size):
    net = build_network(arch, 1, pretrained=True).body.eval()
    spec = ModelSpec(labels=["x"], arch=arch, image_size=size, resize_method="squish")
    out = {k: [] for k in ("avg", "max", "gem")}
    for s in range(0, len(paths), 32):
        x = torch.from_numpy(np.stack([preprocess(load_image(p), spec) for p in paths[s : s + 32]]))
        for xx, tag in ((x, ""), (torch.flip(x, dims=[3]), "f")):
            f = net(xx)
            out.setdefault("avg" + tag, []).append(f.mean((2, 3)).numpy())
            out.setdefault("max" + tag, []).append(f.amax((2, 3)).numpy())
            out.setdefault("gem" + tag, []).append(f.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3).numpy())
    return {k: np.concatenate(v) for k, v in out.items() if v}


def main() -> int:
    args = data_args(sys.argv[1:], __doc__, most=3)
    size = parse_arg(__doc__, "SIZE", args[1], int, lambda v: v > 0, "a positive number of pixels") if args[1:] else 224
    arch = args[2] if len(args) > 2 else "tf_efficientnet_lite0"
    sets = list(labelled_sets(args[:1]))
    if not sets:
        return 0
    data, ds, y = sets[0]
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr, va = random_split(ds, 0.2, 42)
    t = time.time()
    P = pooled(ds.paths, arch, size)
    print(f"{arch} {size}px features+flip: {time.time() - t:.0f}s", flush=True)
    variants = {
        "avg": P["avg"],
        "avg+flip": (P["avg"] + P["avgf"]) / 2,
        "max+flip": (P["max"] + P["maxf"]) / 2,
        "gem+flip": (P["gem"] + P["gemf"]) / 2,
        "avg|max+flip": np.hstack([(P["avg"] + P["avgf"]) / 2, (P["max"] + P["maxf"]) / 2]),
    }
    tr2 = np.concatenate([tr, tr])
    fa = np.vstack([P["avg"][tr], P["avgf"][tr]])
    sc = StandardScaler().fit(fa)
    res = []
    for C in (0.003, 0.01, 0.03):
        lr = LogisticRegression(C=C, max_iter=5000).fit(sc.transform(fa), y[tr2])
        res.append(f"C={C}: {(lr.predict(sc.transform(P['avg'][va])) != y[va]).mean():.3f}")
    print("  avg, mirrored copies in train only: " + "  ".join(res), flush=True)
    for name, f in variants.items():
        sc = StandardScaler().fit(f[tr])
        res = []
        for C in (0.003, 0.01, 0.03):
            lr = LogisticRegression(C=C, max_iter=5000).fit(sc.transform(f[tr]), y[tr])
            res.append(f"C={C}: {(lr.predict(sc.transform(f[va])) != y[va]).mean():.3f}")
        print(f"  {name}: " + "  ".join(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
