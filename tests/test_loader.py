"""The one image loader: every accepted format and mode, and one clear error for each bad input."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from snake_model.loader import (
    EmptyImageError,
    ImageLoadError,
    ImageTooLargeError,
    TruncatedImageError,
    UnsupportedFormatError,
    load_image,
)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_each_allowed_format_loads_as_rgb_from_bytes_and_path(tmp_path, fmt):
    data = encode(Image.new("RGB", (31, 17), (200, 30, 30)), fmt)
    p = tmp_path / "img.bin"  # the extension means nothing
    p.write_bytes(data)
    for src in (data, p, str(p)):
        im = load_image(src)
        assert im.mode == "RGB" and im.size == (31, 17)
        r, g, b = im.getpixel((15, 8))
        assert r > 150 and g < 90 and b < 90


def test_a_png_named_jpg_is_judged_by_its_bytes(tmp_path):
    p = tmp_path / "photo.jpg"
    p.write_bytes(encode(Image.new("RGB", (8, 8), "blue"), "PNG"))
    assert load_image(p).getpixel((0, 0)) == (0, 0, 255)


def test_cmyk_jpeg_is_converted_to_rgb():
    im = load_image(encode(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), "JPEG"))
    r, g, b = im.getpixel((5, 5))
    assert im.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_rgba_alpha_is_composited_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    im = load_image(encode(img, "PNG"))
    assert im.getpixel((3, 3)) == (255, 255, 255)
    assert im.getpixel((0, 0)) == (255, 0, 0)


def test_la_and_palette_with_transparency_become_rgb_on_white():
    la = Image.new("LA", (4, 4), (0, 0))
    assert load_image(encode(la, "PNG")).getpixel((1, 1)) == (255, 255, 255)
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    assert load_image(encode(p, "PNG")).getpixel((1, 1)) == (0, 255, 0)
    p.info["transparency"] = 1
    assert load_image(encode(p, "PNG", transparency=1)).getpixel((1, 1)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    img = Image.new("I;16", (4, 4), 32768)
    im = load_image(encode(img, "PNG"))
    v = im.getpixel((1, 1))
    assert im.mode == "RGB" and 120 <= v[0] <= 135 and v[0] == v[1] == v[2]


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise when displayed
    im = load_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert im.size == (20, 40)


def test_a_corrupt_exif_block_does_not_lose_the_picture():
    data = bytearray(encode(Image.new("RGB", (12, 10), "red"), "JPEG", exif=b"Exif\x00\x00garbage-not-tiff"))
    im = load_image(bytes(data))
    assert im.size == (12, 10)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    r, g, b = load_image(buf.getvalue()).getpixel((3, 3))
    assert r > 200 and b < 50


def test_zero_bytes_raise_empty_image_error(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    for src in (b"", p):
        with pytest.raises(EmptyImageError, match="empty"):
            load_image(src)


def test_truncated_jpeg_raises_truncated_image_error():
    data = encode(Image.effect_noise((200, 200), 60).convert("RGB"), "JPEG")
    with pytest.raises(TruncatedImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_html_named_jpg_raises_unsupported_format_error_naming_html(tmp_path):
    p = tmp_path / "snake.jpg"
    p.write_text("<!DOCTYPE html><html><head><title>403</title></head><body>Forbidden</body></html>")
    with pytest.raises(UnsupportedFormatError, match="HTML page"):
        load_image(p)


def test_svg_raises_unsupported_format_error_naming_svg():
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    with pytest.raises(UnsupportedFormatError, match="SVG"):
        load_image(svg)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_decompression_bomb_is_refused_before_decoding():
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)  # 10 gigapixels, greyscale
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
    bomb += _png_chunk(b"IEND", b"")
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        load_image(bomb)


def test_pixel_cap_is_a_parameter():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageTooLargeError):
        load_image(data, max_pixels=5_000)
    assert load_image(data, max_pixels=10_000).size == (100, 100)


def test_byte_cap_refuses_big_files(tmp_path):
    p = tmp_path / "big.png"
    p.write_bytes(encode(Image.effect_noise((300, 300), 80).convert("RGB"), "PNG"))
    with pytest.raises(ImageTooLargeError, match="MB"):
        load_image(p, max_bytes=1000)


@pytest.mark.parametrize(
    "blob",
    [b"%PDF-1.4 ...", b"just some text", b"\x00\x01\x02\x03" * 10, b"GIF89a", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"],
)
def test_every_bad_input_is_an_image_load_error_and_a_value_error(blob):
    with pytest.raises(ImageLoadError) as info:
        load_image(blob)
    assert isinstance(info.value, ValueError) and str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ImageLoadError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")


def _finishes(fn, seconds: float = 10.0):
    """fn() run in a thread: its exception (or result), or a failure when it is still running after `seconds`."""
    import threading

    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return t.is_alive(), box


def _unblock_fifo(path: Path) -> None:
    """Open and close the write end, so a reader stuck in open() of the FIFO gets EOF and its thread ends."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "photo.png"  # a named pipe with an image name, in a folder of photos
    os.mkfifo(fifo)
    try:
        stuck, box = _finishes(lambda: load_image(fifo))
        assert not stuck, "load_image blocked on a FIFO"
        assert isinstance(box.get("error"), ImageLoadError), box
        assert "not a regular file" in str(box["error"]) and "photo.png" in str(box["error"])
    finally:
        _unblock_fifo(fifo)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_link_to_a_device_is_refused_without_reading_it(tmp_path, monkeypatch):
    # A stray link in a photo folder. /dev/zero (st_size 0, endless bytes) is what hung the loader; /dev/null is the
    # same kind of file (a character device), and a regression here fails instead of reading without end.
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/null")
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    stuck, box = _finishes(lambda: load_image(link, max_bytes=1000))
    assert not stuck
    assert isinstance(box.get("error"), ImageLoadError) and "not a regular file" in str(box["error"]), box
    assert "device" in str(box["error"])
    assert opened == [], "a device must not even be opened"


