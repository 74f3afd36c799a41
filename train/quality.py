"""Per-image checks that need no model: size, darkness, blur, watermark-like text, hashes, near-duplicates."""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from snake_model.artifact import sha256_file
from snake_model.loader import ImageLoadError, load_image
from train.split import UnionFind, near_duplicate_pairs, phash_pair

# Thresholds, all visible here; the CLI can override them.
TINY_SIDE = 96  # shorter side in pixels below which an image is "tiny"
DARK_MEAN = 35.0  # mean luminance (0-255) below which an image is "very dark"
BLUR_VAR = 40.0  # variance of the Laplacian on a 256-px greyscale copy below which it is "blurry"
TEXT_FRAC = 0.17  # excess of thin high-contrast strokes in a top/bottom band over the centre (top ~2 % of in11)
DUP_HAMMING = 6  # phash bits that may differ for two images (or one and the other's mirror image) to be duplicates
# Feature cosine similarity that also counts: catches re-watermarked and re-coloured copies. Not a mirror detector: a
# photo and its mirrored copy measured 0.91-0.98 on real photos, so about 4 in 10 mirrors fall below it; the mirror
# phash (image_checks' phash_mirror, passed to duplicate_clusters as mirror_phashes) is what catches those.
DUP_COS = 0.95
_WORK_SIDE = 256


@dataclass
class Thresholds:
    tiny_side: int = TINY_SIDE
    dark_mean: float = DARK_MEAN
    blur_var: float = BLUR_VAR
    text_frac: float = TEXT_FRAC


def _grey(img: Image.Image) -> np.ndarray:
    """A greyscale copy whose longer side is _WORK_SIDE, so blur and text scores do not depend on size."""
    g = img.convert("L")
    scale = _WORK_SIDE / max(g.size)
    g = g.resize((max(1, round(g.width * scale)), max(1, round(g.height * scale))), Image.BILINEAR)
    return np.asarray(g, dtype=np.float32)


def text_band_score(g: np.ndarray) -> float:
    """Share of thin, high-contrast strokes in the busier of the top and bottom bands, minus the centre's.

    Captions and watermarks are thin strokes clustered near an edge; texture (scales, leaves) is spread out.
    """
    strokes = np.maximum(ndimage.white_tophat(g, size=5), ndimage.black_tophat(g, size=5)) > 60
    h = g.shape[0]
    band = max(1, h // 6)
    top, bottom = strokes[:band].mean(), strokes[-band:].mean()
    centre = strokes[band:-band].mean() if h > 2 * band else 0.0
    return float(max(top, bottom) - centre)


def image_checks(path: str | Path, th: Thresholds | None = None) -> dict:
    """Load one image with the project loader and measure it; an unreadable file gets an error field."""
    th = th or Thresholds()
    row: dict = {"sha256": sha256_file(path)}
    try:
        img = load_image(path)
    except ImageLoadError as e:
        row.update(error=str(e), flags="unreadable")
        return row
    g = _grey(img)
    phash, mirror = phash_pair(img)
    w, h = img.size
    brightness = float(np.asarray(img.convert("L"), dtype=np.float32).mean())
    blur = float(ndimage.laplace(g).var())
    text = text_band_score(g)
    flags = []
    if min(w, h) < th.tiny_side:
        flags.append("tiny")
    if brightness < th.dark_mean:
        flags.append("dark")
    if blur < th.blur_var:
        flags.append("blurry")
    if text > th.text_frac:
        flags.append("text")
    row.update(
        error="",
        width=w,
        height=h,
        brightness=round(brightness, 2),
        blur=round(blur, 2),
        text=round(text, 4),
        phash=f"{phash:016x}",  # imagehash.phash(img) as imagehash prints it
        phash_mirror=f"{mirror:016x}",  # the same of the image flipped left to right
        flags=";".join(flags),
    )
    return row


def quality_severity(row: dict, th: Thresholds | None = None) -> float:
    """One number to sort the quality queue: how far past its thresholds an image is (higher is worse)."""
    th = th or Thresholds()
    flags = set(filter(None, str(row.get("flags", "")).split(";")))
    if "unreadable" in flags:
        return 10.0
    s = 0.0
    if "tiny" in flags:
        s += 1 - min(int(row["width"]), int(row["height"])) / th.tiny_side
    if "dark" in flags:
        s += 1 - float(row["brightness"]) / th.dark_mean
    if "blurry" in flags:
        s += 1 - float(row["blur"]) / th.blur_var
    if "text" in flags:
        s += min(1.0, float(row["text"]) / th.text_frac - 1)
    return round(s + len(flags), 4)


def _hash64(text: str | None) -> int | None:
    """A 16-hex-digit phash as an integer; None when missing or not a hash (a hand-edited manifest cell)."""
    text = (text or "").strip()
    return int(text, 16) if len(text) == 16 and all(c in string.hexdigits for c in text) else None


def duplicate_clusters(
    phashes: list[str | None],
    sha256s: list[str],
    max_bits: int = DUP_HAMMING,
    feats: np.ndarray | None = None,
    min_cos: float = DUP_COS,
    mirror_phashes: list[str | None] | None = None,
) -> list[int]:
    """Cluster id per image (-1 when alone): sha256 twins, phashes within max_bits (with mirror_phashes, the
    phashes of the mirrored images, also one image's phash within max_bits of the other's mirror phash: a flipped
    re-post) or features above min_cos."""
    n = len(phashes)
    uf = UnionFind(n)
    first: dict[str, int] = {}
    for i, s in enumerate(sha256s):
        if s in first:
            uf.union(first[s], i)
        else:
            first.setdefault(s, i)
    hashes = [_hash64(p) for p in phashes]
    have = [i for i, h in enumerate(hashes) if h is not None]
    mirrors = None
    if mirror_phashes is not None:
        # an image without a mirror hash is compared as it is (its own hash stands in)
        mirrors = [m if (m := _hash64(mirror_phashes[i])) is not None else hashes[i] for i in have]
    for a, b in near_duplicate_pairs([hashes[i] for i in have], max_bits, mirrors):
        uf.union(have[a], have[b])
    if feats is not None and len(feats):
        f = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        for start in range(0, n, 1024):
            sim = f[start : start + 1024] @ f.T
            for a, b in zip(*np.nonzero(sim >= min_cos), strict=True):
                if start + a < b:
                    uf.union(int(start + a), int(b))
    roots = [uf.find(i) for i in range(n)]
    sizes: dict[int, int] = {}
    for r in roots:
        sizes[r] = sizes.get(r, 0) + 1
    ids: dict[int, int] = {}
    out = []
    for r in roots:
        if sizes[r] < 2:
            out.append(-1)
        else:
            out.append(ids.setdefault(r, len(ids)))
    return out
