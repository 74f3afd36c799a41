"""Is it where the network looks, how it pools, or the head? Four cheap levers on the frozen Lite0 features, 5-fold CV.

python bench/exp_local_views.py DATA_DIR [DATA_DIR ...]: per photo this caches the 288-px centre crop's unpooled
final feature map (1280 x 9 x 9) and the pooled features of the mirror images of 18 zoomed crops cut from the 288-px
input, as `SnakeNet.second_view` cuts its central one: a 3 x 3 grid of boxes at zoom 0.6 and at zoom 0.8 (the grid's
centre box at 0.8 is the default's second view). Then, always with the default head (logistic on the served
features plus the default's 4 random resized crops per training image, `bench.exp_resize.crops`):

1. where to zoom: the second view's box chosen by the feature map's energy (sum over channels) or by the class
   activation map of the fold's head for its top class (then the head used as is, or refitted on those views);
   all 9 boxes of a zoom averaged (10 forwards, for reference); the most confident box (needs all 9 forwards);
2. how to pool the photo's feature map (photo only, no crops): average, GeM (p = 3), and bilinear (second-order)
   pooling of the map reduced to 64 channels by PCA, alone and next to the average;
3. the head: the logistic head's probabilities blended with a cosine k-nearest-neighbour vote over the training
   photos (the k nearest, weights exp(similarity / 0.05));
4. label-noise filtering: the training photos whose label gets under 5 % / 15 % in inner 5-fold predictions are
   dropped before the head is fitted.

Prints error / out-of-fold NLL per variant and C (fold seed 0). Features are cached under /tmp/exp_local.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cached_npz, data_args, labelled_sets  # noqa: E402
from bench.exp_resize import crops  # noqa: E402

CACHE = Path("/tmp/exp_local")
SIZE, STRIDE, ZOOMS = 288, 32, (0.6, 0.8)


def grid_boxes(zoom: float) -> list[tuple[int, int, int]]:
    """(top, left, side) of the 3 x 3 grid of zoom x zoom boxes in the 288-px input, row by row."""
    c = int(SIZE * zoom + 0.5)
    pos = [0, (SIZE - c) // 2, SIZE - c]
    return [(t, left, c) for t in pos for left in pos]


def box_weights() -> np.ndarray:
    """(18, 81): for each grid box, the share of each 9 x 9 feature-map cell it covers (rows sum to 1)."""
    n = SIZE // STRIDE
    out = []
    for z in ZOOMS:
        for t, left, c in grid_boxes(z):
            r0, r1, c0, c1 = t / STRIDE, (t + c) / STRIDE, left / STRIDE, (left + c) / STRIDE
            m = np.array(
                [
                    [max(0, min(i + 1, r1) - max(i, r0)) * max(0, min(j + 1, c1) - max(j, c0)) for j in range(n)]
                    for i in range(n)
                ]
            )
            out.append((m / m.sum()).ravel())
    return np.stack(out)


def grid_features(paths) -> dict[str, np.ndarray]:
    """{"fmap": (N, 1280, 9, 9) float16, "grid": (N, 18, 1280), "ok": (N,)}, through ONNX Runtime."""
    import onnxruntime as ort
    import torch
    from torch import nn

    from snake_model.loader import load_image
    from snake_model.network import build_network
    from snake_model.preprocess import preprocess
    from snake_model.spec import ModelSpec

    class Grid(nn.Module):
        def __init__(self, body: nn.Module):
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            views = [x]
            for z in ZOOMS:
                for t, left, c in grid_boxes(z):
                    v = nn.functional.interpolate(
                        x[:, :, t : t + c, left : left + c], size=(SIZE, SIZE), mode="bilinear", align_corners=False
                    )
                    views.append(torch.flip(v, dims=[3]))
            f = self.body(torch.cat(views))
            return f[:1], f[1:].mean(dim=(2, 3))

    def compute() -> dict[str, np.ndarray]:
        net = build_network("tf_efficientnet_lite0", 1, pretrained=True).eval()
        onnx = CACHE / "grid.onnx"
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(
            Grid(net.body).eval(), torch.zeros(1, 3, SIZE, SIZE), str(onnx), input_names=["x"], opset_version=17,
            dynamo=False,
        )  # fmt: skip
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
        spec = ModelSpec(labels=["x"], image_size=SIZE, resize_method="crop")
        n = len(paths)
        fm = np.zeros((n, net.body.num_features, SIZE // STRIDE, SIZE // STRIDE), np.float16)
        grid = np.zeros((n, 9 * len(ZOOMS), net.body.num_features), np.float32)
        ok = np.zeros(n, bool)
        x = np.empty((1, 3, SIZE, SIZE), np.float32)
        for i, p in enumerate(paths):
            try:
                preprocess(load_image(p), spec, out=x[0])
            except Exception as e:  # noqa: BLE001 - an unreadable photo is left out, as train.fit leaves it out
                print(f"skip {p}: {e}")
                continue
            a, b = sess.run(None, {"x": x})
            fm[i], grid[i], ok[i] = a[0], b, True
        return {"fmap": fm, "grid": grid, "ok": ok}

    return cached_npz(CACHE / f"grid_{Path(paths[0]).parent.parent.name}.npz", compute)


def fit_head(x: np.ndarray, y: np.ndarray, C: float):
    """A standardised logistic head; returns (scaler, model)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(x)
    return sc, LogisticRegression(C=C, max_iter=3000).fit(sc.transform(x), y)


