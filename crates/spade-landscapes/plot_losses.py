#!/usr/bin/env python3
"""Loss curves of a training run as one SVG (docs/landscapes/losses.svg), from the trainer's
loss_log.jsonl. Standard library only.

    python3 crates/spade-landscapes/plot_losses.py CHECKPOINT_DIR/loss_log.jsonl OUT.svg
"""
import json
import sys

W, H, PAD = 300, 170, 34


def panel(name, points, x0, y0):
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    lo, hi = min(ys), max(ys)
    if hi == lo:
        hi = lo + 1
    xmax = max(xs) or 1

    def sx(x):
        return x0 + PAD + (W - PAD - 8) * x / xmax

    def sy(y):
        return y0 + 20 + (H - 44) * (1 - (y - lo) / (hi - lo))

    raw = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    # A running mean over five logged points shows the trend under the GAN's noise.
    smooth = []
    for i in range(len(points)):
        window = ys[max(0, i - 2): i + 3]
        smooth.append(f"{sx(xs[i]):.1f},{sy(sum(window) / len(window)):.1f}")
    return (
        f'<text x="{x0 + PAD}" y="{y0 + 14}" font-size="13">{name}</text>'
        f'<text x="{x0 + 2}" y="{sy(hi) + 4:.1f}" font-size="10">{hi:.2f}</text>'
        f'<text x="{x0 + 2}" y="{sy(lo) + 4:.1f}" font-size="10">{lo:.2f}</text>'
        f'<text x="{x0 + W - 60}" y="{y0 + H - 8}" font-size="10">{xmax} samples</text>'
        f'<polyline fill="none" stroke="#90caf9" stroke-width="1" points="{raw}"/>'
        f'<polyline fill="none" stroke="#0d47a1" stroke-width="2" points="{" ".join(smooth)}"/>'
    )


def main():
    src, out = sys.argv[1], sys.argv[2]
    records = [json.loads(line) for line in open(src) if line.strip()]
    # Every loss any record has (a resumed stage may add one, as the L1 of stage 2).
    names = list(dict.fromkeys(name for r in records for name in r["losses"]))
    cols = 3
    rows = (len(names) + cols - 1) // cols
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * W}" height="{rows * H}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
    ]
    for i, name in enumerate(names):
        points = [(r["total_steps"], r["losses"][name]) for r in records if name in r["losses"]]
        parts.append(panel(name, points, (i % cols) * W, (i // cols) * H))
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("".join(parts))


if __name__ == "__main__":
    main()
