"""The one image loader: bytes or a path in, a fully decoded RGB PIL image out, or one clear error."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from pathlib import Path

from PIL import ExifTags, Image, ImageFile, ImageOps

# Defaults sized for photos: a 40-megapixel phone picture passes, a decompression bomb does not.
MAX_PIXELS = 50_000_000
MAX_BYTES = 50 * 1024 * 1024

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


class ImageLoadError(ValueError):
    """Base class: the input is not an image this project accepts. The message says why."""


class EmptyImageError(ImageLoadError):
    """The input has zero bytes."""


class UnsupportedFormatError(ImageLoadError):
    """The bytes are not JPEG, PNG, WebP, GIF or BMP (HTML, SVG, PDF, text, ...)."""


class TruncatedImageError(ImageLoadError):
    """The image starts well but its data ends early or is corrupt."""


class ImageTooLargeError(ImageLoadError):
    """The image has more pixels (or bytes) than the cap: a likely decompression bomb."""


def sniff_format(head: bytes) -> str | None:
    """Return the image format named by the magic bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM":
        return "BMP"
    return None


def _describe(head: bytes) -> str:
    """A human guess at what non-image bytes are, for the error message."""
    text = head[:512].lstrip().lower()
    if text.startswith(b"<svg") or b"<svg" in text:
        return "an SVG drawing (vector images are not accepted)"
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text or b"<head" in text:
        return "an HTML page, not an image (a web server often sends one instead of the picture)"
    if text.startswith(b"<?xml"):
        return "an XML document"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "a HEIC/AVIF image, which is not supported; save it as JPEG or PNG"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "a TIFF image, which is not supported; save it as JPEG or PNG"
    return "not a recognised image"


def _cannot_read(name: str, e: OSError) -> ImageLoadError:
    return ImageLoadError(f"{name}: cannot read the file ({e.strerror or e})")


def _not_regular(name: str, mode: int) -> ImageLoadError:
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    )
    kind = next((k for test, k in kinds if test(mode)), "not a file")
    return ImageLoadError(f"{name}: not a regular file ({kind}); send a JPEG, PNG, WebP, GIF or BMP photo")


# O_NONBLOCK: opening a FIFO (a pipe swapped in after the stat below) returns at once instead of waiting for a
# writer; O_NOCTTY: a terminal device never becomes this process's controlling terminal. Neither exists on Windows.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


def _read(src: bytes | bytearray | str | Path, max_bytes: int) -> tuple[bytes, str]:
    """The bytes of an upload, or of a path that is a regular file (symlinks followed), at most max_bytes + 1 of them.

    A device (/dev/zero reads forever), a FIFO (blocks until a writer comes), a socket or a folder is refused with an
    ImageLoadError before it is read. The path is checked with stat before it is opened, so no device is ever opened,
    and the opened descriptor is checked again with fstat, so a path swapped for a pipe or a device in between is
    refused too. The read stops at max_bytes + 1 whatever st_size says (a file growing while it is read)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "the upload"
    path = Path(src)
    name = path.name
    try:
        st = os.stat(path)
    except OSError as e:
        raise _cannot_read(name, e) from e
    except ValueError as e:  # a NUL byte in the path
        raise ImageLoadError(f"{name}: cannot read the file ({e})") from e
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(name, st.st_mode)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise _cannot_read(name, e) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(name, st.st_mode)
        if st.st_size > max_bytes:
            raise ImageTooLargeError(
                f"{name}: the file is {st.st_size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit; "
                "send a smaller image"
            )
        # O_NONBLOCK means nothing to a regular file's reads. The first read asks for the whole file (one buffer, no
        # copy when it all comes at once); a file that grew since fstat is read on in 1 MB steps, up to the cap.
        chunks, left, want = [], max_bytes + 1, st.st_size + 1
        while left > 0:
            chunk = os.read(fd, min(left, want))
            want = 1 << 20
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), name
    except OSError as e:
        raise _cannot_read(name, e) from e
    finally:
        os.close(fd)


# Rows per block when scaling 16/32-bit greyscale to 8 bits: about a million pixels, so the float64 scratch
# stays near 8 MB. Scaling the whole 40-megapixel image at once took ~1.1 GB for a 77 KB PNG.
_GREY_BLOCK_PIXELS = 1 << 20


def read_image_bytes(path: str | Path, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of the image file at path, as load_image reads them: a regular file only (a device, FIFO or folder
    is an ImageLoadError before it is opened), at most max_bytes (ImageTooLargeError beyond)."""
    data, name = _read(path, max_bytes)
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{name}: the file is over the {max_bytes / 1e6:.0f} MB limit; send a smaller image")
    return data


