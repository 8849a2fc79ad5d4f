"""Times one SPADE training iteration (G step, then D step on a regenerated fake, as the
official Pix2PixTrainer runs it) in PyTorch eager on CPU, for side-by-side comparison with
`spade bench-train` (see bench/compare_train.sh). Random weights and data; the networks are
the official architecture in train mode (spectral norm, batch statistics), the multiscale
discriminator, hinge + feature-matching losses, optionally the VGG19 loss with random weights.

Prints `pytorch <config> batch <n>: <seconds> s/iteration`.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

from pytorch_spade import Generator

CONFIGS = {
    # name: (label channels incl. dontcare + edge, ngf, ndf, crop)
    "small": (10, 8, 16, 64),
    "landscape": (12, 16, 32, 128),
    "coco": (184, 64, 64, 256),
}


def discriminator(input_nc, ndf, n_layers=4):
    layers = [nn.Sequential(nn.Conv2d(input_nc, ndf, 4, 2, 2), nn.LeakyReLU(0.2))]
    nf = ndf
    for n in range(1, n_layers):
        prev, nf = nf, min(nf * 2, 512)
        stride = 1 if n == n_layers - 1 else 2
        conv = spectral_norm(nn.Conv2d(prev, nf, 4, stride, 2, bias=False))
        layers.append(nn.Sequential(conv, nn.InstanceNorm2d(nf), nn.LeakyReLU(0.2)))
    layers.append(nn.Sequential(nn.Conv2d(nf, 1, 4, 1, 2)))
    return nn.ModuleList(layers)


class Multiscale(nn.Module):
    def __init__(self, input_nc, ndf, num_d=2):
        super().__init__()
        self.scales = nn.ModuleList(discriminator(input_nc, ndf) for _ in range(num_d))

    def forward(self, x):
        outs = []
        for i, scale in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
            feats = []
            h = x
            for layer in scale:
                h = layer(h)
                feats.append(h)
            outs.append(feats)
        return outs


def vgg19_features():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    feats = nn.Sequential(*layers)
    slices = [feats[0:2], feats[2:7], feats[7:12], feats[12:21], feats[21:30]]
    for p in feats.parameters():
        p.requires_grad_(False)
    return slices


def vgg_loss(slices, x, y):
    loss, weights = 0.0, [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]
    for s, w in zip(slices, weights):
        x, y = s(x), s(y)
        loss = loss + w * F.l1_loss(x, y.detach())
    return loss * 10.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=CONFIGS, default="small")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--vgg", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    label_nc, ngf, ndf, crop = CONFIGS[args.config]
    netG = Generator(label_nc=label_nc, ngf=ngf, crop=crop).train().to(device)
    for name, m in netG.named_modules():
        for conv in ("conv_0", "conv_1", "conv_s"):
            if hasattr(m, conv):
                setattr(m, conv, spectral_norm(getattr(m, conv)))
    netD = Multiscale(label_nc + 3, ndf).train().to(device)
    slices = [s.to(device) for s in vgg19_features()] if args.vgg else None
    opt_g = torch.optim.Adam(netG.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(netD.parameters(), lr=4e-4, betas=(0.0, 0.9))
    n = args.batch
    labels = torch.randint(0, label_nc - 1, (n, 1, crop, crop))
    seg = torch.zeros(n, label_nc, crop, crop).scatter_(1, labels, 1.0).to(device)
    real = (torch.rand(n, 3, crop, crop) * 2 - 1).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def discriminate(fake):
        out = netD(torch.cat([torch.cat([seg, fake], 1), torch.cat([seg, real], 1)], 0))
        return [[t[:n] for t in s] for s in out], [[t[n:] for t in s] for s in out]

    def iteration():
        opt_g.zero_grad()
        fake = netG(seg)
        pf, pr = discriminate(fake)
        loss = sum(-p[-1].mean() for p in pf) / len(pf)
        for fs, rs in zip(pf, pr):
            for f, r in zip(fs[:-1], rs[:-1]):
                loss = loss + F.l1_loss(f, r.detach()) * 10.0 / len(pf)
        if slices:
            loss = loss + vgg_loss(slices, fake, real)
        loss.backward()
        opt_g.step()
        opt_d.zero_grad()
        with torch.no_grad():
            fake = netG(seg)
        pf, pr = discriminate(fake.detach())
        d_fake = sum(-torch.min(-p[-1] - 1, torch.zeros_like(p[-1])).mean() for p in pf) / len(pf)
        d_real = sum(-torch.min(p[-1] - 1, torch.zeros_like(p[-1])).mean() for p in pr) / len(pr)
        (d_fake + d_real).backward()
        opt_d.step()

    iteration()
    times = []
    for _ in range(args.iters):
        sync()
        start = time.perf_counter()
        iteration()
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    print(f"pytorch {torch.__version__} ({torch.get_num_threads()} threads, {args.device}) {args.config} batch {n} "
          f"vgg {'on' if args.vgg else 'off'}: {median:.3f} s/iteration -> {1 / median:.3f} iterations/s")


if __name__ == "__main__":
    main()
