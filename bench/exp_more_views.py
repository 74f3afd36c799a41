"""Do 8 random resized crops per training image beat the default's 4? And how much do the crops' seeds move CV?

python bench/exp_more_views.py DATA_DIR [DATA_DIR ...]: 5-fold CV (`bench.exp_cv.cv_scores`) of the default head
on Lite0 288-px centre-crop features (mirror averaged), with the default's 4 crops per training image drawn with
seed 42 (cached by bench/exp_resize.py), 4 more drawn with seed 43 (cached under /tmp/exp_more_views), and all 8.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import cached_npz, cv_scores, data_args, labelled_sets  # noqa: E402
from bench.exp_resize import crops, served  # noqa: E402


def main() -> int:
    sets = list(labelled_sets(data_args(sys.argv[1:], __doc__)))
    import torch

    from snake_model.network import build_network
    from snake_model.spec import ModelSpec
    from train.recipe_fast import augmented_features

    for data, ds, y in sets:
        x, _ = served(ds.paths, "crop")
        v42 = crops(ds.paths, "crop")

        def compute(ds=ds) -> dict[str, np.ndarray]:
            model = build_network("tf_efficientnet_lite0", 1, pretrained=True).eval()
            spec = ModelSpec(labels=["x"], image_size=288, resize_method="crop")
            return {"crops": augmented_features(model, ds.paths, spec, 4, seed=43, device=torch.device("cpu"))}

        v43 = cached_npz(Path("/tmp/exp_more_views") / f"crops_{data.name}_seed43.npz", compute)["crops"]
        for name, extra in [
            ("4 crops, seed 42", v42),
            ("4 crops, seed 43", v43),
            ("8 crops", np.concatenate([v42, v43], 1)),
        ]:
            res = "  ".join(
                "C=%g: %.3f / %.3f" % ((C,) + cv_scores(x, y, C, extra=extra)) for C in (0.001, 0.003, 0.01)
            )
            print(f"{data.name:5s} {name:17s} {res}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
