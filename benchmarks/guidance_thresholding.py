"""Guidance vs thresholding, measured: Imagen Fig. 4c in miniature on the shaded shapes data.

Samples the shipped base model (data/checkpoints/base32.pt) for guidance scales w and thresholding
methods from the same noise per seed (minimagen.evaluate.guidance_sweep), and scores caption alignment
(the shapes detector, the paper's CLIP score) against detail (metrics.detail_scores: the shading kept
inside the objects, and the fraction of object pixels pinned at +-1) and fidelity (off-palette pixels,
Fréchet distance). Every cell of a phase shares captions, seeds and starting noise, so differences
are paired per image. Three phases, run in this order:

  select    choose dynamic thresholding's p and cap on SELECTION captions (a draw disjoint from the
            evaluation captions): p in {0.9, 0.95, 0.995} x cap in {1.5, 2, 3, none} at w = 10 and 15.
            Rule: the largest mean shading kept over w = 10 and 15 among settings whose alignment is
            within 1 s.e. (paired) of static clipping's at both w. The choice is what
            minimagen.diffusion's DEFAULT_THRESHOLDING holds.
  evaluate  the table on the EVALUATION captions (train_curve.py's draw): w in {1, 3, 7.5, 10, 15}
            x {none, static, the chosen dynamic setting, the same p uncapped, diffusers/DeepFloyd IF's p = 0.95
            cap 1.5, the paper's rule with diffusers' default p = 0.995 uncapped}, and the verdict of issue 12's
            "done when".
  samplers  at w = 15, static vs the chosen setting with DDIM 10 / 25 / 50 and DDPM 50.

    MINIMAGEN_TEXT_ENCODER=tiny python benchmarks/guidance_thresholding.py select --seeds 0
    MINIMAGEN_TEXT_ENCODER=tiny python benchmarks/guidance_thresholding.py evaluate
    MINIMAGEN_TEXT_ENCODER=tiny python benchmarks/guidance_thresholding.py samplers

(12 training + 12 held-out captions x seeds 0, 1 = 48 images per cell, DDIM 25 steps unless the
phase varies it; the selection ran with seed 0 only, 24 images per cell, to fit a 2-core session). Each phase writes benchmarks/results/guidance_thresholding_<phase>.csv; evaluate
also writes the trade-off plot benchmarks/guidance_thresholding.png.
"""
import argparse
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minimagen import diffusion as D
from common import describe_machine
from minimagen.evaluate import SCORES, paired_difference
from minimagen.imagen import load_cascade

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_curve import fixed_captions  # noqa: E402  (the evaluation and selection draws every benchmark uses)
from common import find_row, guidance_sweep, save_rows, sweep_table, tradeoff_plot  # noqa: E402
SAMPLER_CONFIGS = (("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddpm", 50))
COLUMNS = (["phase", "method", "thresholding", "percentile", "cap", "sampler", "steps", "guidance_scale", "n_images"]
           + [f"{k}{e}" for k in SCORES for e in ("", "_se")]
           + ["alignment_train", "alignment_held_out", "frechet", "frechet_se", "raw_x0_max", "x0_max", "raw_x0_outside"])


def machine() -> str:
    return f"{describe_machine()}, torch {torch.__version__}"


def diff(a, b, key):
    mean, se = paired_difference(a, b, key)
    return mean, se


def fmt(mean_se):
    return f"{mean_se[0]:+.3f} ± {mean_se[1]:.3f}"


def select(rows, ws) -> tuple[tuple, list[str]]:
    """The selection rule (see the module docstring) -> (percentile, cap), and the lines explaining it."""
    lines, ok = [], {}
    for m in dict.fromkeys(r["method"] for r in rows if r["thresholding"] == "dynamic"):
        align = [diff(find_row(rows, m, w), find_row(rows, "static", w), "alignment") for w in ws]
        shading = sum(find_row(rows, m, w)["shading"] for w in ws) / len(ws)
        keeps = all(mean >= -se for mean, se in align)
        r = find_row(rows, m, ws[0])
        ok[(r["percentile"], r["cap"])] = (shading, keeps)
        lines.append(f"  {m:<26} shading kept (mean over w) {shading:.3f}; alignment vs static "
                     + ", ".join(f"w={w:g}: {fmt(a)}" for w, a in zip(ws, align)) + ("" if keeps else "  (excluded)"))
    eligible = {k: v for k, v in ok.items() if v[1]}
    if not eligible:
        lines.append("no dynamic setting is within 1 s.e. of static clipping's alignment at every w: choosing by shading "
                     "kept among all of them")
    eligible = eligible or ok
    choice = max(eligible, key=lambda k: eligible[k][0])
    lines.append(f"CHOSEN: p = {choice[0]:g}, cap = {choice[1]}")
    return choice, lines


