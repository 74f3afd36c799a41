"""Shared fixtures: synthetic class-folder datasets and a tiny trained artifact (made once per session)."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

# Tests never touch the network or the user's Hub cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

COLOURS = {"red_disc": (215, 40, 40), "green_bar": (40, 190, 60), "blue_square": (40, 70, 220)}


def make_image(kind: str, rng: random.Random, size: tuple[int, int] | None = None) -> Image.Image:
    """A noisy grey background with one coloured shape; the class decides colour and shape."""
    w, h = size or (rng.randint(56, 120), rng.randint(48, 100))
    bg = rng.randint(90, 170)
    im = Image.new("RGB", (w, h), (bg, bg + rng.randint(-20, 20), bg))
    d = ImageDraw.Draw(im)
    col = COLOURS[kind]
    x, y = rng.randint(0, w // 3), rng.randint(0, h // 3)
    s = min(w, h) // 2
    if kind == "red_disc":
        d.ellipse([x, y, x + s, y + s], fill=col)
    elif kind == "green_bar":
        d.rectangle([x, y, x + s, y + s // 3], fill=col)
    else:
        d.rectangle([x, y, x + s, y + s], fill=col)
    return im


def make_dataset(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for kind in COLOURS:
        d = root / kind
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(kind, rng).save(d / f"{kind}_{i:03d}.jpg", quality=92)
    return root


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, synth_data) -> Path:
    """A real train.fit run (original fastai recipe, 64 px, one epoch, random init)."""
    from train import fit

    out = tmp_path_factory.mktemp("artifact")
    rc = fit.main(
        [
            str(synth_data),
            "--out",
            str(out),
            "--recipe",
            "original",
            "--size",
            "64",
            "--epochs",
            "1",
            "--bs",
            "8",
            "--no-pretrained",
            "--quiet",
            "--resize",
            "pad",
        ]
    )
    assert rc == 0
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
