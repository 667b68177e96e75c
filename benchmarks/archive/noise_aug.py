"""Noise-conditioning augmentation, measured [Imagen Sec. 2.4]: does corrupting the SR stage's
low-res input (in training, and at sampling time) make the 32->64 stage robust to the base model's
own samples?

1. Samples the shipped base model (data/checkpoints/base32.pt) once for fixed training and held-out
   captions (w = 3, dynamic thresholding, DDIM 25 steps, seed 0), or makes them imperfect on purpose,
   where the paper says augmentation helps: fewer base steps (--base-steps), more guidance
   (--base-guidance), or seeded Gaussian noise on the samples (--input-noise).
2. Upsamples those 32 px samples with each SR checkpoint at every sampling-time augmentation level
   (minimagen.evaluate.aug_level_sweep). The default pair are twins (same command, seed and budget) but for
   augmentation in training: data/checkpoints/sr64_aug03.pt (levels ~ U(0, 0.3)) and the cascade's
   data/checkpoints/sr64.pt (none), so the two curves separate augmentation in training from at sampling.
3. References on the same captions: the base samples upsampled bilinearly (what an SR stage must
   beat), real 32 px renders (minimagen.data.render) upsampled by each SR stage and bilinearly, and
   real 64 px renders of the same scenes (the ceiling, and the Fréchet distance's small-sample floor).
Scores on the 64 px outputs: caption alignment ± s.e., off-palette fraction ± s.e. (over images),
Fréchet distance to 1000 real 64 px images (feature net, inputs area-resized to 32 px; one value per
seed: a set statistic, biased upwards at small n, so compare rows of equal n only). Paired
differences (same captions, same base image, same noise) for the comparisons in the verdict.
Writes benchmarks/archive/results/noise_aug.csv and benchmarks/archive/noise_aug.png (or --out / --plot). The committed
figures came from three runs, clean, few-step and corrupted base samples:

    export MINIMAGEN_TEXT_ENCODER=tiny OMP_NUM_THREADS=1
    SR="aug03=data/checkpoints/sr64_aug03.pt noaug=data/checkpoints/sr64.pt"
    L="--n-captions 24 --levels 0 0.1 0.2 0.3 0.5 --real-levels 0"
    python benchmarks/archive/noise_aug.py --sr $SR $L
    python benchmarks/archive/noise_aug.py --sr $SR $L --base-steps 4 --out benchmarks/archive/results/noise_aug_steps4.csv --plot /tmp/steps4.png
    python benchmarks/archive/noise_aug.py --sr $SR $L --input-noise 0.15 --out benchmarks/archive/results/noise_aug_noise015.csv \
        --plot benchmarks/archive/noise_aug_noise015.png

(24 training + 24 held-out captions x 1 SR seed = 48 images per cell). A quick look:
--n-captions 2 --levels 0 0.5 --real-levels 0 --steps 5.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minimagen import diffusion as D
from minimagen.data import from_uint8, render
from minimagen.evaluate import aug_level_sweep, paired_difference, score_images
from minimagen.imagen import load_cascade, resize

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the scripts kept there
from common import save_rows  # noqa: E402
from fid import frechet_per_seed, frechet_to_real  # noqa: E402
from train_curve import fixed_captions  # noqa: E402

DEFAULT_SR = ["aug03=data/checkpoints/sr64_aug03.pt", "noaug=data/checkpoints/sr64.pt"]
COLUMNS = ["input", "model", "aug_level", "n_images", "alignment", "alignment_se", "alignment_train",
           "alignment_held_out", "off_palette", "off_palette_se", "frechet", "frechet_se"]


def reference_row(images, captions, input_, model, n_seeds) -> dict:
    """Score fixed images [B, 3, H, W] (repeated per seed, so rows pair with the SR rows)."""
    images = images[None].expand(n_seeds, *images.shape)
    row = dict(input=input_, model=model, aug_level=float("nan"), **score_images(images, captions), images=images)
    row["frechet"], row["frechet_se"] = frechet_to_real(images[0]), 0.0
    return row


def diff(a, b, key):
    mean, se = paired_difference(a, b, key)
    return f"{mean:+.3f} ± {se:.3f}" if key == "alignment" else f"{mean:+.4f} ± {se:.4f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="data/checkpoints/base32.pt")
    p.add_argument("--sr", nargs="+", default=DEFAULT_SR, help="label=path of SR 32->64 checkpoints")
    p.add_argument("--n-captions", type=int, default=32, help="training captions, and as many held-out ones")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="SR sampling seeds (the base images use seed 0)")
    p.add_argument("--levels", type=float, nargs="+", default=[0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
    p.add_argument("--real-levels", type=float, nargs="+", default=[0, 0.2], help="levels for real low-res inputs")
    p.add_argument("--guidance", type=float, default=3.0, help="for the base and the SR stage")
    p.add_argument("--percentile", type=float, default=D.DEFAULT_THRESHOLDING.percentile, help="dynamic thresholding of the base stage")
    p.add_argument("--cap", type=float, default=D.DEFAULT_THRESHOLDING.cap, help="its cap on s (0 = none)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps, both stages")
    # imperfect base samples, where the paper says augmentation helps: fewer base steps, more guidance, or noise
    p.add_argument("--base-steps", type=int, default=None, help="DDIM steps of the base samples (default: --steps)")
    p.add_argument("--base-guidance", type=float, default=None, help="w of the base samples (default: --guidance)")
    p.add_argument("--input-noise", type=float, default=0.0, help="std of Gaussian noise added to the base samples")
    p.add_argument("--out", default=str(HERE / "results" / "noise_aug.csv"))
    p.add_argument("--plot", default=str(HERE / "noise_aug.png"))
    args = p.parse_args()
    start = time.time()
    caps = fixed_captions(args.n_captions)  # the evaluation draw every benchmark scores
    captions, seeds = caps["train"] + caps["held_out"], list(args.seeds)
    n_images, n_train = len(captions) * len(seeds), args.n_captions
    srs = dict(s.split("=", 1) for s in args.sr)
    print(f"{len(captions)} captions ({n_train} training, {n_train} held-out) x SR seeds {seeds} = {n_images} images "
          f"per cell; load average {os.getloadavg()[0]:.2f}", flush=True)

    base = load_cascade([args.base])
    low = base.sample(captions, guidance_scale=args.base_guidance or args.guidance,
                      thresholding=D.Thresholding("dynamic", args.percentile, args.cap or None),
                      steps=args.base_steps or args.steps, seed=0, stages=1).cpu()  # [B, 3, 32, 32]
    if args.input_noise:  # a corrupted input: the same images with seeded Gaussian noise, clipped to the range
        noise = torch.randn(low.shape, generator=torch.Generator().manual_seed(1))
        low = (low + args.input_noise * noise).clamp(-1, 1)
    b = score_images(low[None], captions)
    print(f"base 32 px samples: alignment {b['alignment']:.3f} ± {b['alignment_se']:.3f}, off-palette "
          f"{b['off_palette']:.4f} ± {b['off_palette_se']:.4f}, Fréchet (32 px) {frechet_to_real(low):.0f} "
          f"({time.time() - start:.0f} s)", flush=True)
    real_low = torch.stack([from_uint8(render(c, 32, seed=i)) for i, c in enumerate(captions)])
    real_high = torch.stack([from_uint8(render(c, 64, seed=i)) for i, c in enumerate(captions)])  # the same scenes
    rows = [reference_row(resize(low, 64), captions, "base samples", "bilinear", len(seeds)),
            reference_row(resize(real_low, 64), captions, "real 32 px", "bilinear", len(seeds)),
            reference_row(real_high, captions, "real 64 px", "none (ceiling)", len(seeds))]

    def progress(done, total, row):  # each SR row also gets its Fréchet distance (the sweep's own scores are per image)
        row["frechet"], row["frechet_se"] = frechet_per_seed(row["images"])
        print(f"  [{done}/{total}] {row['label']} level {row['aug_level']:g}: alignment {row['alignment']:.3f}, "
              f"off-palette {row['off_palette']:.4f}, Fréchet {row['frechet']:.0f} ({time.time() - start:.0f} s)", flush=True)

    for label, path in srs.items():
        sr = load_cascade([path])
        for input_, images, levels in (("base samples", low, args.levels), ("real 32 px", real_low, args.real_levels)):
            print(f"{label} ({path}) on {input_}:", flush=True)
            for row in aug_level_sweep(sr, images, captions, levels, seeds=seeds, guidance_scale=args.guidance,
                                       steps=args.steps, label=label, progress=progress):
                rows.append(dict(row, input=input_, model=label))
    for r in rows:
        r["n_images"] = n_images
        r["alignment_train"] = r["scores"]["alignment"][:, :n_train].mean().item()
        r["alignment_held_out"] = r["scores"]["alignment"][:, n_train:].mean().item()
    save_rows(rows, args.out, COLUMNS)

    # the plot: metric vs level, one curve per checkpoint (base-sample input), references as lines / markers
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("alignment", "caption alignment (64 px)"), ("off_palette", "off-palette fraction (lower is better)"),
              ("frechet", "Fréchet distance to real 64 px (lower is better)"))
    for ax, (key, name) in zip(axes, panels):
        for k, label in enumerate(srs):
            pts = [r for r in rows if r["model"] == label and r["input"] == "base samples"]
            xs, ys = [r["aug_level"] for r in pts], [r[key] for r in pts]
            line, = ax.plot(xs, ys, "o-", ms=4, lw=1, label=f"SR {label}, base samples in")
            ax.errorbar(xs, ys, yerr=[r[f"{key}_se"] for r in pts], fmt="none", ecolor=line.get_color(), elinewidth=0.7)
            real = [r for r in rows if r["model"] == label and r["input"] == "real 32 px"]
            ax.plot([r["aug_level"] for r in real], [r[key] for r in real], "^", color=line.get_color(), ms=6,
                    mfc="none", label=f"SR {label}, real 32 px in")
        for r, style in zip(rows[:3], ("k--", "k:", "g-.")):
            ax.axhline(r[key], color=style[0], ls=style[1:], lw=0.9, label=f"{r['input']}, {r['model']}")
        ax.set(xlabel="sampling-time augmentation level (0 clean, 1 pure noise)", ylabel=name)
        ax.set_title(name, fontsize=9)
    axes[0].legend(fontsize=6)
    made = (f"DDIM {args.base_steps or args.steps}, w = {args.base_guidance or args.guidance:g}"
            + (f", + noise sigma {args.input_noise:g}" if args.input_noise else ""))
    fig.suptitle(f"SR 32->64 on the base model's samples ({made}): {n_images} images per point, error bars s.e. "
                 "(Fréchet: one set per seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)

    print(f"\n{'input':<14}{'model':<16}{'level':>6}{'alignment':>17}{'off-palette':>19}{'Fréchet':>9}")
    for r in rows:
        print(f"{r['input']:<14}{r['model']:<16}{r['aug_level']:>6g}{r['alignment']:>10.3f} ± {r['alignment_se']:.3f}"
              f"{r['off_palette']:>11.4f} ± {r['off_palette_se']:.4f}{r['frechet']:>9.0f}")

    # the verdict, from paired differences
    def get(model, level, input_="base samples"):
        return next(r for r in rows if r["model"] == model and r["input"] == input_ and r["aug_level"] == level)
    bilinear = rows[0]
    print("\npaired differences on the base model's samples (mean ± s.e. over images):")
    best = {}
    for label in srs:
        pts = [r for r in rows if r["model"] == label and r["input"] == "base samples"]
        best[label] = max(pts, key=lambda r: r["alignment"])
        zero = get(label, min(args.levels))
        print(f"  SR {label}: best level by alignment {best[label]['aug_level']:g} ({best[label]['alignment']:.3f}); "
              f"by Fréchet {min(pts, key=lambda r: r['frechet'])['aug_level']:g}")
        for r in pts:
            print(f"    level {r['aug_level']:<4g} minus level {zero['aug_level']:g}: alignment {diff(r, zero, 'alignment')}, "
                  f"off-palette {diff(r, zero, 'off_palette')};  minus bilinear: alignment {diff(r, bilinear, 'alignment')}")
    labels = list(srs)
    if len(labels) == 2:
        a, n = labels
        print(f"  {a} minus {n}, same level:")
        for level in args.levels:
            ra, rn = get(a, level), get(n, level)
            print(f"    level {level:<4g}: alignment {diff(ra, rn, 'alignment')}, off-palette {diff(ra, rn, 'off_palette')}, "
                  f"Fréchet {ra['frechet']:.0f} vs {rn['frechet']:.0f}")
        ba, bn = best[a], best[n]
        m, se = paired_difference(ba, bn, "alignment")
        print(f"VERDICT: each at its best level ({a} at {ba['aug_level']:g}, {n} at {bn['aug_level']:g}): alignment "
              f"{a} minus {n} {m:+.3f} ± {se:.3f} -> "
              + ("augmentation in training helps (> 2 s.e.)" if m > 2 * se else
                 "augmentation in training hurts (> 2 s.e.)" if m < -2 * se else "no significant difference (within 2 s.e.)"))
        for label in labels:
            m, se = paired_difference(best[label], get(label, min(args.levels)), "alignment")
            print(f"  {label}: best sampling-time level {best[label]['aug_level']:g} vs clean input: alignment {m:+.3f} ± {se:.3f}"
                  + (" (significant)" if abs(m) > 2 * se else " (within 2 s.e.)"))
        for label in labels:
            m, se = paired_difference(best[label], bilinear, "alignment")
            print(f"  {label} at its best level vs bilinear upsampling: alignment {m:+.3f} ± {se:.3f}; Fréchet "
                  f"{best[label]['frechet']:.0f} vs {bilinear['frechet']:.0f} (real 64 px renders, the floor: {rows[2]['frechet']:.0f})")
    print(f"wrote {args.out} and {args.plot}; {n_images} images per cell; load average {os.getloadavg()[0]:.2f}; "
          f"runtime {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
