"""Static clipping vs dynamic thresholding in the contrast world (data/README.md), where guidance has somewhere
plausible to drift to: each image's contrast is a continuum the caption does not name.

  exact     no training: the exact posterior-mean denoiser (minimagen.exact) over renders of 6 captions x 3 seeds
            x 16 contrasts, guided DDIM 25, 4 samples per caption; the contrast of the data image nearest each
            sample, its pinned share, and whether it has the right caption. Beside it the fixed-palette world
            (contrast 1 only), where every rule ties, and full-frame grey patterns (contrast 0.3-2.0, no
            background), where guidance pushes the whole frame and the cap stops helping.
  evaluate  the shipped contrast32.pt on the EVALUATION captions (train_curve.py's draw 0: 16 training + 16
            held-out, seeds 0-3: 128 images per cell), w in {1, 5, 10, 15} x {none, static, the default
            (p 0.9, cap 1.5), p 0.9 uncapped, Imagen's p 0.995 uncapped}: the objects' contrast read back
            (metrics.detail_scores(contrast_world=True)), mean |x| over object and background pixels, shading kept
            against a render at that contrast, the share of pixels at the limits, alignment; each paired per image
            with the same model at w = 1 (default rule) and with static clipping at the same w.
  select    the default rule confirmed on SELECTION captions (draw 1, disjoint from draw 0) in both the contrast
            world (contrast32.pt) and the shaded shapes (base32.pt): p in {0.9, 0.95, 0.995} x cap in {1.5, 2, none}
            at w = 10 and 15 (--ws); the rule keeps the mean contrast closest to w = 1's (|paired mean difference|, averaged
            over both worlds and every w) among settings whose alignment is within 0.03 of static clipping's everywhere.

    MINIMAGEN_TEXT_ENCODER=tiny python benchmarks/contrast_world.py exact       # ~10 s
    MINIMAGEN_TEXT_ENCODER=tiny python benchmarks/contrast_world.py evaluate    # a few minutes on 2 cores
    MINIMAGEN_TEXT_ENCODER=tiny python benchmarks/contrast_world.py select
    MINIMAGEN_TEXT_ENCODER=tiny python benchmarks/contrast_world.py pair      # IF's setting minus the default, paired
    MINIMAGEN_TEXT_ENCODER=tiny python benchmarks/contrast_world.py after

  after     Imagen's successors on over-saturation, at w = 10 (diffusion.cfg_rescale, projected_guidance,
            interval_guidance), with no thresholding (how each is meant to be used) and with static clipping: the
            perfect denoiser in the contrast world and in full frames, and contrast32 (128 images, paired with w = 1).

Each phase writes benchmarks/results/contrast_world_<phase>.csv; evaluate also writes benchmarks/contrast_world.png
(the objects' contrast, the background, the pixels pinned at the limits and alignment against w, per rule) and
benchmarks/contrast_world_samples.png (one caption per column, one rule per row, at w = 10, static's and the default's
rows followed by their pinned pixels in white); `figures` redraws both from the stored CSV.
"""
import argparse
import csv
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from minimagen import data, metrics
from minimagen import diffusion as D
from common import describe_machine
from minimagen.exact import contrast_set, full_frame_set, guided_samples
from minimagen.imagen import load_cascade
from minimagen.plot import grid_figure, pinned_pixels, with_pinned

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_curve import fixed_captions  # noqa: E402  (the evaluation and selection draws every benchmark uses)

CKPTS = data.DATA_DIR / "checkpoints"
# (label, thresholding rule): the rules every phase compares
RULES = (("none", D.Thresholding("none")), ("static", D.Thresholding("static")),
         ("default p0.9 cap1.5", D.DEFAULT_THRESHOLDING), ("p0.9 uncapped", D.Thresholding("dynamic", 0.9, None)),
         ("Imagen p0.995 uncapped", D.IMAGEN_THRESHOLDING))


def mean_se(v) -> tuple[float, float]:
    v = torch.as_tensor(v, dtype=torch.float64).flatten()
    v = v[~v.isnan()]
    return v.mean().item(), (v.std().item() / len(v) ** 0.5 if len(v) > 1 else 0.0)


