"""Writes the JPEG test data of tests/jpeg.rs with Pillow (the reference decoder):
rgb420.jpg (4:2:0) and cmyk.jpg, each beside Pillow's `convert('RGB')` of it as raw RGB
bytes. zune_idct_panic.jpg is a fuzzer finding (it panicked the `image` crate's decoder).

    bench/.venv/bin/python crates/spade-model/tests/data/make_jpegs.py
"""
from pathlib import Path

import numpy as np
from PIL import Image

here = Path(__file__).resolve().parent
rng = np.random.default_rng(7)
y, x = np.mgrid[0:24, 0:20]
rgb = np.stack([(x * 12) % 256, (y * 9 + x * 3) % 256, (255 - y * 7) % 256], -1)
rgb = (rgb + rng.integers(-20, 20, rgb.shape)).clip(0, 255).astype(np.uint8)
Image.fromarray(rgb, "RGB").save(here / "rgb420.jpg", quality=85, subsampling=2)
cmyk = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
Image.fromarray(cmyk, "CMYK").save(here / "cmyk.jpg", quality=90)
for name in ("rgb420", "cmyk"):
    decoded = Image.open(here / f"{name}.jpg").convert("RGB")
    (here / f"{name}.rgb").write_bytes(np.asarray(decoded).tobytes())
