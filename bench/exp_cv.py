"""Recipe experiments with 5-fold cross-validation over a whole class-folder dataset (less noise than one split).

python bench/exp_cv.py DATA_DIR ARCH SIZE : frozen features of every image and its mirror image (cached under
/tmp/exp_cv), then the 5-fold CV error of a logistic head for several pooling / flip variants, and the time
the feature pass took. Numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snake_model.loader import load_image  # noqa: E402
from snake_model.network import build_network  # noqa: E402
from snake_model.preprocess import preprocess  # noqa: E402
from snake_model.spec import ModelSpec  # noqa: E402
from train.data import list_images  # noqa: E402


@torch.inference_mode()
def features(paths, arch: str, size: int) -> dict[str, np.ndarray]:
    net = build_network(arch, 1, pretrained=True).body.eval()
    spec = ModelSpec(labels=["x"], arch=arch, image_size=size, resize_method="squish")
    out: dict[str, list] = {"avg": [], "avgf": [], "max": [], "maxf": []}
    for s in range(0, len(paths), 32):
        x = torch.from_numpy(np.stack([preprocess(load_image(p), spec) for p in paths[s : s + 32]]))
        n = len(x)
        f = net(torch.cat([x, torch.flip(x, dims=[3])]))
        out["avg"].append(f[:n].mean((2, 3)).numpy())
        out["avgf"].append(f[n:].mean((2, 3)).numpy())
        out["max"].append(f[:n].amax((2, 3)).numpy())
        out["maxf"].append(f[n:].amax((2, 3)).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def cv_error(x: np.ndarray, y: np.ndarray, C: float, seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wrong = 0
    for tr, va in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
        m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000)).fit(x[tr], y[tr])
        wrong += int((m.predict(x[va]) != y[va]).sum())
    return wrong / len(y)


def main() -> int:
    data, arch, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if not data.is_dir():
        print(f"skip: {data} not found")
        return 0
    ds = list_images(data)
    y = np.array(ds.labels)
    cache = Path("/tmp/exp_cv") / f"{data.name}_{arch}_{size}.npz"
    t = time.time()
    if cache.is_file():
        F = dict(np.load(cache))
    else:
        F = features(ds.paths, arch, size)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **F)
    secs = time.time() - t
    variants = {
        "avg (no TTA)": F["avg"],
        "avg + flip TTA": (F["avg"] + F["avgf"]) / 2,
        "max + flip TTA": (F["max"] + F["maxf"]) / 2,
        "avg|max + flip TTA": np.hstack([(F["avg"] + F["avgf"]) / 2, (F["max"] + F["maxf"]) / 2]),
    }
    print(f"{data.name} {arch} {size}px: {len(y)} images, features x2 views {secs:.0f}s", flush=True)
    for name, x in variants.items():
        res = "  ".join(f"C={C}: {cv_error(x, y, C):.3f}" for C in (0.003, 0.01, 0.03))
        print(f"  {name:<20} {res}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
