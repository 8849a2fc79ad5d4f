"""Writes the fuzz targets' seed corpus (fuzz/seeds/<target>/): small valid inputs of every
kind each target parses, from which libFuzzer mutates. Needs Pillow and PyTorch (the
bench venv has both); the output is committed, so this runs only when seeds change:

    bench/.venv/bin/python fuzz/make_seeds.py
"""
import base64
import io
import json
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent / "seeds"
BUNDLED = Path(__file__).resolve().parent.parent / "crates/spade-landscapes/model/landscapes.safetensors"


def write(target, name, data):
    folder = ROOT / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def png(image, **options):
    out = io.BytesIO()
    image.save(out, format="PNG", **options)
    return out.getvalue()


def masks():
    """Label maps as users send them: 8-bit and 16-bit grey ids, palette PNGs at 1, 2, 4
    and 8 bits (Pillow picks the depth from the palette size), colour masks."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, (12, 16), dtype=np.uint8)
    out = {"grey8.png": png(Image.fromarray(ids, "L"))}
    out["grey16.png"] = png(Image.fromarray(ids.astype(np.uint16) * 300))
    for bits, colours in ((1, 2), (2, 4), (4, 16), (8, 200)):
        pal = Image.fromarray((ids % colours).astype(np.uint8), "P")
        pal.putpalette([(i * 37) % 256 for i in range(3 * colours)])
        out[f"palette{bits}.png"] = png(pal, bits=bits)
    colour = np.stack([ids * 20, ids * 7, 255 - ids * 20], axis=-1).astype(np.uint8)
    out["colour.png"] = png(Image.fromarray(colour, "RGB"))
    out["grey_alpha.png"] = png(Image.fromarray(ids, "L").convert("LA"))
    return out


def photos():
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8), "RGB")
    out = {"photo.png": png(rgb)}
    for fmt, ext in (("JPEG", "jpg"), ("WEBP", "webp"), ("BMP", "bmp"), ("PPM", "ppm")):
        buf = io.BytesIO()
        rgb.save(buf, format=fmt)
        out[f"photo.{ext}"] = buf.getvalue()
    buf = io.BytesIO()
    rgb.convert("L").save(buf, format="JPEG")
    out["grey.jpg"] = buf.getvalue()
    return out


def requests(mask_seeds, photo_seeds):
    """Byte 0: content type (bits 0-1: png, json, multipart, octet-stream), model (bit 2:
    coco, vae), route (bit 3: synthesize, encode-style); then the query, a newline, the body."""
    label = mask_seeds["grey8.png"]
    colour = mask_seeds["colour.png"]
    style = photo_seeds["photo.jpg"]
    b64 = lambda data: base64.b64encode(data).decode()

    def seed(ct, model, encode, query, body):
        return bytes([ct | model << 2 | encode << 3]) + query.encode() + b"\n" + body

    def multipart(fields):
        out = b""
        for name, value in fields:
            out += b"--fuzz\r\n"
            out += f'Content-Disposition: form-data; name="{name}"'.encode()
            if isinstance(value, bytes):
                out += f'; filename="{name}.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + value
            else:
                out += b"\r\n\r\n" + value.encode()
            out += b"\r\n"
        return out + b"--fuzz--\r\n"

    return {
        "png.bin": seed(0, 0, 0, "seed=3&format=jpeg", label),
        "png_colour_fit.bin": seed(0, 0, 0, "fit=mask&width=64&height=48", colour),
        "json.bin": seed(1, 0, 0, "", json.dumps({"label": b64(label), "instance": b64(label), "seed": 7, "format": "png"}).encode()),
        "json_latent.bin": seed(1, 1, 0, "", json.dumps({"label": b64(label), "latent": [0.5] * 8}).encode()),
        "json_style.bin": seed(1, 1, 0, "model=vae", json.dumps({"label": "data:image/png;base64," + b64(label), "style": b64(style)}).encode()),
        "multipart.bin": seed(2, 0, 0, "", multipart([("label", label), ("instance", label), ("seed", "5"), ("width", "32"), ("height", "32")])),
        "multipart_style.bin": seed(2, 1, 0, "", multipart([("label", colour), ("style", style), ("latent", "0,1,2,3,4,5,6,7")])),
        "encode_png.bin": seed(0, 1, 1, "seed=1", style),
        "encode_multipart.bin": seed(2, 1, 1, "", multipart([("image", style)])),
        "encode_json.bin": seed(1, 1, 1, "", json.dumps({"image": b64(style)}).encode()),
    }


def state_dicts():
    """Tiny state dicts as torch.save writes them, zip and legacy: a conv's spectral-norm
    tensors, a bias, an int64 counter, and two views of one storage."""
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    state = {
        "conv.weight_orig": torch.randn(2, 3, 3, 3),
        "conv.weight_u": torch.randn(2),
        "conv.weight_v": torch.randn(27),
        "conv.bias": torch.zeros(2),
        "norm.num_batches_tracked": torch.tensor(5),
        "shared.a": base[:2],
        "shared.b": base[2:].t(),
        "half": torch.ones(3, dtype=torch.float16),
    }
    out = {}
    for name, legacy in (("zip.pth", False), ("legacy.pth", True)):
        buf = io.BytesIO()
        torch.save(state, buf, _use_new_zipfile_serialization=not legacy)
        out[name] = buf.getvalue()
    return out


def opt_txts():
    options = {
        "aspect_ratio": "1.0", "batchSize": "1", "contain_dontcare_label": "True",
        "crop_size": "256", "dataset_mode": "coco", "gpu_ids": "0", "init_type": "xavier",
        "label_nc": "182", "load_size": "286", "name": "coco_pretrained", "ngf": "64",
        "no_instance": "False", "norm_G": "spectralspadesyncbatch3x3",
        "num_upsampling_layers": "normal", "preprocess_mode": "resize_and_crop",
        "semantic_nc": "184", "use_vae": "False", "z_dim": "256",
    }
    lines = ["----------------- Options ---------------"]
    lines += [f"{k:>25}: {v:<30}" for k, v in sorted(options.items())]
    lines.append("----------------- End -------------------")
    coco = "\n".join(lines) + "\n"
    city = coco.replace("coco", "cityscapes").replace("1.0", "2.0").replace("normal", "more")
    return {"coco.txt": coco.encode(), "cityscapes.txt": city.encode(),
            "vae.txt": coco.replace("use_vae: False", "use_vae: True").encode()}


def safetensors_files():
    """A converted file's layout: the bundled model's header metadata (config, classes) over
    two small tensors."""
    raw = BUNDLED.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    metadata = json.loads(raw[8 : 8 + length])["__metadata__"]
    tensors = {"netG.fc.weight": np.ones((2, 3), np.float16), "netE.fc_mu.bias": np.zeros(4, np.float32)}
    header, data = {"__metadata__": metadata}, b""
    for name, value in tensors.items():
        dtype = {np.float16: "F16", np.float32: "F32"}[value.dtype.type]
        header[name] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [len(data), len(data) + value.nbytes]}
        data += value.tobytes()
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return {"converted.safetensors": struct.pack("<Q", len(text)) + text + data}


def main():
    mask_seeds, photo_seeds = masks(), photos()
    for target, seeds in (
        ("decode_mask", mask_seeds),
        ("decode_photo", photo_seeds),
        ("request", requests(mask_seeds, photo_seeds)),
        ("pth", state_dicts()),
        ("opt_txt", opt_txts()),
        ("safetensors", safetensors_files()),
    ):
        for name, data in seeds.items():
            write(target, name, data)


if __name__ == "__main__":
    main()
