"""Recipe experiments with 5-fold cross-validation over a whole class-folder dataset (less noise than one split).

python bench/exp_cv.py DATA_DIR ARCH SIZE : frozen features of every image and its mirror image (cached under
/tmp/exp_cv), then the 5-fold CV error of a logistic head for several pooling / flip variants, and the time
the feature pass took. Numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
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


def labelled_sets(args: list[str]):
    """(folder, Dataset, labels array) for every class folder named in args; a missing one is reported and skipped."""
    for data in map(Path, args):
        if not data.is_dir():
            print(f"skip: {data} not found")
            continue
        ds = list_images(data)
        yield data, ds, np.array(ds.labels)


def cached_npz(cache: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """compute() the first time, then the arrays from the .npz cache file."""
    if cache.is_file():
        return dict(np.load(cache))
    out = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def cv_scores(
    x: np.ndarray,
    y: np.ndarray,
    C: float,
    seed: int = 0,
    extra: np.ndarray | None = None,
    folds: int = 5,
    oof: np.ndarray | None = None,
) -> tuple[float, float]:
    """Stratified k-fold error and NLL of a standardised logistic head, evaluated on the rows x (N, d).

    extra (N, V, d) adds V more training rows per image (augmented views), always in their image's fold; oof, when
    given, is an (N, n_classes) array that receives the out-of-fold probabilities.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    wrong, nll = 0, 0.0
    for tr, va in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        xt, yt = x[tr], y[tr]
        if extra is not None:
            xt = np.concatenate([xt, extra[tr].reshape(-1, extra.shape[2])])
            yt = np.concatenate([yt, np.repeat(y[tr], extra.shape[1])])
        sc = StandardScaler().fit(xt)
        m = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(xt), yt)
        pr = m.predict_proba(sc.transform(x[va]))
        if oof is not None:
            oof[va] = pr
        wrong += int((pr.argmax(1) != y[va]).sum())
        nll -= float(np.log(np.clip(pr[np.arange(len(va)), y[va]], 1e-12, 1)).sum())
    return wrong / len(y), nll / len(y)


def cv_error(x: np.ndarray, y: np.ndarray, C: float, seed: int = 0) -> float:
    """5-fold error of a standardised logistic head."""
    return cv_scores(x, y, C, seed)[0]


def main() -> int:
    data, arch, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if not data.is_dir():
        print(f"skip: {data} not found")
        return 0
    ds = list_images(data)
    y = np.array(ds.labels)
    cache = Path("/tmp/exp_cv") / f"{data.name}_{arch}_{size}.npz"
    t = time.time()
    F = cached_npz(cache, lambda: features(ds.paths, arch, size))
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
