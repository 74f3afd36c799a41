"""The predictor reproduces fastai's validation transform and get_preds exactly (within 1e-4)."""

from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import torch

from snake_model.artifact import save_artifact
from snake_model.network import build_network
from snake_model.predictor import Predictor
from snake_model.spec import ModelSpec
from tests.conftest import make_image
from train.data import list_images
from train.recipe_original import make_dls, make_learner


@pytest.fixture(scope="module")
def odd_shapes(tmp_path_factory):
    """Images of very different aspect ratios, so crop and pad really crop and pad."""
    root = tmp_path_factory.mktemp("shapes")
    rng = random.Random(3)
    sizes = [(120, 40), (40, 120), (64, 64), (99, 70), (33, 90), (150, 61)]
    for kind in ("red_disc", "green_bar"):
        (root / kind).mkdir()
        for i, s in enumerate(sizes):
            make_image(kind, rng, s).save(root / kind / f"{i}.png")
    return root


@pytest.mark.parametrize("resize", ["crop", "squish", "pad", "rrc"])
def test_predictor_probabilities_equal_fastai_get_preds(tmp_path, odd_shapes, resize):
    torch.manual_seed(0)
    ds = list_images(odd_shapes)
    idx = list(range(len(ds.paths)))
    args = argparse.Namespace(aug=True, aug_mult=1.0, size=48, min_scale=0.5, bs=4, workers=0)
    model = build_network("tf_efficientnet_lite0", 2, head="fastai", pretrained=False)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    dls = make_dls(ds, idx[:2], idx, args, torch.device("cpu"), mean, std, resize)
    learn = make_learner(dls, model, torch.device("cpu"))
    fa_probs, _ = learn.get_preds(ds_idx=1)
    assert fa_probs.std(0).max() > 1e-3, "outputs must depend on the image, or the comparison proves nothing"
    spec = ModelSpec(labels=list(dls.vocab), head="fastai", image_size=48, resize_method=resize, mean=mean, std=std)
    save_artifact(learn.model, spec, tmp_path)
    for backend in ("torch", "onnx"):
        pred = Predictor(tmp_path, backend=backend)
        ours = pred.predict_proba([ds.paths[i] for i in idx])
        np.testing.assert_allclose(ours, fa_probs.numpy(), atol=1e-4, err_msg=f"{resize}/{backend}")


def test_pad_never_builds_a_square_of_a_huge_longer_side(monkeypatch):
    from PIL import Image

    from snake_model import preprocess as pp
    from snake_model.spec import ModelSpec

    shapes = []
    real_pad = np.pad

    def recording_pad(arr, *a, **k):
        out = real_pad(arr, *a, **k)
        shapes.append(out.shape)
        return out

    monkeypatch.setattr(pp.np, "pad", recording_pad)
    spec = ModelSpec(labels=["a", "b"], image_size=64, resize_method="pad")
    strip = Image.new("RGB", (30000, 40), (200, 30, 30))  # 1.2 MP: an upload the app accepts
    view = pp.resize_for_model(strip, spec)
    assert view.size == (64, 64)
    assert shapes and max(max(s[:2]) for s in shapes) <= pp.PAD_MAX_SIDE  # not a 30000 x 30000 square (2.7 GB)
    small = Image.new("RGB", (300, 40), (200, 30, 30))  # under the cap: exactly fastai's pad-then-resize
    shapes.clear()
    pp.resize_for_model(small, spec)
    assert shapes == [(300, 300, 3)]
