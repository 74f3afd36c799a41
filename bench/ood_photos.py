"""Real non-snake photos that Python packages ship, written to a folder as negatives for the abstain test.

python bench/ood_photos.py OUT_DIR                          : write the photos (plus crops and flips)
python bench/ood_photos.py OUT_DIR --artifact DIR --data D  : then run train.evaluate with --ood OUT_DIR

Sources: scikit-image's bundled `skimage.data` images (only those whose file ships in the wheel; images that
need a pooch download are skipped) and scikit-learn's `load_sample_images()` (china, flower). No snake
photo is ever used as a negative.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# skimage.data function -> the file it reads from the installed package (no network when the file is there).
SKIMAGE = {
    "astronaut": "astronaut.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "moon": "moon.png",
    "page": "page.png",
    "text": "text.png",
    "horse": "horse.png",
    "rocket": "rocket.jpg",
    "retina": "retina.jpg",
    "gravel": "gravel.png",
    "grass": "grass.png",
    "brick": "brick.png",
    "clock": "clock_motion.png",
    "logo": "logo.png",
    "cell": "cell.png",
    "microaneurysms": "microaneurysms.png",
    "colorwheel": "color.png",
    "stereo_motorcycle": "motorcycle_left.png",
}


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    from skimage.util import img_as_ubyte

    arr = np.asarray(arr)
    if arr.dtype == bool or arr.dtype != np.uint8:
        arr = img_as_ubyte(arr)
    return arr


def skimage_images() -> Iterator[tuple[str, np.ndarray]]:
    """(name, uint8 array) for each skimage.data image whose file ships with the installed package."""
    import skimage.data as data

    root = Path(data.__file__).parent
    for name, filename in SKIMAGE.items():
        fn: Callable | None = getattr(data, name, None)
        if fn is None or not (root / filename).is_file():
            continue  # needs a download (or is gone in this version): skip, never fetch
        out = fn()
        if name == "stereo_motorcycle":
            yield "motorcycle_left", _to_uint8(out[0])
            yield "motorcycle_right", _to_uint8(out[1])
        else:
            yield name, _to_uint8(out)


def sklearn_images() -> Iterator[tuple[str, np.ndarray]]:
    """china and flower from scikit-learn's bundled sample images."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    for fname, arr in zip(bunch.filenames, bunch.images, strict=True):
        yield Path(fname).stem, _to_uint8(arr)


def base_images() -> list[tuple[str, Image.Image]]:
    """Every available source photo as a PIL image (grey stays grey; the loader makes it RGB)."""
    out = []
    for name, arr in [*skimage_images(), *sklearn_images()]:
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[..., :3]
        out.append((name, Image.fromarray(arr)))
    return out


def variants(name: str, im: Image.Image, rng: random.Random) -> list[tuple[str, Image.Image]]:
    """The photo, a random crop of 40-70 % of each side, and a mirrored crop for colour photos."""
    w, h = im.size
    out = [(name, im)]
    for tag in ("crop", "flipcrop") if im.mode == "RGB" else ("crop",):
        f = rng.uniform(0.4, 0.7)
        cw, ch = max(16, int(w * f)), max(16, int(h * f))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        c = im.crop((x, y, x + cw, y + ch))
        if tag == "flipcrop":
            c = c.transpose(Image.FLIP_LEFT_RIGHT)
        out.append((f"{name}_{tag}", c))
    return out


def write_ood_photos(out_dir: str | Path, augment: bool = True, seed: int = 0) -> list[Path]:
    """Write the photos (and, with augment, their crops/flips) into out_dir; return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written = []
    for name, im in base_images():
        for vname, v in variants(name, im, rng) if augment else [(name, im)]:
            if v.mode == "RGB":
                path = out / f"{vname}.jpg"
                v.save(path, quality=90)
            else:
                path = out / f"{vname}.png"
                v.save(path)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Write real non-snake photos shipped by scikit-image / scikit-learn to OUT_DIR and, "
        "given an artifact and its labelled data, report the abstain AUROC and false-abstain rate."
    )
    p.add_argument("out_dir", type=Path, help="folder to write the photos into (created)")
    p.add_argument("--no-augment", action="store_true", help="only the original photos, no crops or flips")
    p.add_argument("--artifact", type=Path, help="model directory to judge (runs train.evaluate --ood OUT_DIR)")
    p.add_argument("--data", type=Path, help="labelled in-distribution photos (one folder per class)")
    p.add_argument("--split", default="valid", choices=("all", "valid", "train"), help="train.evaluate --split")
    args = p.parse_args(argv)
    files = write_ood_photos(args.out_dir, augment=not args.no_augment)
    print(f"wrote {len(files)} non-snake photos to {args.out_dir}")
    if args.artifact is None:
        return 0
    if args.data is None:
        print("error: --artifact needs --data (the labelled in-distribution photos)", file=sys.stderr)
        return 2
    from train import evaluate

    return evaluate.main(
        [str(args.artifact), str(args.data), "--ood", str(args.out_dir), "--split", args.split, "--quiet"]
    )


if __name__ == "__main__":
    raise SystemExit(main())
