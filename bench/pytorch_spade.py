"""Times the SPADE generator in PyTorch eager on CPU, for side-by-side comparison with
`spade bench` (see bench/compare.sh). A minimal definition of the official architecture
written for timing only: random weights, eval mode, spectral norm folded away (as at
inference), batch norm from running statistics.

Prints one line per configuration: `pytorch <layout> batch <n>: <seconds> s/batch`.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Spade(nn.Module):
    def __init__(self, channels, label_nc, hidden=128, k=3):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, k, padding=k // 2), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, k, padding=k // 2)
        self.mlp_beta = nn.Conv2d(hidden, channels, k, padding=k // 2)

    def forward(self, x, seg):
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return self.norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class ResBlock(nn.Module):
    def __init__(self, fin, fout, label_nc):
        super().__init__()
        mid = min(fin, fout)
        self.learned = fin != fout
        self.conv_0 = nn.Conv2d(fin, mid, 3, padding=1)
        self.conv_1 = nn.Conv2d(mid, fout, 3, padding=1)
        self.norm_0 = Spade(fin, label_nc)
        self.norm_1 = Spade(mid, label_nc)
        if self.learned:
            self.conv_s = nn.Conv2d(fin, fout, 1, bias=False)
            self.norm_s = Spade(fin, label_nc)

    def forward(self, x, seg):
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class Generator(nn.Module):
    def __init__(self, label_nc=184, ngf=64, crop=256):
        super().__init__()
        self.sw = self.sh = crop // 32
        nf = ngf
        self.fc = nn.Conv2d(label_nc, 16 * nf, 3, padding=1)
        widths = [(16, 16), (16, 16), (16, 16), (16, 8), (8, 4), (4, 2), (2, 1)]
        self.blocks = nn.ModuleList(ResBlock(a * nf, b * nf, label_nc) for a, b in widths)
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, seg):
        x = self.fc(F.interpolate(seg, size=(self.sh, self.sw)))
        for i, block in enumerate(self.blocks):
            if i in (1, 3, 4, 5, 6):
                x = F.interpolate(x, scale_factor=2)
            x = block(x, seg)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--layout", choices=["nchw", "channels_last"], nargs="+", default=["nchw", "channels_last"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    args = parser.parse_args()
    torch.manual_seed(0)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    model = Generator().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(1.0)
    params = sum(p.numel() for p in model.parameters())
    print(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads, {params / 1e6:.1f} M parameters")
    for layout in args.layout:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        net = model.to(device=args.device, dtype=dtype, memory_format=fmt)
        for n in args.batch:
            labels = torch.randint(0, 183, (n, 1, 256, 256))
            seg = torch.zeros(n, 184, 256, 256).scatter_(1, labels, 1.0)
            seg = seg.to(device=args.device, dtype=dtype, memory_format=fmt)
            with torch.no_grad():
                net(seg)
                sync()
                times = []
                for _ in range(args.iters):
                    start = time.perf_counter()
                    net(seg)
                    sync()
                    times.append(time.perf_counter() - start)
            times.sort()
            median = times[len(times) // 2]
            print(f"pytorch {args.device} {args.dtype} {layout} batch {n}: {median:.3f} s/batch -> {n / median:.3f} images/s")


if __name__ == "__main__":
    main()