def write(rows, name):
    path = HERE / "results" / f"contrast_world_{name}.csv"
    path.parent.mkdir(exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path.relative_to(HERE.parent)}")


# ---------------------------------------------------------------- exact: no model error in the way
def exact_phase(args):
    rows = []
    low, high = data.load_spec()["contrast"]["range"]
    worlds = {"contrast": contrast_set(np.linspace(low, high, 16))[:2], "fixed palette": contrast_set([1.0], seeds=16)[:2],
              "full frame": full_frame_set(np.linspace(0.3, 2.0, 24)), "full frame, fixed": full_frame_set([0.9])}
    for world, (exact, levels) in worlds.items():
        for w in (1.0, 5.0, 10.0):
            for label, rule in RULES:
                x, labels = guided_samples(exact, w, rule, per_label=4 if "frame" not in world else 6)
                near = exact.nearest(x)
                rows.append(dict(world=world, guidance_scale=w, rule=label, contrast=levels[near].mean().item(),
                                 pinned=(x.abs() > 0.98).float().mean().item(),
                                 right_caption=(exact.labels[near] == labels).float().mean().item()))
                print(f"{world:>17} w={w:<4g} {label:<24} contrast {rows[-1]['contrast']:.2f}  pinned "
                      f"{rows[-1]['pinned']:.3f}  right caption {rows[-1]['right_caption']:.2f}")
    write(rows, "exact")


# ---------------------------------------------------------------- the trained model
def score(images, captions) -> dict:
    """Per image: the objects' contrast read back, shading kept against a render at that contrast, mean |x| over the
    objects' and over the background's pixels (x in [-1, 1]; the background is light grey, so a harsher picture
    has a larger |x| there), the share of pixels at the limits, and caption alignment."""
    d = metrics.detail_scores(images, captions, contrast_world=True)
    found = metrics.detect(images)
    objects = torch.stack([torch.stack([o["mask"] for o in f]).any(0) if f else torch.zeros(images.shape[-2:], dtype=torch.bool)
                           for f in found])
    level = images.abs().mean(1)  # [B, H, W]
    nan = torch.tensor(float("nan"))
    return dict(contrast=d["contrast"], shading=d["shading"],
                object_abs=torch.stack([level[i][m].mean() if m.any() else nan for i, m in enumerate(objects)]),
                background_abs=torch.stack([level[i][~m].mean() for i, m in enumerate(objects)]),
                pinned=pinned_pixels(images).flatten(1).float().mean(1),
                alignment=metrics.caption_alignment(images, captions))


def sample_scores(model, captions, w, rule, seeds, steps=25):
    images = torch.cat([model.sample(captions, guidance_scale=w, thresholding=rule[1], steps=steps, seed=s)
                        for s in seeds])
    return images, score(images, captions * len(seeds))


KEYS = ("contrast", "object_abs", "background_abs", "pinned", "shading", "alignment")