def verdict(rows, chosen: str, high_ws) -> list[str]:
    """Issue 12's 'done when', answered from paired per-image differences (a - b, mean ± s.e.)."""
    lines, ws = [], sorted({r["guidance_scale"] for r in rows})
    for w in high_ws:
        a, st, no = (find_row(rows, m, w) for m in (chosen, "static", "none"))
        sh, al = diff(a, st, "shading"), diff(a, st, "alignment")
        lo, hi = sh[0] - 1.96 * sh[1], sh[0] + 1.96 * sh[1]
        lines.append(f"w = {w:g}: {chosen} minus static: shading kept {fmt(sh)} (95% CI [{lo:+.3f}, {hi:+.3f}]: "
                     f"{'excludes 0' if lo > 0 or hi < 0 else 'includes 0'}), pinned {fmt(diff(a, st, 'pinned'))}, "
                     f"alignment {fmt(al)} ({'not worse' if al[0] >= -al[1] else 'WORSE'} within 1 s.e.)")
        methods = list(dict.fromkeys(r["method"] for r in rows))
        worst = {k: min(methods, key=lambda m: find_row(rows, m, w)[k] * (-1 if k in ("off_palette", "pinned") else 1))
                 for k in ("alignment", "shading", "off_palette")}
        lines.append(f"         worst method by alignment: {worst['alignment']}; by shading kept: {worst['shading']}; "
                     f"by off-palette: {worst['off_palette']}; none minus static alignment {fmt(diff(no, st, 'alignment'))}")
    for m in (chosen, "static"):
        best = max(ws, key=lambda w: find_row(rows, m, w)["alignment"])
        gain = diff(find_row(rows, m, best), find_row(rows, m, ws[0]), "alignment")
        lines.append(f"{m}: alignment w = {ws[0]:g} -> best w = {best:g}: {fmt(gain)} "
                     f"({gain[0] / max(gain[1], 1e-9):.1f} s.e.)")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("phase", choices=["select", "evaluate", "samplers"])
    p.add_argument("--checkpoint", default="data/checkpoints/base32.pt")
    p.add_argument("--n-captions", type=int, default=12, help="training captions, and as many held-out ones")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--guidance", type=float, nargs="+", default=None, help="default: the phase's")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps (select, evaluate)")
    p.add_argument("--percentile", type=float, default=D.DEFAULT_THRESHOLDING.percentile, help="the chosen p (evaluate, samplers)")
    p.add_argument("--cap", type=float, default=D.DEFAULT_THRESHOLDING.cap, help="the chosen cap, 0 = none (evaluate, samplers)")
    p.add_argument("--results", default=str(HERE / "results"))
    args = p.parse_args()
    start = time.time()
    model = load_cascade([args.checkpoint])
    picked = fixed_captions(args.n_captions, draw=1 if args.phase == "select" else 0)  # select: disjoint from draw 0
    captions, n_train = picked["train"] + picked["held_out"], args.n_captions
    n_images = len(captions) * len(args.seeds)
    cap = None if args.cap <= 0 else args.cap
    chosen = D.Thresholding("dynamic", args.percentile, cap)
    print(f"{machine()}; phase {args.phase}: {len(captions)} {'selection' if args.phase == 'select' else 'evaluation'} "
          f"captions ({n_train} training, {n_train} held-out) x seeds {args.seeds} = {n_images} images per cell", flush=True)

    def progress(done, total, row):
        print(f"[{done}/{total}] {row['method']} w={row['guidance_scale']:g}: alignment {row['alignment']:.3f}, "
              f"shading {row['shading']:.3f}, pinned {row['pinned']:.3f} ({time.time() - start:.0f} s)", flush=True)

    def sweep(methods, ws, **kw):
        rows = guidance_sweep(model, captions, ws, methods=methods, seeds=args.seeds, progress=progress, **kw)
        for r in rows:
            r.update(phase=args.phase, n_images=n_images, sampler=kw.get("sampler", "ddim"), steps=kw.get("steps", args.steps),
                     alignment_train=r["scores"]["alignment"][:, :n_train].mean().item(),
                     alignment_held_out=r["scores"]["alignment"][:, n_train:].mean().item())
        return rows

    if args.phase == "select":
        ws = args.guidance or [10, 15]
        methods = ["none", "static"] + [D.Thresholding("dynamic", pp, c) for pp in (0.9, 0.95, 0.995)
                                      for c in (1.5, 2.0, 3.0, None)]
        rows = sweep(methods, ws, steps=args.steps)
        print(sweep_table(rows))
        choice, lines = select(rows, ws)
        print("\n".join(lines))
    elif args.phase == "evaluate":
        ws = args.guidance or [1, 3, 7.5, 10, 15]
        methods = list(dict.fromkeys(["none", "static", chosen, D.Thresholding("dynamic", args.percentile, None),
                                      D.IF_THRESHOLDING, D.IMAGEN_THRESHOLDING]))
        rows = sweep(methods, ws, steps=args.steps, frechet=True)
        print(sweep_table(rows))
        label = find_row(rows, chosen, ws[0])["method"]
        print("\n".join(verdict(rows, label, [w for w in ws if w >= 10] or [max(ws)])))
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        tradeoff_plot(rows, "shading", ax=axes[0], title=f"base32, DDIM {args.steps}: shading kept ({n_images} images per point)")
        tradeoff_plot(rows, "fidelity", ax=axes[1], title="off-palette fidelity")
        fig.savefig(HERE / "guidance_thresholding.png", dpi=110)
    else:
        ws = args.guidance or [15]
        rows = []
        for sampler, steps in SAMPLER_CONFIGS:
            part = sweep(["static", chosen], ws, steps=steps, sampler=sampler)
            for r in part:
                r["method"] = f"{r['method']} | {sampler} {steps}"
            rows += part
        print(sweep_table(rows))
        for sampler, steps in SAMPLER_CONFIGS:
            for w in ws:
                a = next(r for r in rows if r["method"].endswith(f"| {sampler} {steps}") and r["thresholding"] == "dynamic"
                         and r["guidance_scale"] == w)
                b = next(r for r in rows if r["method"] == f"static | {sampler} {steps}" and r["guidance_scale"] == w)
                print(f"{sampler} {steps:>3}, w = {w:g}: chosen minus static: shading {fmt(diff(a, b, 'shading'))}, "
                      f"alignment {fmt(diff(a, b, 'alignment'))}")
    out = save_rows(rows, Path(args.results) / f"guidance_thresholding_{args.phase}.csv", COLUMNS)
    print(f"wrote {out}; {n_images} images per cell; runtime {time.time() - start:.0f} s; {machine()}")


if __name__ == "__main__":
    main()
