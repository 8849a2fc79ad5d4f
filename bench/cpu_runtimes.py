"""The SPADE generator (COCO architecture, 256x256) on the CPU runtimes a user could pick
instead of `spade`: OpenVINO in its default setting (bf16 on CPUs with AMX or AVX512-BF16),
OpenVINO with float32 forced, and ONNX Runtime. The model is bench/pytorch_spade.py's with
PyTorch's default initialisation, exported once through ONNX and, for `spade`, as an
official checkpoint folder with the same weights (`norm_G spadesyncbatch3x3`: plain
weights, no spectral norm to fold). For BENCHMARKS.md (see bench/cpu_runtimes.sh); never
for tests.

Modes:
  export   write the ONNX file, the checkpoint folder, semantics at batch 1 and 4 (`.npy`,
           what `spade synthesize --semantics` takes) and PyTorch's float32 outputs for them.
  steady   load every runtime, then time forwards per runtime and batch (median of --iters
           after one warm-up), with each output's error against PyTorch float32.
           Lines: `<runtime> batch <n>: <s> s/batch -> <x> images/s; error max <e> mean <e>`
  once     one whole run as a user would make it: load the exported model, one forward at
           --batch, write the output (.npy); time it from outside (the whole process).
  error    the error of an output file (`--out`, e.g. from `spade synthesize --out-npy`)
           against PyTorch float32 at --batch.
"""
import argparse
import os
import re
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_spade import Generator  # noqa: E402

RUNTIMES = ["openvino-default", "openvino-f32", "onnxruntime"]


def semantics(n, seed=7):
    """One-hot label maps of 12 random rectangles each (as `spade bench` draws them): maps
    are piecewise constant, as painted or segmented ones are."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, 256, 256), dtype=np.int64)
    for image in labels:
        for _ in range(12):
            x0, y0 = rng.integers(0, 256, 2)
            x1, y1 = rng.integers(x0, 256) + 1, rng.integers(y0, 256) + 1
            image[y0:y1, x0:x1] = rng.integers(0, 182)
    seg = torch.zeros(n, 184, 256, 256)
    return seg.scatter_(1, torch.from_numpy(labels)[:, None], 1.0)


# Official state-dict names of bench/pytorch_spade.py's blocks.
BLOCKS = ["head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3"]


def official_name(name):
    name = re.sub(r"^blocks\.(\d+)\.", lambda m: BLOCKS[int(m.group(1))] + ".", name)
    return name.replace(".norm.", ".param_free_norm.")


def write_checkpoint(model, folder):
    """`opt.txt` (the fixture's COCO options at full size, without spectral norm) and
    `latest_net_G.pth` under the official names."""
    os.makedirs(folder, exist_ok=True)
    fixtures = os.environ.get("SPADE_FIXTURES", os.path.join(os.path.dirname(__file__), "../../shared/fixtures"))
    with open(os.path.join(fixtures, "gen_coco_eval", "opt.txt")) as f:
        opt = f.read()
    for key, value in [("ngf", "64"), ("crop_size", "256"), ("load_size", "256"),
                       ("label_nc", "182"), ("norm_G", "spadesyncbatch3x3"), ("batchSize", "1")]:
        opt, n = re.subn(rf"^(\s*{key}): \S+", rf"\g<1>: {value}", opt, flags=re.M)
        assert n == 1, key
    with open(os.path.join(folder, "opt.txt"), "w") as f:
        f.write(opt)
    state = {official_name(k): v for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(folder, "latest_net_G.pth"))


def export(path):
    """The generator with PyTorch's default initialisation (unit running variances), as ONNX
    with a dynamic batch and as a checkpoint folder; semantics and float32 outputs at batch
    1 and 4."""
    if os.path.exists(path):
        return
    torch.manual_seed(0)
    model = Generator().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.fill_(1.0)
        write_checkpoint(model, path + ".checkpoint")
        torch.onnx.export(
            model, (semantics(1),), path + ".partial", input_names=["seg"], output_names=["image"],
            dynamic_axes={"seg": {0: "n"}, "image": {0: "n"}}, opset_version=17, dynamo=False,
        )
        for n in (1, 4):
            np.save(f"{path}.semantics{n}.npy", semantics(n).numpy())
            np.save(f"{path}.reference{n}.npy", model(semantics(n)).numpy())
    os.replace(path + ".partial", path)


def errors(out, reference):
    err = np.abs(out - reference)
    return f"error max {err.max():.2e} mean {err.mean():.2e} (output max |x| {np.abs(reference).max():.2e})"


def load(runtime, path):
    """A callable seg -> image for `runtime`."""
    if runtime.startswith("openvino"):
        import openvino as ov
        config = {} if runtime == "openvino-default" else {"INFERENCE_PRECISION_HINT": "f32"}
        compiled = ov.Core().compile_model(path, "CPU", config)
        request = compiled.create_infer_request()
        return lambda seg: request.infer({0: seg})[0]
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda seg: session.run(None, {"seg": seg})[0]


def steady(args):
    runs = {r: load(r, args.model) for r in args.runtimes}
    for n in args.batch:
        seg = semantics(n).numpy()
        reference = np.load(f"{args.model}.reference{n}.npy")
        for name, run in runs.items():
            out = run(seg)
            times = []
            for _ in range(args.iters):
                start = time.perf_counter()
                out = run(seg)
                times.append(time.perf_counter() - start)
            median = sorted(times)[len(times) // 2]
            print(f"{name} batch {n}: {median:.3f} s/batch -> {n / median:.3f} images/s; "
                  f"{errors(out, reference)}", flush=True)


def once(args):
    run = load(args.runtimes[0], args.model)
    np.save(args.out, run(np.load(f"{args.model}.semantics{args.batch[0]}.npy")))


def error(args):
    n = args.batch[0]
    print(f"{args.out} batch {n}: {errors(np.load(args.out), np.load(f'{args.model}.reference{n}.npy'))}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["export", "steady", "once", "error"])
    parser.add_argument("--model", default="/tmp/spade_coco.onnx")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=RUNTIMES)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--out", default="/tmp/spade_runtime_out.npy")
    args = parser.parse_args()
    export(args.model)
    if args.mode == "steady":
        steady(args)
    elif args.mode == "once":
        once(args)
    elif args.mode == "error":
        error(args)


if __name__ == "__main__":
    main()
