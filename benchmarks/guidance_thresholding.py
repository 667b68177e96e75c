"""Guidance vs thresholding, measured: Imagen Fig. 4c in miniature on the shapes data.

Samples the shipped base model (data/checkpoints/base32.pt) for every guidance scale w and every
thresholding method (none, static clipping, dynamic thresholding at three percentiles p) from the
same noise per seed (minimagen.evaluate.guidance_sweep), and scores caption alignment (the shapes
detector, the paper's CLIP score) against fidelity (1 - off-palette fraction, and the Fréchet
distance on the shipped feature net: the paper's FID). Writes benchmarks/results/guidance_thresholding.csv
and the trade-off plot benchmarks/guidance_thresholding.png, prints the table and a verdict
computed from the numbers (paired differences: every cell shares captions, seeds and starting noise).
The committed figures came from:

    MINIMAGEN_TEXT_ENCODER=tiny nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/guidance_thresholding.py --n-captions 12 --seeds 0 1

(12 training + 12 held-out captions x 2 seeds = 48 images per cell, DDIM 25 steps). A quick look:
--n-captions 2 --seeds 0 --guidance 1 15 (a minute).
"""
import argparse
import random
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minimagen.data import all_captions
from minimagen.evaluate import save_rows, find_row, guidance_sweep, paired_difference, sweep_table
from minimagen.imagen import load_cascade
from minimagen.plot import tradeoff_plot

HERE = Path(__file__).parent
METHODS = ["none", "static", ("dynamic", 0.9), ("dynamic", 0.95), ("dynamic", 0.995)]
COLUMNS = ["method", "thresholding", "percentile", "guidance_scale", "n_images", "alignment", "alignment_se",
           "alignment_train", "alignment_held_out", "off_palette", "off_palette_se", "fidelity", "frechet",
           "frechet_se", "raw_x0_max", "x0_max", "raw_x0_outside"]


def pick_captions(n: int) -> tuple[list[str], int]:
    """n fixed training captions then n held-out ones (the same draw as train_curve.py)."""
    rng = random.Random(0)
    picked = {split: rng.sample(all_captions(split), n) for split in ("train", "held_out")}
    return picked["train"] + picked["held_out"], n


def diff(a, b, key):
    mean, se = paired_difference(a, b, key)
    return f"{mean:+.3f} ± {se:.3f}"


def verdict(rows, high_ws) -> list[str]:
    """The questions of issue 6, answered from paired per-image differences (a - b, mean ± s.e.)."""
    lines, ws = [], sorted({r["guidance_scale"] for r in rows})
    low = ws[0]
    labels = list(dict.fromkeys(r["method"] for r in rows))
    dynamic = [m for m in labels if m.startswith("dynamic")]
    lines.append(f"fidelity lost from w = {low:g} to high w (off-palette at high w minus at w = {low:g}, same noise):")
    for m in labels:
        lines.append(f"  {m:<18}" + "   ".join(f"w={w:g}: {diff(find_row(rows, m, w), find_row(rows, m, low), 'off_palette')}"
                                             for w in high_ws))
    for w in high_ws:
        lines.append(f"at w = {w:g}, dynamic minus static / minus none (negative off-palette = dynamic cleaner):")
        for m in dynamic:
            a = find_row(rows, m, w)
            parts = [f"off-palette vs {ref}: {diff(a, find_row(rows, ref, w), 'off_palette')}" for ref in ("static", "none")]
            parts += [f"alignment vs {ref}: {diff(a, find_row(rows, ref, w), 'alignment')}" for ref in ("static", "none")]
            lines.append(f"  {m:<18}" + "; ".join(parts))
    # Summary: does some dynamic p keep fidelity at the highest w where static / none lose it?
    w = high_ws[-1]

    def worse(a, b):  # a's off-palette significantly (2 s.e.) above b's
        mean, se = paired_difference(a, b, "off_palette")
        return mean > 2 * se and mean > 0
    lost = {m: worse(find_row(rows, m, w), find_row(rows, m, low)) for m in labels}
    better = [m for m in dynamic if all(not worse(find_row(rows, m, w), find_row(rows, r, w))
                                        and worse(find_row(rows, r, w), find_row(rows, m, w)) for r in ("static", "none"))]
    lines.append(f"VERDICT at w = {w:g}: fidelity significantly lost (vs w = {low:g}, > 2 s.e.) by: "
                 f"{', '.join(m for m in labels if lost[m]) or 'none of the methods'}; kept by: "
                 f"{', '.join(m for m in labels if not lost[m]) or 'none of the methods'}.")
    lines.append(f"  dynamic settings significantly cleaner than BOTH static and none at w = {w:g}: "
                 f"{', '.join(better) or 'none'}")
    best = max(rows, key=lambda r: r["alignment"] - r["off_palette"])
    lines.append(f"  best single cell by alignment - off-palette: {best['method']} at w = {best['guidance_scale']:g} "
                 f"(alignment {best['alignment']:.3f} ± {best['alignment_se']:.3f}, off-palette "
                 f"{best['off_palette']:.4f} ± {best['off_palette_se']:.4f})")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="data/checkpoints/base32.pt")
    p.add_argument("--n-captions", type=int, default=12, help="training captions, and as many held-out ones")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--guidance", type=float, nargs="+", default=[1, 2, 3, 5, 7.5, 10, 15])
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--no-frechet", action="store_true", help="skip the Fréchet distance (it costs ~1 s in all)")
    p.add_argument("--out", default=str(HERE / "results" / "guidance_thresholding.csv"))
    p.add_argument("--plot", default=str(HERE / "guidance_thresholding.png"))
    args = p.parse_args()
    start = time.time()
    model = load_cascade([args.checkpoint])
    captions, n_train = pick_captions(args.n_captions)
    n_images = len(captions) * len(args.seeds)
    print(f"{len(captions)} captions ({n_train} training, {len(captions) - n_train} held-out) x seeds {args.seeds} "
          f"= {n_images} images per cell; DDIM {args.steps} steps", flush=True)

    def progress(done, total, row):
        print(f"[{done}/{total}] {row['method']} w={row['guidance_scale']:g}: alignment {row['alignment']:.3f}, "
              f"off-palette {row['off_palette']:.4f} ({time.time() - start:.0f} s)", flush=True)

    rows = guidance_sweep(model, captions, args.guidance, methods=METHODS, seeds=args.seeds, steps=args.steps,
                          frechet=not args.no_frechet, progress=progress)
    for r in rows:
        r["n_images"] = n_images
        r["alignment_train"] = r["scores"]["alignment"][:, :n_train].mean().item()
        r["alignment_held_out"] = r["scores"]["alignment"][:, n_train:].mean().item()
    save_rows(rows, args.out, COLUMNS)
    frechet = not args.no_frechet
    fig, axes = plt.subplots(1, 2 if frechet else 1, figsize=(11 if frechet else 5.5, 4), squeeze=False)
    tradeoff_plot(rows, "fidelity", ax=axes[0, 0], title=f"base32, DDIM {args.steps}: off-palette fidelity "
                                                          f"({n_images} images per point)")
    if frechet:
        tradeoff_plot(rows, "frechet", ax=axes[0, 1], title="Fréchet distance (mean ± s.e. over seeds)")
    fig.savefig(args.plot, dpi=110)
    print(sweep_table(rows))
    high = [w for w in args.guidance if w >= 10] or [max(args.guidance)]
    print("\n".join(verdict(rows, high)))
    print(f"wrote {args.out} and {args.plot}; {n_images} images per cell; runtime {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
