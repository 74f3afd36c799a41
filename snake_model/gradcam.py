"""Grad-CAM on the network's last feature map (short hook code; no extra dependency)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .network import SnakeNet, zoom_box
from .preprocess import resize_for_model, to_array
from .spec import ModelSpec


def gradcam(
    model: SnakeNet, spec: ModelSpec, img: Image.Image, class_index: int | None = None
) -> tuple[np.ndarray, int]:
    """A (H, W) map in [0, 1] over the model's input view of img, and the class it explains.

    With tta_flip the network answers with the average over the image and its mirror image, so the map explains
    that answer: the class is the averaged logits' argmax, and the mirror view's map is flipped back and averaged
    in. The explained class is then always the one the classifier shows.
    """
    view = resize_for_model(img, spec)
    x = torch.from_numpy(to_array(view, spec))[None]
    if model.tta_flip:
        x = torch.cat([x, model.second_view(x)])
    model.eval()
    with torch.enable_grad():
        feats = model.body(x)
        if not feats.requires_grad:  # frozen weights: the feature map becomes the leaf we differentiate
            feats = feats.detach().requires_grad_()
        logits = model.head(feats).mean(0)  # one view, or both averaged as the network serves them
        n = logits.shape[0]
        idx = int(logits.argmax()) if class_index is None else int(class_index)
        if not 0 <= idx < n:
            raise ValueError(f"class_index {idx} is out of range 0..{n - 1}")
        # Gradient with respect to the feature map only: no parameter .grad is written, so concurrent calls
        # on one shared model do not interfere.
        (grad,) = torch.autograd.grad(logits[idx], feats)
    cams = torch.relu((grad.mean(dim=(2, 3))[:, :, None, None] * feats.detach()).sum(1))  # (views, h, w)
    if model.tta_flip:
        cam = _combine_views(cams, model.tta_zoom, x.shape[2], x.shape[3])
    else:
        cam = cams[0]
    cam = cam / cam.max() if float(cam.max()) > 0 else cam
    return cam.numpy(), idx


def _combine_views(cams: torch.Tensor, zoom: float, h: int, w: int) -> torch.Tensor:
    """Average the plain view's map and the second view's, mirrored back and put back where its crop came from."""
    resize = torch.nn.functional.interpolate
    plain = resize(cams[None, :1], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    second = torch.flip(cams[1], dims=[1])[None, None]
    if zoom >= 1:
        return (plain + resize(second, size=(h, w), mode="bilinear", align_corners=False)[0, 0]) / 2
    top, left, ch, cw = zoom_box(h, w, zoom)
    total, weight = plain.clone(), torch.ones_like(plain)
    total[top : top + ch, left : left + cw] += resize(second, size=(ch, cw), mode="bilinear", align_corners=False)[0, 0]
    weight[top : top + ch, left : left + cw] += 1
    return total / weight


def overlay(img: Image.Image, spec: ModelSpec, cam: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heatmap coloured (jet-like) and blended over the model's view of the image."""
    view = resize_for_model(img, spec)
    heat = Image.fromarray(np.uint8(np.clip(cam, 0, 1) * 255)).resize(view.size, Image.BILINEAR)
    h = np.asarray(heat, dtype=np.float32) / 255.0
    rgb = np.stack(
        [np.clip(1.5 - abs(4 * h - 3), 0, 1), np.clip(1.5 - abs(4 * h - 2), 0, 1), np.clip(1.5 - abs(4 * h - 1), 0, 1)],
        -1,
    )
    base = np.asarray(view, dtype=np.float32) / 255.0
    out = (1 - alpha) * base + alpha * rgb
    return Image.fromarray(np.uint8(np.clip(out, 0, 1) * 255))
