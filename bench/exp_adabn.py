"""AdaBN: does re-estimating the frozen Lite0's batch-norm statistics on the snake photos help the default head?

python bench/exp_adabn.py DATA_DIR [DATA_DIR ...]: the default's features (Lite0, 288-px centre crop, the photo and
its zoomed mirror view averaged, plus 4 random resized crops per training image) with every BatchNorm2d's running
mean and variance replaced by those of the set's photos (one pass in batches of 64, cumulative averages), or mixed
half and half with ImageNet's; the default head in stratified 5-fold CV (`bench.exp_cv.cv_scores`, fold seed 0).
The statistics are taken over every photo of the set, held-out folds included: an upper bound for what the
adaptation could give, since no labels are used. Features are cached under /tmp/exp_adabn.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cached_npz, cv_scores, data_args, labelled_sets  # noqa: E402

CACHE = Path("/tmp/exp_adabn")
MIXES = (0.0, 0.5, 1.0)  # share of the snake photos' statistics: 0 = ImageNet's (the default)


def adapt(net, paths, spec, mix: float, bs: int = 64) -> None:
    """Running statistics of every BatchNorm2d of net.body = mix x the photos' + (1 - mix) x ImageNet's."""
    import torch

    from snake_model.loader import load_image
    from snake_model.preprocess import preprocess_batch

    bns = [m for m in net.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    old = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches
        m.train()
    order = np.random.default_rng(0).permutation(len(paths))
    with torch.no_grad():
        for s in range(0, len(paths), bs):
            net.body(torch.from_numpy(preprocess_batch([paths[i] for i in order[s : s + bs]], spec, load_image)))
    for m, (mu, var) in zip(bns, old, strict=True):
        m.running_mean.mul_(mix).add_((1 - mix) * mu)
        m.running_var.mul_(mix).add_((1 - mix) * var)
        m.eval()


def features(paths, mix: float, name: str) -> dict[str, np.ndarray]:
    import torch

    from snake_model.network import build_network
    from snake_model.spec import ModelSpec
    from train.recipe_fast import FAST, augmented_features, full_pass

    def compute() -> dict[str, np.ndarray]:
        zoom = FAST["tta_zoom"]
        net = build_network("tf_efficientnet_lite0", 1, pretrained=True, tta_flip=True, tta_zoom=zoom).eval()
        spec = ModelSpec(labels=["x"], image_size=288, resize_method="crop", tta_flip=True, tta_zoom=zoom)
        if mix > 0:
            adapt(net, paths, spec, mix)
        cpu = torch.device("cpu")
        served = full_pass(net, paths, spec, device=cpu)[1]
        crops = augmented_features(net, paths, spec, FAST["aug_views"], seed=42, device=cpu)
        return {"f": served, "c": crops}

    return cached_npz(CACHE / f"{name}_{mix}.npz", compute)


def main() -> int:
    for data, ds, y in list(labelled_sets(data_args(sys.argv[1:], __doc__))):
        for mix in MIXES:
            z = features(ds.paths, mix, data.name)
            res = "  ".join(
                f"C={C:g}: {100 * e:.1f} % / {n:.3f}"
                for C in (0.001, 0.003, 0.01)
                for e, n in [cv_scores(z["f"], y, C, extra=z["c"])]
            )
            print(f"{data.name:5s} photos' statistics x {mix:.1f}: {res}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
