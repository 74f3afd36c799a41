"""Grad-CAM explains the answer the classifier gives, mirror averaging included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from snake_model.gradcam import gradcam, overlay
from snake_model.network import build_network
from snake_model.preprocess import resize_for_model, to_array
from snake_model.spec import ModelSpec


def picture() -> Image.Image:
    """Asymmetric on purpose: a bright disc on the left of a noisy background."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(60, 140, (72, 96, 3), dtype=np.uint8), "RGB")
    ImageDraw.Draw(img).ellipse((8, 20, 40, 52), fill=(230, 200, 40))
    return img


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    plain = build_network("tf_efficientnet_lite0", 4, pretrained=False).eval()
    tta = build_network("tf_efficientnet_lite0", 4, pretrained=False, tta_flip=True).eval()
    tta.load_state_dict(plain.state_dict())
    zoom = build_network("tf_efficientnet_lite0", 4, pretrained=False, tta_flip=True, tta_zoom=0.8).eval()
    zoom.load_state_dict(plain.state_dict())
    return plain, tta, zoom


SPEC = ModelSpec(labels=["a", "b", "c", "d"], image_size=64, resize_method="squish")


def test_the_map_is_a_normalised_grid_and_the_class_is_the_networks_answer(nets):
    for net in nets:
        cam, idx = gradcam(net, SPEC, picture())
        assert cam.ndim == 2 and cam.min() >= 0 and np.isclose(cam.max(), 1)
        with torch.no_grad():
            logits = net(torch.from_numpy(to_array(resize_for_model(picture(), SPEC), SPEC))[None])
        assert idx == int(logits.argmax())
        assert overlay(picture(), SPEC, cam).size == resize_for_model(picture(), SPEC).size


def test_with_mirror_averaging_the_mirror_image_gets_the_mirrored_map(nets):
    plain, tta, _ = nets
    cam, idx = gradcam(tta, SPEC, picture())
    cam_m, idx_m = gradcam(tta, SPEC, ImageOps.mirror(picture()))
    assert idx == idx_m
    np.testing.assert_allclose(cam_m, cam[:, ::-1], atol=1e-4)
    # one view alone is not symmetric: the mirror averaging is what makes it so
    p, _ = gradcam(plain, SPEC, picture(), class_index=idx)
    pm, _ = gradcam(plain, SPEC, ImageOps.mirror(picture()), class_index=idx)
    assert np.abs(pm - p[:, ::-1]).max() > 1e-3


def test_a_class_index_out_of_range_is_refused(nets):
    with pytest.raises(ValueError, match="out of range"):
        gradcam(nets[0], SPEC, picture(), class_index=4)


def test_the_zoomed_view_adds_its_map_to_the_middle_only(nets):
    plain, tta, zoom = nets
    # the second view's map is put back where its crop came from: outside the central 80 % only the plain view
    # counts, so there the combined map is the plain view's map
    cam, idx = gradcam(zoom, SPEC, picture())
    only_plain, _ = gradcam(plain, SPEC, picture(), class_index=idx)
    up = torch.nn.functional.interpolate(torch.from_numpy(only_plain)[None, None], size=cam.shape, mode="bilinear")[
        0, 0
    ]
    from snake_model.gradcam import _combine_views

    views = torch.stack([torch.from_numpy(only_plain), torch.zeros_like(torch.from_numpy(only_plain))])
    combined = _combine_views(views, 0.8, *cam.shape)
    edge = np.ones(cam.shape, bool)
    edge[6:57, 6:57] = False  # 64 px: the central 51 px (80 %) start at 6
    np.testing.assert_allclose(combined.numpy()[edge], up.numpy()[edge], atol=1e-6)
    assert (combined.numpy()[~edge] <= up.numpy()[~edge] + 1e-6).all()  # averaged with an empty map there
