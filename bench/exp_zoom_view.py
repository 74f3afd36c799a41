"""Which second view should the served network average with the photo? 5-fold CV of the default head.

python bench/exp_zoom_view.py DATA_DIR [DATA_DIR ...]: the default (Lite0, 288-px centre crop, logistic head on the
served features plus 4 random resized crops per training image, `bench.exp_cv.cv_scores`) with the served
features averaged over the photo and one second view: its mirror image (tta_zoom 1, the default until session
4), or the mirror image of its central 80 % / 70 % zoomed to full size. "network" rows zoom inside the served
network (`SnakeNet.second_view`, what train.fit --tta-zoom builds: the crop is cut from the 288-px input and
upsampled); "photo" rows cut the crop from the original photo before resizing (sharper for large photos, but it
would need a second input image). Every variant costs the same 2 forward passes per photo. Then the mirror and the
network's zoom 0.8 compared photo by photo over three fold seeds (a sign test on the photos only one gets right).
Features are cached under /tmp/exp_zoom.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cached_npz, cv_scores, data_args, labelled_sets  # noqa: E402
from bench.exp_resize import crops, served  # noqa: E402

CS = (0.001, 0.003, 0.01)
CACHE = Path("/tmp/exp_zoom")


def network_view(paths, zoom: float) -> np.ndarray:
    """Served features of the network with tta_zoom = zoom (photo + mirrored zoomed centre, averaged)."""
    import torch

    from snake_model.network import build_network
    from snake_model.spec import ModelSpec
    from train.recipe_fast import full_pass

    def compute() -> dict[str, np.ndarray]:
        net = build_network("tf_efficientnet_lite0", 1, pretrained=True, tta_flip=True, tta_zoom=zoom).eval()
        spec = ModelSpec(labels=["x"], image_size=288, resize_method="crop", tta_flip=True, tta_zoom=zoom)
        return {"f": full_pass(net, paths, spec, device=torch.device("cpu"))[1]}

    return cached_npz(CACHE / f"net_{Path(paths[0]).parent.parent.name}_{zoom}.npz", compute)["f"]


def photo_view(paths, zoom: float) -> np.ndarray:
    """Features of the mirrored central zoom x zoom part of the photo's centre square, cut from the original."""
    import torch
    from PIL import ImageOps

    from snake_model.loader import load_image
    from snake_model.network import build_network
    from snake_model.preprocess import preprocess
    from snake_model.spec import ModelSpec
    from train.features import FeatureRunner

    def compute() -> dict[str, np.ndarray]:
        net = build_network("tf_efficientnet_lite0", 1, pretrained=True).eval()
        spec = ModelSpec(labels=["x"], image_size=288, resize_method="crop")
        run = FeatureRunner(net, spec, torch.device("cpu"))
        out = np.zeros((len(paths), net.body.num_features), np.float32)
        x = np.empty((1, 3, 288, 288), np.float32)
        for i, p in enumerate(paths):
            img = load_image(p)
            w, h = img.size
            s = min(w, h) * zoom
            box = tuple(int(round(b)) for b in ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2))
            preprocess(ImageOps.mirror(img.crop(box)), spec, out=x[0])
            out[i] = run(x)[1][0]
        return {"f": out}

    return cached_npz(CACHE / f"photo_{Path(paths[0]).parent.parent.name}_{zoom}.npz", compute)["f"]


def paired(a: np.ndarray, b: np.ndarray, y: np.ndarray, v: np.ndarray, name: str) -> None:
    """Per C and fold seed: the CV error of both feature sets, and how many photos b gets right that a got wrong
    ("fixed") and the reverse ("broke"), with the two-sided sign test's p-value."""
    from scipy.stats import binomtest

    for C in (0.003, 0.01):
        for seed in (0, 1, 2):
            pa, pb = np.zeros((len(y), y.max() + 1)), np.zeros((len(y), y.max() + 1))
            cv_scores(a, y, C, seed=seed, extra=v, oof=pa)
            cv_scores(b, y, C, seed=seed, extra=v, oof=pb)
            ra, rb = pa.argmax(1) == y, pb.argmax(1) == y
            fixed, broke = int((~ra & rb).sum()), int((ra & ~rb).sum())
            p = binomtest(fixed, fixed + broke).pvalue if fixed + broke else 1.0
            print(
                f"{name:5s} paired C={C} fold seed {seed}: mirror {1 - ra.mean():.3f}, zoom 0.8 {1 - rb.mean():.3f}; "
                f"fixed {fixed}, broke {broke} (p = {p:.3f})",
                flush=True,
            )


def main() -> int:
    sets = list(labelled_sets(data_args(sys.argv[1:], __doc__)))
    from train.features import extract_features

    for data, ds, y in sets:
        mirror, ok = served(ds.paths, "crop")  # photo + mirror image, averaged (tta_zoom 1)
        t = time.time()
        plain, _ = extract_features(
            ds.paths, image_size=288, resize_method="crop", cache_dir="/tmp/exp_resize", progress=False
        )
        variants = {"mirror (tta_zoom 1)": mirror}
        for z in (0.8, 0.7):
            variants[f"network, zoom {z}"] = network_view(ds.paths, z)
        for z in (0.8, 0.65):
            variants[f"photo, zoom {z}"] = (plain + photo_view(ds.paths, z)) / 2
        print(f"{data.name}: features {time.time() - t:.0f} s", flush=True)
        v = crops(ds.paths, "crop")
        for name, x in variants.items():
            res = "  ".join("C=%g: %.3f / %.3f" % ((C,) + cv_scores(x[ok], y[ok], C, extra=v[ok])) for C in CS)
            print(f"{data.name:5s} {name:20s} {res}", flush=True)
        paired(mirror[ok], variants["network, zoom 0.8"][ok], y[ok], v[ok], data.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
