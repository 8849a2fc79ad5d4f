"""Writes a small training set in the official `custom` layout (`DIR/label/*.png` class ids,
`DIR/image/*.jpg` photos) for timing training loops side by side: piecewise-constant label
maps (smooth random fields, arg-maxed into `--classes` regions) and photos coloured per class
with noise. The content only has to be realistic in shape, not in looks: what a training
iteration costs does not depend on what the pixels show.

Usage: python bench/make_train_dataset.py DIR [--count 48] [--size 128] [--classes 12]
"""
import argparse
import os

import numpy as np
from PIL import Image


def smooth_field(rng, size, cells):
    coarse = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    os.makedirs(os.path.join(args.dir, "label"), exist_ok=True)
    os.makedirs(os.path.join(args.dir, "image"), exist_ok=True)
    colours = rng.integers(0, 256, (args.classes, 3))
    for i in range(args.count):
        fields = np.stack([smooth_field(rng, args.size, 6) for _ in range(args.classes)])
        labels = fields.argmax(0).astype(np.uint8)
        photo = colours[labels] + rng.normal(0, 12, (args.size, args.size, 3))
        photo = np.clip(photo, 0, 255).astype(np.uint8)
        Image.fromarray(labels).save(os.path.join(args.dir, "label", f"{i:05d}.png"))
        Image.fromarray(photo).save(os.path.join(args.dir, "image", f"{i:05d}.jpg"), quality=95)


if __name__ == "__main__":
    main()