def _grey_to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit greyscale (I;16*, I, F) to 8-bit "L", block by block.

    16-bit: v / 65535 * 255. 32-bit integer: v / max (negatives clip to 0). Float: (v - min) / (max - min) * 255.
    Each block uses the same float64 arithmetic as scaling the whole image at once, so the result is identical.
    """
    import numpy as np

    w, h = img.size
    if img.mode == "F":
        lo, hi = (float(v) for v in img.getextrema())
        offset, top = lo, max(hi - lo, 1e-12)
    elif img.mode.startswith("I;16"):
        offset, top = 0.0, 65535.0
    else:
        offset, top = 0.0, max(float(img.getextrema()[1]), 1.0)
    out = np.empty((h, w), dtype=np.uint8)
    rows = max(1, _GREY_BLOCK_PIXELS // max(w, 1))
    for y in range(0, h, rows):
        block = np.asarray(img.crop((0, y, w, min(h, y + rows))), dtype=np.float64)
        if offset:
            block -= offset
        block /= top
        block *= 255.0
        np.clip(block, 0, 255, out=block)
        out[y : y + rows] = block.astype(np.uint8)
    return Image.fromarray(out, "L")


# Rows per strip when compositing alpha on white: about 260,000 pixels, so each strip's scratch image is ~1 MB.
# Compositing the whole image at once made three extra full-size 4-byte-a-pixel images (a converted copy, the white
# background, the composite) besides the RGB result, and ImageOps.exif_transpose a fourth (it copies even when there
# is nothing to turn): a 40-megapixel 16-bit RGBA PNG peaked at ~930 MB of RSS. Now ~330 MB: the decoded image and
# the result, 4 bytes a pixel each (Pillow stores RGB in 4 bytes too), plus the strips.
_ALPHA_BLOCK_PIXELS = 1 << 18

_ALPHA_MODES = ("RGBA", "LA", "RGBa", "La", "PA", "P")


def _alpha_on_white(img: Image.Image) -> Image.Image:
    """RGBA/LA/RGBa/La/PA/P to 8-bit RGB, alpha composited on white, one strip of rows at a time.

    Each strip goes through exactly the Pillow calls the whole image used to (convert("RGBA"), alpha_composite onto
    opaque white, convert("RGB")); they work pixel by pixel, so the result is identical. Extra memory: the RGB result
    plus a few strip-sized images, instead of four full-size ones.
    """
    w, h = img.size
    out = Image.new("RGB", (w, h))
    rows = max(1, _ALPHA_BLOCK_PIXELS // max(w, 1))
    white = Image.new("RGBA", (w, min(rows, h)), (255, 255, 255, 255))
    for y in range(0, h, rows):
        strip = img.crop((0, y, w, min(h, y + rows)))
        if strip.mode != "RGBA":
            strip = strip.convert("RGBA")
        background = white if strip.size == white.size else white.crop((0, 0, w, strip.height))
        out.paste(Image.alpha_composite(background, strip).convert("RGB"), (0, y))
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB; alpha is composited on white. An RGB image is returned as it is."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _grey_to_8bit(img).convert("RGB")
    if img.mode in _ALPHA_MODES:
        return _alpha_on_white(img)
    return img.convert("RGB")


def load_image(
    src: bytes | bytearray | str | Path,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> Image.Image:
    """Load bytes or a path into a fully decoded, EXIF-oriented RGB image, or raise an ImageLoadError."""
    data, name = _read(src, max_bytes)
    if len(data) == 0:
        raise EmptyImageError(f"{name}: the file is empty (0 bytes); send a JPEG, PNG, WebP, GIF or BMP photo")
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"{name}: {len(data) / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB limit; send a smaller image"
        )
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise UnsupportedFormatError(
            f"{name}: this is {_describe(data[:512])}. Accepted formats: JPEG, PNG, WebP, GIF, BMP"
        )
    with warnings.catch_warnings():
        # Pillow warns on big images and on odd EXIF; both are handled explicitly here.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        old_flag = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            img = Image.open(io.BytesIO(data), formats=[fmt])
            w, h = img.size
            if w <= 0 or h <= 0:
                raise TruncatedImageError(f"{name}: the image header says it is {w}x{h} pixels")
            if w * h > max_pixels:
                raise ImageTooLargeError(
                    f"{name}: {w}x{h} = {w * h / 1e6:.0f} megapixels is over the {max_pixels / 1e6:.0f} "
                    "megapixel cap (a decompression bomb or a very large scan); resize it first"
                )
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # the first frame of an animation
            img.load()
        except ImageLoadError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ImageTooLargeError(
                f"{name}: the image has more pixels than the {max_pixels / 1e6:.0f} megapixel cap, "
                "a likely decompression bomb; resize it first"
            ) from e
        except MemoryError as e:
            raise ImageTooLargeError(f"{name}: the image is too large to decode") from e
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, ZeroDivisionError) as e:
            raise TruncatedImageError(
                f"{name}: the {fmt} data is truncated or corrupt and cannot be decoded ({e}); "
                "download or export it again"
            ) from e
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = old_flag
        try:
            out = _normalise(img, in_place=True)  # img is this function's own: turn it in place
            out.load()
        except MemoryError as e:
            raise ImageTooLargeError(f"{name}: the image is too large to convert to RGB") from e
        except (OSError, ValueError) as e:
            raise TruncatedImageError(f"{name}: the image cannot be converted to RGB ({e})") from e
    return out


def _orient(img: Image.Image, *, in_place: bool) -> Image.Image:
    """Apply the EXIF orientation. No copy when there is nothing to turn (ImageOps.exif_transpose always copies)."""
    try:
        img.load()
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            if in_place:
                ImageOps.exif_transpose(img, in_place=True)  # the old pixels are freed as the turned ones arrive
                return img
            return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block must not lose a good picture
        pass
    return img


def _normalise(img: Image.Image, *, in_place: bool) -> Image.Image:
    out = _to_rgb(_orient(img, in_place=in_place))
    # Always a new image, never the caller's (or the decoder's ImageFile, which still holds the file's bytes).
    return out.copy() if out is img else out


def normalise_image(img: Image.Image) -> Image.Image:
    """An already-open PIL image made what load_image returns: EXIF-oriented, 8-bit RGB, alpha on white.

    The caller's image is left as it is; the result is always a new image.
    """
    return _normalise(img, in_place=False)