def test_a_folder_is_refused_as_not_a_regular_file(tmp_path):
    d = tmp_path / "photo.jpg"
    d.mkdir()
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(d)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_path_swapped_for_a_fifo_after_the_stat_is_refused_by_fstat(tmp_path, monkeypatch):
    import snake_model.loader as loader

    good = tmp_path / "good.png"
    good.write_bytes(encode(Image.new("RGB", (4, 4), "red"), "PNG"))
    fifo = tmp_path / "swapped.png"
    os.mkfifo(fifo)
    real_stat = os.stat
    # The race: the path was a regular file when it was stat'ed, and is a FIFO (with no writer) when it is opened.
    monkeypatch.setattr(loader.os, "stat", lambda path, *a, **k: real_stat(good if path == fifo else path, *a, **k))
    try:
        stuck, box = _finishes(lambda: load_image(fifo))
        assert not stuck, "opening the swapped-in FIFO blocked"
        assert isinstance(box.get("error"), ImageLoadError) and "not a regular file" in str(box["error"]), box
    finally:
        _unblock_fifo(fifo)


def test_reads_stop_at_the_byte_cap_whatever_the_size_said(tmp_path, monkeypatch):
    import snake_model.loader as loader

    p = tmp_path / "growing.png"
    p.write_bytes(encode(Image.new("RGB", (4, 4)), "PNG") + b"\0" * 5_000_000)
    real_stat, real_fstat = os.stat, os.fstat

    def small(st):  # the file "was" 10 bytes when it was looked at, and has grown since
        return os.stat_result((*st[:6], 10, *st[7:10]))

    def fake_stat(path, *a, **k):
        st = real_stat(path, *a, **k)
        return small(st) if path == p else st

    monkeypatch.setattr(loader.os, "stat", fake_stat)
    monkeypatch.setattr(loader.os, "fstat", lambda fd: small(real_fstat(fd)))
    data, _ = loader._read(p, 100_000)
    assert len(data) == 100_001, "read past the cap (or stopped at the stale size)"
    with pytest.raises(ImageTooLargeError):
        load_image(p, max_bytes=100_000)
    assert load_image(p, max_bytes=6_000_000).size == (4, 4)


def _old_grey_to_rgb(img: Image.Image) -> Image.Image:
    """The whole-image float64 conversion the loader used before it worked block by block (the reference)."""
    import numpy as np

    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / max(hi - lo, 1e-12) * 255.0).astype("uint8")
    else:
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / top * 255.0, 0, 255).astype("uint8")
    return Image.fromarray(arr, "L").convert("RGB")


@pytest.mark.parametrize("block", [1 << 20, 7, 300])
def test_sixteen_and_thirty_two_bit_greyscale_convert_exactly_as_before(monkeypatch, block):
    import numpy as np

    from snake_model import loader

    if hasattr(loader, "_GREY_BLOCK_PIXELS"):
        monkeypatch.setattr(loader, "_GREY_BLOCK_PIXELS", block)  # several blocks, a short last one
    every16 = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(every16[:, :255]),  # I;16, every 16-bit value but the last column
        Image.frombytes("I;16B", (256, 256), every16.astype(">u2").tobytes()),
        Image.fromarray(rng.integers(-5000, 900_000, (37, 41), dtype=np.int32), "I"),
        Image.fromarray(rng.normal(3.0, 50.0, (37, 41)).astype(np.float32), "F"),
        Image.new("I", (5, 3), 0),
        Image.new("F", (5, 3), 2.5),
    ]
    for img in images:
        assert np.array_equal(np.asarray(loader._to_rgb(img)), np.asarray(_old_grey_to_rgb(img))), img.mode
    png = load_image(encode(images[0], "PNG"))  # through the decoder as well
    assert np.array_equal(np.asarray(png), np.asarray(_old_grey_to_rgb(images[0])))


