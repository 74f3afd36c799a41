"""fastai's validation transform, reimplemented with PIL + numpy so serving never imports fastai."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from .spec import ModelSpec

_NP_PAD = {"reflection": "reflect", "zeros": "constant", "border": "edge"}
# "pad" pads to a square of the longer side before resizing, as fastai does: a 65000 x 615 upload would need a
# 65000 x 65000 intermediate (12 GB). Longer sides beyond this are shrunk first (photos up to it are exact).
PAD_MAX_SIDE = 4096


def _crop_pad(img: Image.Image, sz: tuple[int, int], tl: tuple[int, int], pad_mode: str) -> Image.Image:
    """fastai's _do_crop_pad for PIL images (crop where inside, pad where outside)."""
    w, h = img.size
    (sw, sh), (tx, ty) = sz, tl
    if tx >= 0 or ty >= 0 or tx + sw <= w or ty + sh <= h:
        cx, cy = max(tx, 0), max(ty, 0)
        img = img.crop((cx, cy, min(tx + sw, w), min(ty + sh, h)))
    if tx < 0 or ty < 0 or tx + sw >= w or ty + sh >= h:
        pl, pt = max(-tx, 0), max(-ty, 0)
        pr, pb = max(sw - w + tx, 0), max(sh - h + ty, 0)
        if pl or pt or pr or pb:
            arr = np.asarray(img)
            arr = np.pad(arr, ((pt, pb), (pl, pr), (0, 0)), mode=_NP_PAD[pad_mode])
            img = Image.fromarray(arr)
    return img


def resize_for_model(img: Image.Image, spec: ModelSpec) -> Image.Image:
    """Resize an RGB image exactly as fastai's item transform does on the validation split."""
    size = int(spec.image_size)
    w, h = img.size
    if spec.resize_method == "squish":
        return img.resize((size, size), Image.BILINEAR)
    if spec.resize_method == "rrc":
        xtra = math.ceil(size * spec.val_xtra / 8) * 8
        final = size + xtra
        img = img.resize((final, final), Image.BILINEAR)
        if xtra:
            off = (final - size) // 2
            img = img.crop((off, off, off + size, off + size))
        return img
    # crop / pad: keep the aspect ratio, centre, then resize.
    if spec.resize_method == "pad" and max(w, h) > PAD_MAX_SIDE:
        f = PAD_MAX_SIDE / max(w, h)
        img = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
        w, h = img.size
    pick = min if spec.resize_method == "crop" else max
    m = pick(w / size, h / size)
    cp = (int(m * size), int(m * size))
    tl = (int(0.5 * (w - cp[0])), int(0.5 * (h - cp[1])))
    img = _crop_pad(img, cp, tl, spec.pad_mode)
    return img.resize((size, size), Image.BILINEAR)


def to_array(img: Image.Image, spec: ModelSpec, out: np.ndarray | None = None) -> np.ndarray:
    """RGB image -> normalised float32 CHW array (fastai: uint8 -> /255 -> Normalize), written into out."""
    a = np.asarray(img)
    std = np.asarray(spec.std, dtype=np.float32)
    scale = 1.0 / (255.0 * std)
    bias = -np.asarray(spec.mean, dtype=np.float32) / std
    out = np.empty((3, *a.shape[:2]), np.float32) if out is None else out
    for c in range(3):
        np.multiply(a[..., c], scale[c], out=out[c], dtype=np.float32, casting="unsafe")
        out[c] += bias[c]
    return out


def preprocess(img: Image.Image, spec: ModelSpec, out: np.ndarray | None = None) -> np.ndarray:
    """One RGB image -> the model's input array (3, size, size)."""
    return to_array(resize_for_model(img, spec), spec, out)


def preprocess_batch(items: Sequence, spec: ModelSpec, load: Callable[[object], Image.Image]) -> np.ndarray:
    """load(item) then preprocess every item into one float32 NCHW array, written in place (no extra copies)."""
    size = int(spec.image_size)
    x = np.empty((len(items), 3, size, size), np.float32)
    for i, item in enumerate(items):
        preprocess(load(item), spec, out=x[i])
    return x