def evaluate_phase(args):
    model = load_cascade([args.checkpoint])
    draw = fixed_captions(16, 0)
    captions = draw["train"] + draw["held_out"]
    start, rows, kept = time.time(), [], {}
    _, ref = sample_scores(model, captions, 1.0, RULES[2], args.seeds)
    for w in (1.0, 5.0, 10.0, 15.0):
        for rule in RULES:
            images, s = sample_scores(model, captions, w, rule, args.seeds)
            kept[w, rule[0]] = s
            row = dict(guidance_scale=w, rule=rule[0], n_images=len(images))
            for key in KEYS:
                row[key], row[f"{key}_se"] = mean_se(s[key])
                row[f"{key}_minus_w1"], row[f"{key}_minus_w1_se"] = mean_se(s[key] - ref[key])
                row[f"{key}_minus_static"], row[f"{key}_minus_static_se"] = mean_se(s[key] - kept[w, "static"][key]) \
                    if (w, "static") in kept else (float("nan"), float("nan"))
            rows.append(row)
            print(f"w={w:<4g} {rule[0]:<24} contrast {row['contrast']:.3f} ({row['contrast_minus_w1']:+.3f} ± "
                  f"{row['contrast_minus_w1_se']:.3f} vs w=1)  background |x| {row['background_abs_minus_w1']:+.3f}  "
                  f"pinned {row['pinned']:.3f}  alignment {row['alignment']:.3f}", flush=True)
    write(rows, "evaluate" + args.tag)
    w10 = {r["rule"]: r for r in rows if r["guidance_scale"] == 10.0}
    d, st = w10["default p0.9 cap1.5"], w10["static"]
    print(f"w = 10, paired over {d['n_images']} images: static - w1 contrast {st['contrast_minus_w1']:+.3f} ± "
          f"{st['contrast_minus_w1_se']:.3f}; default - w1 {d['contrast_minus_w1']:+.3f} ± {d['contrast_minus_w1_se']:.3f}; "
          f"default - static {d['contrast_minus_static']:+.3f} ± {d['contrast_minus_static_se']:.3f}; alignment default - static "
          f"{d['alignment_minus_static']:+.3f} ± {d['alignment_minus_static_se']:.3f}")
    figures(rows, model, captions, args.tag)
    print(f"evaluate: {time.time() - start:.0f} s on {describe_machine()}, torch {torch.__version__}")


def figures(rows, model, captions, tag=""):
    """contrast_world<tag>.png from the rows; contrast_world_samples<tag>.png: six captions at w = 10, seed 0, one row per
    rule, static's and the default's followed by where they pin the picture (plot.pinned_view)."""
    figure(rows, HERE / f"contrast_world{tag}.png")
    rows_ = {"w = 1": sample_scores(model, captions[:6], 1.0, RULES[2], [0])[0]}
    rows_.update({label: sample_scores(model, captions[:6], 10.0, (label, rule), [0])[0] for label, rule in RULES})
    grid_figure(with_pinned(rows_, ("static", "default p0.9 cap1.5")), [c if len(c) < 28 else c[:26] + "…" for c in captions[:6]],
                title="contrast32.pt at w = 10, one row per rule, the same noise in every row; white: a pixel with a "
                      "channel at 0 or 255 (benchmarks/contrast_world.py)", path=HERE / f"contrast_world_samples{tag}.png")
    print(f"wrote benchmarks/contrast_world_samples{tag}.png")


def figure(rows, path):
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.9), dpi=110)
    ws = sorted({r["guidance_scale"] for r in rows})
    panels = (("contrast", "contrast read back", "contrast of the samples' objects"),
              ("background_abs", "mean |x| over the background", "background (light grey: 1 = white)"),
              ("pinned", "share of pixels at 0 or 255", "pixels pinned at the limits"),
              ("alignment", "caption alignment", "caption alignment"))
    for (label, _), marker in zip(RULES, "os^Dv"):
        rs = [next(r for r in rows if r["rule"] == label and r["guidance_scale"] == w) for w in ws]
        for ax, (key, _, _) in zip(axes, panels):
            ax.errorbar(ws, [r[key] for r in rs], [r[f"{key}_se"] for r in rs], marker=marker, label=label, capsize=2)
    w1 = next(r for r in rows if r["guidance_scale"] == 1.0 and r["rule"].startswith("default"))["contrast"]
    axes[0].axhline(w1, color="grey", ls=":", lw=1, label="w = 1, default rule")
    axes[0].axhline(np.mean(data.load_spec()["contrast"]["range"]), color="black", ls="--", lw=1,
                    label="the data's mean (renders read back exactly)")
    for ax, (_, ylabel, title) in zip(axes, panels):
        ax.set(xlabel="guidance scale w", ylabel=ylabel, title=title)
    axes[2].set(yscale="log", ylim=(1e-3, 1))  # Imagen's rule pins almost nothing: below the axis
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path.relative_to(HERE.parent)}")