def test_sixteen_bit_greyscale_does_not_make_full_size_float64_copies():
    # A 77 KB 16-bit PNG of 6300x6300 used to peak at ~1.1 GB: whole-image float64 arrays, 8 bytes a pixel, several
    # at once. numpy reports its buffers to tracemalloc; Pillow's image memory is not counted. At 4 megapixels the
    # old way allocates >= 64 MB of float64; block by block stays near 8 MB of scratch plus the 4 MB 8-bit result.
    # (Bench: python /tmp/audit10/mem.py on the 6300x6300 PNG: maxrss 1092 MB before, 372 MB after; 8-bit RGB 321.)
    import tracemalloc

    from snake_model.loader import _to_rgb

    img = Image.new("I;16", (2000, 2000), 40000)
    tracemalloc.start()
    try:
        out = _to_rgb(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.getpixel((1999, 1999)) == (155, 155, 155)
    assert peak < 24e6, f"peak {peak / 1e6:.0f} MB of numpy arrays"


def _png16_rgba(pixels) -> bytes:
    """A 16-bit RGBA PNG (Pillow cannot write one) from an H x W x 4 array of 0..65535 values."""
    import numpy as np

    arr = np.asarray(pixels, dtype=">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in arr)
    ihdr = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], 16, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def test_sixteen_bit_rgba_is_composited_on_white_with_these_exact_pixels():
    # Pillow keeps the high byte of each 16-bit sample; then out = round((c * a + 255 * (255 - a)) / 255).
    png = _png16_rgba(
        [
            [
                [0xFFFF, 0, 0, 0xFFFF],  # opaque red
                [0xFFFF, 0, 0, 0x8000],  # a = 128: 255, 0*128/255 + 127 = 127, 127
                [0, 0, 0, 0x8000],  # half-transparent black: 127 grey
                [0xC0FF, 0x4000, 0x0080, 0x4000],  # c = 192, 64, 0 at a = 64: 239.19, 207.06, 191
                [0x1234, 0x5678, 0x9ABC, 0],  # fully transparent: white whatever the colour
                [0, 0, 0, 0x00FF],  # alpha's high byte is 0: transparent
                [0x00FF, 0xFFFF, 0x8000, 0xFF00],  # alpha's high byte is 255: opaque 0, 255, 128
            ]
        ]
    )
    im = load_image(png)
    assert im.mode == "RGB" and im.size == (7, 1)
    assert [im.getpixel((x, 0)) for x in range(7)] == [
        (255, 0, 0),
        (255, 127, 127),
        (127, 127, 127),
        (239, 207, 191),
        (255, 255, 255),
        (255, 255, 255),
        (0, 255, 128),
    ]


def _old_alpha_to_rgb(img: Image.Image) -> Image.Image:
    """The whole-image compositing the loader used before it worked strip by strip (the reference)."""
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


@pytest.mark.parametrize("block", [1 << 20, 1, 7, 300])
def test_alpha_compositing_strip_by_strip_is_exactly_the_whole_image_result(monkeypatch, block):
    import numpy as np

    from snake_model import loader

    if hasattr(loader, "_ALPHA_BLOCK_PIXELS"):
        monkeypatch.setattr(loader, "_ALPHA_BLOCK_PIXELS", block)  # several strips, a short last one
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (41, 37, 4), dtype=np.uint8)
    p = Image.fromarray(rgba[..., 0] % 16, "L").convert("P")
    p.putpalette(list(rng.integers(0, 256, 768)))
    p_index = p.copy()
    p_index.info["transparency"] = 3
    p_alpha = p.copy()
    p_alpha.info["transparency"] = bytes(rng.integers(0, 256, 16, dtype=np.uint8))
    images = [
        Image.fromarray(rgba, "RGBA"),
        Image.fromarray(rgba, "RGBA").convert("RGBa"),
        Image.fromarray(rgba[..., :2].copy(), "LA"),
        p,
        p_index,
        p_alpha,
        p.convert("PA"),
        Image.fromarray(rgba[:1, :1], "RGBA"),
    ]
    for img in images:
        kept = img.tobytes()
        out = loader.normalise_image(img)
        assert out.mode == "RGB" and out.size == img.size
        assert np.array_equal(np.asarray(out), np.asarray(_old_alpha_to_rgb(img))), img.mode
        assert img.tobytes() == kept  # the caller's image is not touched
    big = rng.integers(0, 65536, (29, 53, 4))
    ref = _old_alpha_to_rgb(Image.open(io.BytesIO(_png16_rgba(big))))
    assert np.array_equal(np.asarray(load_image(_png16_rgba(big))), np.asarray(ref))


