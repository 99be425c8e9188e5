"""Generates the small synthetic test images in pil/ and the Pillow reference outputs in pil_expected.safetensors.

Run from this folder with Pillow 13 (libjpeg-turbo) + numpy + safetensors:  python3 gen_pil_cases.py
The Rust tests only read the outputs; Python is not needed to run them.

Reference = what the FG-CLIP processors do with Pillow:
  decode.<file>            np.asarray(Image.open(file).convert("RGB"))                      uint8 [H, W, 3]
  resize.<filter>.<W>x<H>  np.asarray(src.resize((W, H), filter))  (src = resize_src.png)    uint8 [H, W, 3]
"""
import struct
import zlib

import numpy as np
from PIL import Image, features
from safetensors.numpy import save_file

assert features.check_feature("libjpeg_turbo")
rng = np.random.default_rng(1234)


def synthetic(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / 5.0 + y / 11.0)
    g = 255.0 * x / max(w - 1, 1)
    b = 255.0 * (((x // 4) + (y // 4)) % 2) * 0.7 + 40 * np.cos(y / 3.0)
    a = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def png_raw(path, arr, color_type, bit_depth):
    """Minimal PNG writer (for 16-bit colour types Pillow cannot save)."""
    h, w = arr.shape[:2]
    if bit_depth == 16:
        rows = arr.astype(">u2").reshape(h, -1).view(np.uint8)
    else:
        rows = arr.reshape(h, -1).astype(np.uint8)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


out = {}
files = []
base = synthetic(41, 29)
im = Image.fromarray(base)

# JPEG variants (sizes not multiples of the MCU to exercise edge handling)
for name, kw in {
    "q90_420.jpg": dict(quality=90, subsampling=2),
    "q75_422.jpg": dict(quality=75, subsampling=1),
    "q95_444.jpg": dict(quality=95, subsampling=0),
    "progressive.jpg": dict(quality=85, progressive=True),
    "optimized.jpg": dict(quality=60, optimize=True),
}.items():
    im.save(f"pil/{name}", **kw)
    files.append(name)
im.convert("L").save("pil/gray.jpg", quality=90)
files.append("gray.jpg")
im.convert("CMYK").save("pil/cmyk.jpg", quality=90)
files.append("cmyk.jpg")

# PNG variants
rgba = np.concatenate([base, rng.integers(0, 256, (29, 41, 1), dtype=np.uint8)], -1)
Image.fromarray(rgba, "RGBA").save("pil/rgba.png")
Image.fromarray(base[..., 0], "L").save("pil/l.png")
Image.fromarray(rgba[..., [0, 3]], "LA").save("pil/la.png")
pal = im.quantize(colors=37)
pal.info["transparency"] = 5
pal.save("pil/p_trns.png", transparency=5)
Image.fromarray(base[..., 0] > 128).save("pil/bilevel.png")
wide = (base.astype(np.uint16) * 257 + rng.integers(0, 257, base.shape)).astype(np.uint16)
png_raw("pil/rgb16.png", wide, 2, 16)
png_raw("pil/rgba16.png", np.concatenate([wide, wide[..., :1]], -1), 6, 16)
png_raw("pil/la16.png", np.stack([wide[..., 1], wide[..., 2]], -1), 4, 16)
png_raw("pil/gray16.png", (wide[..., 0] // 97).astype(np.uint16), 0, 16)  # values 0..~675 (PIL clips at 255)
files += ["rgba.png", "l.png", "la.png", "p_trns.png", "bilevel.png", "rgb16.png", "rgba16.png", "la16.png", "gray16.png"]

for f in files:
    src = Image.open(f"pil/{f}")
    out[f"decode.{f}"] = np.ascontiguousarray(np.asarray(src.convert("RGB")))
    print(f, src.mode, src.size)

# Resampling cases
src = synthetic(57, 43)
Image.fromarray(src).save("pil/resize_src.png")
for filt, fname in [(Image.Resampling.BICUBIC, "bicubic"), (Image.Resampling.BILINEAR, "bilinear")]:
    for w, h in [(20, 15), (64, 64), (7, 3), (100, 80), (57, 10), (13, 43), (90, 70), (1, 1), (56, 44), (29, 22)]:
        out[f"resize.{fname}.{w}x{h}"] = np.ascontiguousarray(np.asarray(Image.fromarray(src).resize((w, h), filt)))

save_file(out, "pil_expected.safetensors")
print(len(out), "tensors")