def with_crops(served: np.ndarray, v: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The default's training rows for the photos idx: their served features plus their crops."""
    return (
        np.concatenate([served[idx], v[idx].reshape(-1, v.shape[2])]),
        np.concatenate([y[idx], np.repeat(y[idx], v.shape[1])]),
    )


def knn_vote(a: np.ndarray, ya: np.ndarray, b: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Class probabilities of rows b from their k most cosine-similar rows of a (weights exp(sim / 0.05))."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = b @ a.T
    idx = np.argsort(-s, 1)[:, :k]
    w = np.exp(np.take_along_axis(s, idx, 1) / 0.05)
    q = np.full((len(b), n_classes), 1e-3)
    for j in range(k):
        np.add.at(q, (np.arange(len(b)), ya[idx[:, j]]), w[:, j])
    return q / q.sum(1, keepdims=True)


def bilinear(fm: np.ndarray, pca) -> np.ndarray:
    """Signed-square-root, L2-normalised second-order pooling of (n, 81, 1280) maps reduced by pca."""
    d = pca.n_components_
    z = pca.transform(fm.reshape(-1, fm.shape[2])).reshape(len(fm), -1, d)
    iu = np.triu_indices(d)
    b = (np.einsum("npi,npj->nij", z, z) / z.shape[1])[:, iu[0], iu[1]]
    b = np.sign(b) * np.sqrt(np.abs(b))
    return b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-9)


def run(g: dict[str, np.ndarray], v: np.ndarray, y: np.ndarray, C: float, seed: int) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of every variant."""
    from sklearn.decomposition import PCA
    from sklearn.model_selection import StratifiedKFold

    n, k = len(y), int(y.max()) + 1
    fm = g["fmap"].reshape(n, g["fmap"].shape[1], -1).astype(np.float32).transpose(0, 2, 1)  # (n, 81, 1280)
    grid = g["grid"]
    plain = fm.mean(1)
    gem = (np.clip(fm, 1e-6, None) ** 3).mean(1) ** (1 / 3)
    w = box_weights()
    energy = fm.sum(2) @ w.T  # (n, 18)
    served = (plain + grid[:, 9 + 4]) / 2  # the default: the centre box at zoom 0.8
    P: dict[str, np.ndarray] = {}

    def put(name: str, va: np.ndarray, p: np.ndarray) -> None:
        P.setdefault(name, np.zeros((n, k)))[va] = p

    rows = np.arange(n)
    for tr, va in StratifiedKFold(5, shuffle=True, random_state=seed).split(plain, y):
        sc, m = fit_head(*with_crops(served, v, y, tr), C)

        def prob(f, sc=sc, m=m):
            return m.predict_proba(sc.transform(f))

        p0 = prob(served[va])
        put("default (centre box, zoom 0.8)", va, p0)
        # 1. where to zoom
        cam = np.einsum("kc,npc->nkp", m.coef_ / sc.scale_, fm)  # (n, classes, 81)
        top_cam = cam[rows, prob(plain).argmax(1)] @ w.T  # (n, 18)
        for z, off in zip(ZOOMS, (0, 9), strict=True):
            pick = energy[:, off : off + 9].argmax(1) + off
            put(f"energy box, zoom {z}", va, prob((plain[va] + grid[va, pick[va]]) / 2))
            pick = top_cam[:, off : off + 9].argmax(1) + off
            view = (plain + grid[rows, pick]) / 2
            put(f"CAM box, zoom {z}", va, prob(view[va]))
            sc2, m2 = fit_head(*with_crops(view, v, y, tr), C)
            put(f"CAM box, zoom {z}, head refitted", va, m2.predict_proba(sc2.transform(view[va])))
            put(f"all 9 boxes, zoom {z} (10 fwd)", va, prob((plain[va] + grid[va, off : off + 9].mean(1)) / 2))
        pp = prob(plain[va])
        pg = np.stack([prob(grid[va, j]) for j in range(9)], 1)
        best = ((pp[:, None] + pg) / 2).max(2).argmax(1)
        put("most confident box, zoom 0.6", va, (pp + pg[np.arange(len(va)), best]) / 2)
        # 2. pooling (the photo only, no crops)
        for name, f in (("photo only: average pool", plain), ("photo only: GeM p=3", gem)):
            s3, m3 = fit_head(f[tr], y[tr], C)
            put(name, va, m3.predict_proba(s3.transform(f[va])))
        pca = PCA(64, random_state=0).fit(fm[tr].reshape(-1, fm.shape[2])[::7])
        b = bilinear(fm, pca)
        for name, f in (("photo only: bilinear 64", b), ("photo only: bilinear 64 | average", np.hstack([b, plain]))):
            s3, m3 = fit_head(f[tr], y[tr], C)
            put(name, va, m3.predict_proba(s3.transform(f[va])))
        # 3. kNN blend
        for kk in (5, 10):
            q = knn_vote(sc.transform(served[tr]), y[tr], sc.transform(served[va]), kk, k)
            for lam in (0.2, 0.4):
                put(f"+ {kk}-NN vote x {lam}", va, (1 - lam) * p0 + lam * q)
        # 4. noise filter
        inner = np.zeros((len(tr), k))
        for itr, iva in StratifiedKFold(5, shuffle=True, random_state=seed + 1).split(tr, y[tr]):
            s4, m4 = fit_head(*with_crops(served, v, y, tr[itr]), C)
            inner[iva] = m4.predict_proba(s4.transform(served[tr[iva]]))
        for thr in (0.05, 0.15):
            keep = tr[inner[np.arange(len(tr)), y[tr]] >= thr]
            s5, m5 = fit_head(*with_crops(served, v, y, keep), C)
            put(f"drop training photos under {thr:.0%}", va, m5.predict_proba(s5.transform(served[va])))
    return P


def main() -> int:
    sets = list(labelled_sets(data_args(sys.argv[1:], __doc__)))
    for data, ds, y in sets:
        t = time.time()
        g = grid_features(ds.paths)
        v = crops(ds.paths, "crop")
        ok = g["ok"]
        print(f"{data.name}: features {time.time() - t:.0f} s, {int(ok.sum())} photos", flush=True)
        g = {key: a[ok] for key, a in g.items()}
        for C in (0.003, 0.01):
            P = run(g, v[ok], y[ok], C, seed=0)
            for name, p in P.items():
                err = (p.argmax(1) != y[ok]).mean()
                nll = -np.log(np.clip(p[np.arange(len(p)), y[ok]], 1e-12, 1)).mean()
                print(f"{data.name:5s} C={C:<6g} {name:38s} {err:6.1%} / {nll:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
