"""Samplers, measured: caption alignment and fidelity against wall time per image.

Samples the shipped base model (data/checkpoints/base32.pt) for the same captions and seeds with
deterministic DDIM at 10/25/50/100 steps, ancestral DDPM at 250/1000 steps and, where the library has
it, the Karras/EDM Heun sampler ("karras") at 8/16/32/64 steps (2 * steps - 1 network evaluations),
all at one guidance scale and thresholding, and reports per sampler: network function evaluations
(NFE, one guided evaluation = a conditional + an unconditional pass in one batch), wall seconds and
process-CPU seconds per image, alignment ± s.e., off-palette ± s.e., the Fréchet distance, and the
paired difference of each row from DDIM 25 (same captions and seeds). Writes
benchmarks/results/samplers.csv and benchmarks/samplers.png. The committed figures came from:

    MINIMAGEN_TEXT_ENCODER=tiny nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/samplers.py --n-captions 16 --seeds 0 --guidance 3

(16 training + 16 held-out captions x 1 seed = 32 images per sampler, one batch each; thresholding: the
package's default dynamic setting, chosen by guidance_thresholding.py).
A quick look: --n-captions 2 --configs ddim:25 ddpm:250.
"""
import argparse
import csv
import os
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minimagen import diffusion
from minimagen.evaluate import paired_difference, score_images

from common import save_rows
from fid import frechet_per_seed
from minimagen.imagen import load_cascade

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_curve import fixed_captions  # noqa: E402

DEFAULT_CONFIGS = ["ddim:10", "ddim:25", "ddim:50", "ddim:100", "ddpm:250", "ddpm:1000", "karras:8", "karras:16", "karras:32",
                   "karras:64"]
COLUMNS = ["sampler", "steps", "nfe", "n_images", "batch", "wall_s_per_image", "cpu_s_per_image", "alignment",
           "alignment_se", "off_palette", "off_palette_se", "frechet", "frechet_se", "d_alignment", "d_alignment_se",
           "d_off_palette", "d_off_palette_se"]


def nfe(sampler: str, steps: int) -> int:
    """Guided network evaluations per image: Heun needs two per step but one for the last."""
    return 2 * steps - 1 if sampler == "karras" else steps


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def plot(rows, path, title):
    """Alignment, off-palette and Fréchet distance against wall seconds per image (log x); labels: NFE."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    panels = (("alignment", "caption alignment"), ("off_palette", "off-palette fraction (lower is better)"),
              ("frechet", "Fréchet distance (lower is better)"))
    for ax, (key, name) in zip(axes, panels):
        for k, sampler in enumerate(dict.fromkeys(r["sampler"] for r in rows)):
            pts = [r for r in rows if r["sampler"] == sampler]
            xs, ys = [r["wall_s_per_image"] for r in pts], [r[key] for r in pts]
            line, = ax.plot(xs, ys, "o-", ms=4, lw=1, label=sampler)
            ax.errorbar(xs, ys, yerr=[r[f"{key}_se"] for r in pts], fmt="none", ecolor=line.get_color(), elinewidth=0.7,
                        alpha=0.5)
            for r, x_, y_ in zip(pts, xs, ys):
                ax.annotate(f"{r['nfe']}", (x_, y_), textcoords="offset points", xytext=(3, 4 - 12 * (k % 2)), fontsize=6,
                            color=line.get_color())
        ax.set(xscale="log", xlabel="wall seconds per image (1 thread, busy machine; log)", ylabel=name)
        ax.legend(fontsize=7, title="labels: NFE", title_fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_table(rows, ref):
    """The results, with each row's paired difference from `ref` (* where it exceeds 2 s.e.)."""
    star = lambda m, se: "*" if abs(m) > 2 * se else " "
    print(f"\n{'sampler':<8}{'steps':>6}{'NFE':>6}{'s/img':>8}{'CPU s/img':>10}{'alignment':>17}{'off-palette':>19}"
          f"{'Fréchet':>9}   paired vs {ref['sampler']} {ref['steps']}: d alignment, d off-palette (* > 2 s.e.)")
    for r in rows:
        print(f"{r['sampler']:<8}{r['steps']:>6}{r['nfe']:>6}{r['wall_s_per_image']:>8.2f}{r['cpu_s_per_image']:>10.2f}"
              f"{r['alignment']:>10.3f} ± {r['alignment_se']:.3f}{r['off_palette']:>11.4f} ± {r['off_palette_se']:.4f}"
              f"{r['frechet']:>9.0f}   {r['d_alignment']:+.3f} ± {r['d_alignment_se']:.3f}{star(r['d_alignment'], r['d_alignment_se'])}, "
              f"{r['d_off_palette']:+.4f} ± {r['d_off_palette_se']:.4f}{star(r['d_off_palette'], r['d_off_palette_se'])}")