def figures_phase(args):
    """Redraw the evaluate phase's figures from its stored CSV (no re-measuring)."""
    with open(HERE / "results" / f"contrast_world_evaluate{args.tag}.csv") as f:
        rows = [{k: (v if k == "rule" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
    draw = fixed_captions(16, 0)
    figures(rows, load_cascade([args.checkpoint]), draw["train"] + draw["held_out"], args.tag)


def select_phase(args):
    draw = fixed_captions(12, 1)
    captions = draw["train"] + draw["held_out"]
    settings = [(p, cap) for p in (0.9, 0.95, 0.995) for cap in (1.5, 2.0, None)]
    rows = []
    for world, ckpt in (("contrast", args.checkpoint), ("shapes", CKPTS / "base32.pt")):
        model = load_cascade([ckpt])
        _, ref = sample_scores(model, captions, 1.0, RULES[2], args.seeds)
        for w in args.ws:
            _, st = sample_scores(model, captions, w, RULES[1], args.seeds)
            for p, cap in [("static", None)] + settings:
                rule = RULES[1] if p == "static" else (f"p{p:g} cap{cap}", D.Thresholding("dynamic", p, cap))
                _, s = sample_scores(model, captions, w, rule, args.seeds)
                row = dict(world=world, guidance_scale=w, rule=rule[0], percentile=rule[1].percentile, cap=rule[1].cap)
                row["contrast_minus_w1"], row["contrast_minus_w1_se"] = mean_se(s["contrast"] - ref["contrast"])
                row["alignment_minus_static"], row["alignment_minus_static_se"] = mean_se(s["alignment"] - st["alignment"])
                row["shading"] = mean_se(s["shading"])[0]
                rows.append(row)
                print(f"{world:>8} w={w:<4g} {rule[0]:<16} contrast - w1's {row['contrast_minus_w1']:+.3f} ± "
                      f"{row['contrast_minus_w1_se']:.3f}  alignment vs "
                      f"static {row['alignment_minus_static']:+.3f}  shading {row['shading']:.3f}", flush=True)
    write(rows, "select")
    ok = {}
    for r in rows:
        if r["rule"] != "static":
            ok.setdefault(r["rule"], []).append((abs(r["contrast_minus_w1"]), r["alignment_minus_static"] >= -0.03))
    ranked = sorted((sum(c for c, _ in v) / len(v), k) for k, v in ok.items() if all(a for _, a in v))
    print("eligible settings, best first (|mean contrast - w1's|, averaged over both worlds and every w):")
    for c, k in ranked:
        print(f"  {k:<16} {c:.3f}")


def pair_phase(args):
    """The selection's runner-up question, paired: DeepFloyd IF's setting minus the default, image by image, on the
    selection draw of select_phase (same captions, seeds and noise), in both worlds at --ws."""
    draw = fixed_captions(12, 1)
    captions = draw["train"] + draw["held_out"]
    for world, ckpt in (("contrast", args.checkpoint), ("shapes", CKPTS / "base32.pt")):
        model = load_cascade([ckpt])
        for w in args.ws:
            _, d = sample_scores(model, captions, w, RULES[2], args.seeds)
            _, f = sample_scores(model, captions, w, ("IF", D.IF_THRESHOLDING), args.seeds)
            print(f"{world:>8} w={w:<4g} IF's minus the default: " + ", ".join(
                f"{k} {m:+.3f} ± {se:.3f}" for k in ("contrast", "background_abs", "pinned", "alignment")
                for m, se in [mean_se(f[k] - d[k])]), flush=True)


# ---------------------------------------------------------------- after Imagen: rescale, projected, interval guidance
VARIANTS = {"guidance (CFG)": lambda c, u, w, l: D.classifier_free_guidance(c, u, w),
            "CFG-rescale phi 0.7": lambda c, u, w, l: D.cfg_rescale(c, u, w),
            "APG (eta 0)": lambda c, u, w, l: D.projected_guidance(c, u, w),
            "interval t in (0.2, 0.8)": lambda c, u, w, l: D.interval_guidance(c, u, w, l)}


@torch.no_grad()
def sample_variant(model, captions, w, combine, thresholding="none", seed=0, steps=25):
    """The trained base stage's DDIM 25 with the guidance `combine`(x0_cond, x0_uncond, w, log_snr) on its x_0
    predictions (model.sample guides the network's v; the variants are defined on x_0)."""
    unet, B = model.unets[0], len(captions)
    embeds, mask = model.text_encoder.encode(captions)
    drop = torch.ones(B, dtype=torch.bool)
    x = torch.randn((B, 3, 32, 32), generator=torch.Generator().manual_seed(seed))
    log_snrs = D.sampling_log_snrs(steps, model.schedule)
    for i in range(steps):
        l_t, l_s = log_snrs[i].expand(B), log_snrs[i + 1].expand(B)
        c, u = (D.prediction_to_x0(model.objective, unet(x, l_t, embeds, mask, None, None, d).float(), x, l_t)
                for d in (~drop, drop))
        x0 = D.threshold(combine(c, u, w, l_t), thresholding)
        if i == steps - 1:
            return x0.clamp(-1, 1)
        x = D.ddim_step(x, x0, l_t, l_s, 0.0)


def after_phase(args):
    rows = []
    low, high = data.load_spec()["contrast"]["range"]
    worlds = {"contrast (perfect denoiser)": (*contrast_set(np.linspace(low, high, 16))[:2], 4),
              "full frame (perfect denoiser)": (*full_frame_set(np.linspace(0.3, 2.0, 24)), 6)}
    for world, (exact, levels, per) in worlds.items():
        labels = torch.arange(int(exact.labels.max()) + 1).repeat_interleave(per)
        for th in ("none", "static"):
            for name, combine in VARIANTS.items():
                fn = lambda x, l, combine=combine: combine(exact.x0(x, l, labels), exact.x0(x, l), 10.0, l)
                x = D.sample_loop(fn, (len(labels), *exact.shape), steps=25, objective="x0", thresholding=th,
                                  generator=torch.Generator().manual_seed(0))
                rows.append(dict(world=world, thresholding=th, guidance=name, contrast=levels[exact.nearest(x)].mean().item(),
                                 contrast_se=float("nan"), alignment=float("nan")))
                print(f"{world:>30} w=10 {name:<26} thresholding {th:<7} contrast {rows[-1]['contrast']:.2f}", flush=True)
    model = load_cascade([args.checkpoint])
    draw = fixed_captions(16, 0)
    captions = draw["train"] + draw["held_out"]
    cc = captions * len(args.seeds)
    ref = score(torch.cat([sample_variant(model, captions, 1.0, VARIANTS["guidance (CFG)"], seed=s) for s in args.seeds]), cc)
    for th in ("none", "static"):
        for name, combine in VARIANTS.items():
            s = score(torch.cat([sample_variant(model, captions, 10.0, combine, th, seed=s) for s in args.seeds]), cc)
            (m, se), align = mean_se(s["contrast"] - ref["contrast"]), mean_se(s["alignment"])[0]
            rows.append(dict(world="contrast32 (trained), minus w = 1", thresholding=th, guidance=name, contrast=m,
                             contrast_se=se, alignment=align))
            print(f"contrast32 w=10 {name:<26} thresholding {th:<7} contrast - w1 {m:+.3f} ± {se:.3f}  alignment {align:.3f} "
                  f"(w = 1: {ref['alignment'].mean():.3f})", flush=True)
    write(rows, "after")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=("exact", "evaluate", "select", "pair", "after", "figures"))
    ap.add_argument("--checkpoint", default=str(CKPTS / "contrast32.pt"))
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0-3 (evaluate), 0-1 (select)")
    ap.add_argument("--tag", default="", help="evaluate: a suffix for its files (another checkpoint's run)")
    ap.add_argument("--ws", type=float, nargs="+", default=[10.0, 15.0], help="select: the guidance scales")
    args = ap.parse_args()
    args.seeds = args.seeds or ([0, 1, 2, 3] if args.phase in ("evaluate", "after") else [0, 1])
    phases = {"exact": exact_phase, "evaluate": evaluate_phase, "select": select_phase, "pair": pair_phase,
              "after": after_phase, "figures": figures_phase}
    phases[args.phase](args)


if __name__ == "__main__":
    main()