def test_exif_turn_of_an_rgba_image_leaves_the_callers_image_alone():
    from snake_model.loader import normalise_image

    img = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise when displayed
    img.info["exif"] = exif.tobytes()
    out = normalise_image(img)
    assert out.size == (20, 40) and out.getpixel((19, 0)) == (0, 0, 255) and out.getpixel((0, 0)) == (255, 255, 255)
    assert img.size == (40, 20) and img.getpixel((0, 0)) == (0, 0, 255, 255)
    rgb = Image.new("RGB", (3, 2), "red")
    assert normalise_image(rgb) is not rgb  # always a new image
    im = load_image(encode(img, "PNG", exif=exif.tobytes()))
    assert im.size == (20, 40) and im.getpixel((19, 0)) == (0, 0, 255)


def test_truncated_sixteen_bit_rgba_png_is_a_clear_error():
    import numpy as np

    png = _png16_rgba(np.random.default_rng(0).integers(0, 65536, (60, 70, 4)))
    with pytest.raises(TruncatedImageError, match="truncated or corrupt"):
        load_image(png[: len(png) // 2])


_PEAK_SCRIPT = """
import sys
from snake_model.loader import load_image

def peak_rss():  # VmHWM: this process's own peak, from its exec on (ru_maxrss would count the parent's RSS too)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

data = open(sys.argv[1], "rb").read()
load_image(open(sys.argv[2], "rb").read())  # warm up: every code path once, on a tiny image
before = peak_rss()
im = load_image(data)
print(im.size[0], im.size[1], im.mode, peak_rss() - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc/self/status (VmHWM)")
def test_sixteen_bit_rgba_loads_without_full_size_compositing_copies(tmp_path):
    # A 39.7-megapixel 16-bit RGBA PNG (1.7 MB on disk) used to peak at ~930 MB: the decoded RGBA, an EXIF "turn"
    # copy, a converted copy, a white background, the composite and the RGB result, 4 bytes a pixel each (Pillow
    # keeps RGB in 4 bytes too): 24 bytes a pixel. Now the decoded image, the result and ~1 MB strips: ~9 bytes a
    # pixel here, ~330 MB for the 39.7 MP file. Pillow's memory is invisible to tracemalloc, so this measures the peak
    # RSS of a fresh interpreter. Bench: python /tmp/h_loader/mem.py on the 6300x6300 PNG (maxrss 930 -> 329 MB).
    import subprocess

    import numpy as np

    w, h = 2000, 2000
    x = np.arange(w) % 64
    rows = []
    for y in range(0, h, 8):  # rows repeat in eights and columns every 64 pixels: a small file, varied alpha
        px = np.stack([x * 37 + y * 11, x * 101 + y, np.full(w, y * 257), (x // 7) * 4099 + (y // 5) * 977], axis=1)
        rows += [px % 65536] * 8
    big, tiny = tmp_path / "big.png", tmp_path / "tiny.png"
    big.write_bytes(_png16_rgba(np.stack(rows)))
    tiny.write_bytes(_png16_rgba(np.full((3, 5, 4), 0x8000)))
    del rows
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    res = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(big), str(tiny)],
        capture_output=True,
        text=True,
        cwd=repo,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    out_w, out_h, mode, grew = res.stdout.split()
    assert (int(out_w), int(out_h), mode) == (w, h, "RGB"), res.stdout
    per_pixel = int(grew) / (w * h)
    assert per_pixel < 16, f"loading peaked {int(grew) / 1e6:.0f} MB over the baseline, {per_pixel:.1f} bytes a pixel"


def test_read_image_bytes_and_sha256_file_refuse_a_fifo_without_blocking(tmp_path):
    from snake_model.artifact import sha256_file
    from snake_model.loader import ImageLoadError, ImageTooLargeError, read_image_bytes

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)  # no writer: a plain open or read would block for ever
    with pytest.raises(ImageLoadError, match="not a regular file"):
        read_image_bytes(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        sha256_file(fifo)
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 10)
    assert read_image_bytes(f) == b"x" * 10
    with pytest.raises(ImageTooLargeError):
        read_image_bytes(f, max_bytes=9)
    assert sha256_file(f) == hashlib.sha256(b"x" * 10).hexdigest()