def read_csv(path) -> list[dict]:
    """Rows of a written results CSV (numbers as numbers), to redraw the plot without sampling again."""
    with open(path) as f:
        return [{k: v if k == "sampler" else float(v) if "." in v or "e" in v else int(v) for k, v in r.items()}
                for r in csv.DictReader(f)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="data/checkpoints/base32.pt")
    p.add_argument("--n-captions", type=int, default=16, help="training captions, and as many held-out ones")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--thresholding", default="dynamic")
    p.add_argument("--percentile", type=float, default=diffusion.DEFAULT_THRESHOLDING.percentile)
    p.add_argument("--cap", type=float, default=diffusion.DEFAULT_THRESHOLDING.cap, help="dynamic thresholding's cap on s (0 = none)")
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="sampler:steps (skipped if the sampler is missing)")
    p.add_argument("--reference", default="ddim:25", help="the row paired differences are taken from")
    p.add_argument("--out", default=str(HERE / "results" / "samplers.csv"))
    p.add_argument("--plot", default=str(HERE / "samplers.png"))
    p.add_argument("--from-csv", action="store_true", help="no sampling: redraw the plot and table from --out")
    args = p.parse_args()
    start = time.time()
    if args.from_csv:
        rows = read_csv(args.out)
        ref = next((r for r in rows if f"{r['sampler']}:{r['steps']}" == args.reference), rows[0])
        plot(rows, args.plot, f"base32, w = {args.guidance:g}, {args.thresholding} p={args.percentile:g} cap={args.cap:g}: "
                              f"{rows[0]['n_images']} images per point, error bars: s.e.")
        return print_table(rows, ref)
    model = load_cascade([args.checkpoint])
    caps = fixed_captions(args.n_captions)  # the evaluation draw every benchmark scores
    captions = caps["train"] + caps["held_out"]
    n_images = len(captions) * len(args.seeds)
    configs = [(s, int(n)) for s, n in (c.split(":") for c in args.configs)]
    missing = sorted({s for s, _ in configs if s not in diffusion.SAMPLERS})
    configs = [(s, n) for s, n in configs if s in diffusion.SAMPLERS]
    print(f"{len(captions)} captions x seeds {args.seeds} = {n_images} images per sampler (batch {len(captions)}); "
          f"w = {args.guidance:g}, {args.thresholding} p={args.percentile:g} cap={args.cap:g}; torch threads {torch.get_num_threads()}; "
          f"{load()}" + (f"; samplers not in this minimagen, skipped: {missing}" if missing else ""), flush=True)
    model.sample(captions[:2], guidance_scale=args.guidance, steps=2, stages=1)  # warm-up (allocations, caches)
    rows, rule = [], diffusion.Thresholding(args.thresholding, args.percentile, args.cap or None)
    for sampler, steps in configs:
        wall, cpu, images = time.perf_counter(), time.process_time(), []
        for seed in args.seeds:
            images.append(model.sample(captions, guidance_scale=args.guidance, thresholding=rule, steps=steps,
                                       sampler=sampler, seed=seed, stages=1).cpu())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        images = torch.stack(images)  # [S, B, 3, H, W]
        row = dict(sampler=sampler, steps=steps, nfe=nfe(sampler, steps), n_images=n_images, batch=len(captions),
                   wall_s_per_image=wall / n_images, cpu_s_per_image=cpu / n_images, **score_images(images, captions))
        row["frechet"], row["frechet_se"] = frechet_per_seed(images)
        rows.append(row)
        print(f"{sampler:>7} {steps:>5} steps  NFE {row['nfe']:>5}  {row['wall_s_per_image']:6.2f} s/image wall "
              f"({row['cpu_s_per_image']:.2f} CPU)  alignment {row['alignment']:.3f} ± {row['alignment_se']:.3f}  "
              f"off-palette {row['off_palette']:.4f} ± {row['off_palette_se']:.4f}  Fréchet {row['frechet']:.0f}  "
              f"({time.time() - start:.0f} s, {load()})", flush=True)
    ref = next((r for r in rows if f"{r['sampler']}:{r['steps']}" == args.reference), rows[0])
    for row in rows:  # paired: same captions, seeds and starting noise
        for key in ("alignment", "off_palette"):
            row[f"d_{key}"], row[f"d_{key}_se"] = paired_difference(row, ref, key)
    save_rows(rows, args.out, COLUMNS)
    title = (f"base32, w = {args.guidance:g}, {args.thresholding} p={args.percentile:g} cap={args.cap:g}: {n_images} images per point, "
             "error bars: s.e.")
    plot(rows, args.plot, title)
    print_table(rows, ref)
    best = max(rows, key=lambda r: (r["alignment"], -r["wall_s_per_image"]))
    def within(r):  # not significantly (2 s.e. of the paired difference) below the best row's alignment
        mean, se = paired_difference(r, best, "alignment")
        return mean >= -2 * se
    cheapest = min(filter(within, rows), key=lambda r: r["wall_s_per_image"])
    print(f"highest alignment: {best['sampler']} {best['steps']} ({best['alignment']:.3f}); cheapest row within 2 s.e. "
          f"of it (paired): {cheapest['sampler']} {cheapest['steps']} ({cheapest['nfe']} NFE, {cheapest['wall_s_per_image']:.2f} s/image)")
    print(f"wrote {args.out} and {args.plot}; {n_images} images per sampler; {load()}; runtime {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
