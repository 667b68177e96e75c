"""Guidance and thresholding sweeps [Imagen Sec. 2.2-2.3, Fig. 4c / A.31]: sample the base stage for
every (thresholding method, guidance scale w, seed) and measure caption alignment (the paper's CLIP
score) against fidelity (its FID): the trade-off curves of notebook 07 and the benchmarks.

    rows = guidance_sweep(model, captions, [1, 3, 7.5, 15], methods=["none", "static", ("dynamic", 0.9, None)])
    traj = x0_trajectory(model, captions, guidance_scale=15, method="dynamic", steps=25)

A method is a name from diffusion.THRESHOLDING, or ("dynamic", percentile) with the default cap, or
("dynamic", percentile, cap) with cap None for the paper's uncapped rule. Every (method, w) starts
from the same noise for a given seed, so a row of a grid shows one sample changing with w.
"""
import math

import torch

from . import metrics
from .diffusion import DYNAMIC_CAP, DYNAMIC_PERCENTILE, dynamic_threshold_scale


def parse_method(method, percentile: float = DYNAMIC_PERCENTILE, cap: float | None = DYNAMIC_CAP
                 ) -> tuple[str, float, float | None, str]:
    """"static" | ("dynamic", 0.9) | ("dynamic", 0.9, None) -> (name, percentile, cap, label), the
    label used in tables and plots: "dynamic p=0.9 cap=1.5", "dynamic p=0.9 uncapped"."""
    spec = tuple(method) if isinstance(method, (tuple, list)) else (method,)
    name, p, cap = (spec + (percentile, cap)[len(spec) - 1:])[:3]
    if name != "dynamic":
        return name, float(p), cap, name
    return name, float(p), cap, f"dynamic p={float(p):g} " + ("uncapped" if cap is None else f"cap={float(cap):g}")


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error (std / sqrt(n)) over the values that are not NaN (a score that does
    not apply to an image, such as detail kept for a 'plain' caption); the error is 0 for a single value."""
    values = values.double().flatten()
    values = values[~values.isnan()]
    se = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return values.mean().item(), se


SCORES = ("alignment", "off_palette", "shading", "pinned")


def score_images(images, captions) -> dict:
    """images [seeds, B, 3, H, W] for `captions` -> for each score in SCORES its mean over all images
    and standard error (`alignment`, `alignment_se`, ...), fidelity = 1 - off_palette, and the
    per-image `scores` [seeds, B]: caption alignment, off-palette fraction, and the detail measures
    (metrics.detail_scores: shading kept inside the objects, fraction of object pixels pinned at +-1)."""
    flat, caps = images.flatten(0, 1), list(captions) * images.shape[0]
    scores = {"alignment": metrics.caption_alignment(flat, caps), "off_palette": metrics.off_palette_fraction(flat),
              **metrics.detail_scores(flat, caps)}
    scores = {k: scores[k].view(images.shape[:2]) for k in SCORES}
    out = {}
    for key, values in scores.items():
        out[key], out[f"{key}_se"] = _mean_se(values)
    return dict(out, fidelity=1.0 - out["off_palette"], scores=scores)


def guidance_sweep(model, captions, guidance_scales, methods=("none", "static", "dynamic"), percentile=DYNAMIC_PERCENTILE,
                   seeds=(0,), steps=25, sampler="ddim", frechet=False, progress=None, cap=DYNAMIC_CAP) -> list[dict]:
    """One row per (method, w): the base stage sampled once per seed for all captions, then
      alignment, alignment_se   mean caption alignment over the seeds x captions images, its standard error
      off_palette, off_palette_se   mean fraction of pixels no real image has (over-saturation, noise)
      shading, pinned (+ _se)   the detail measures: shading kept inside the objects (1 = as real), and
                                the fraction of object pixels pinned at +-1 (metrics.detail_scores)
      fidelity = 1 - off_palette   (higher is better)
      raw_x0_max, raw_x0_outside   largest |predicted x0| over all steps, mean fraction of its pixels outside
                                   [-1, 1] (the train/test mismatch); x0_max: largest |x0| after thresholding
      frechet, frechet_se       (frechet=True) Fréchet distance to real images per seed: mean, s.e. over seeds
      scores                    {'alignment', 'off_palette', 'shading', 'pinned'}: per image [seeds, captions]
      images, captions          [seeds, captions, 3, H, W] on the CPU (for grids), and the captions.
    progress: optional callable(done, total, row) to report each row (sweeps are slow on a CPU)."""
    captions, seeds = list(captions), list(seeds)
    total, rows = len(methods) * len(guidance_scales), []
    for method in methods:
        name, p, c, label = parse_method(method, percentile, cap)
        for w in guidance_scales:
            seen = {"raw_max": 0.0, "max": 0.0, "outside": []}

            def callback(i, log_snr, x_t, x0_raw, x0):  # how far guidance pushes x0 out of the data range
                seen["raw_max"] = max(seen["raw_max"], x0_raw.abs().max().item())
                seen["max"] = max(seen["max"], x0.abs().max().item())
                seen["outside"].append((x0_raw.abs() > 1).float().mean().item())

            images = torch.stack([model.sample(captions, guidance_scale=float(w), thresholding=name, percentile=p, cap=c,
                                               steps=steps, sampler=sampler, seed=seed, stages=1, callback=callback).cpu()
                                  for seed in seeds])  # [S, B, 3, H, W]
            row = dict(method=label, thresholding=name, percentile=p, cap=c, guidance_scale=float(w),
                       **score_images(images, captions), raw_x0_max=seen["raw_max"], x0_max=seen["max"],
                       raw_x0_outside=sum(seen["outside"]) / len(seen["outside"]), images=images, captions=captions)
            if frechet:  # a set statistic: one value per seed (needs many captions to mean much)
                row["frechet"], row["frechet_se"] = _mean_se(torch.tensor([metrics.fidelity(x)["frechet"] for x in images]))
            rows.append(row)
            if progress is not None:
                progress(len(rows), total, row)
    return rows


def paired_difference(row_a, row_b, key="off_palette") -> tuple[float, float]:
    """Mean and standard error of row_a's per-image score minus row_b's. Rows of one sweep are paired
    (same caption, same seed, same starting noise), so this is far less noisy than comparing means."""
    return _mean_se(row_a["scores"][key] - row_b["scores"][key])


def find_row(rows, method, guidance_scale) -> dict:
    """The sweep row with this method label (or method spec) and guidance scale."""
    label = method if isinstance(method, str) and method in {r["method"] for r in rows} else parse_method(method)[3]
    for r in rows:
        if r["method"] == label and r["guidance_scale"] == float(guidance_scale):
            return r
    raise KeyError(f"no sweep row for method {label!r} at w = {guidance_scale}")


def x0_trajectory(model, captions, guidance_scale=7.5, method="dynamic", steps=25, seed=0,
                  percentile=DYNAMIC_PERCENTILE, sampler="ddim", cap=DYNAMIC_CAP) -> dict:
    """Sample the base stage once and record, at every sampling step i (via the sampler's callback):
      x_t [T, B, 3, H, W]   the noisy image the network saw
      x0_raw                its predicted clean image, before thresholding
      x0                    the same after thresholding (what the step used)
      s [T, B]              dynamic thresholding's divisor at each step (1 for the other methods)
      outside [T, B]        the fraction of x0_raw's values outside [-1, 1]
      log_snr [T], t [T]    the noise level of step i (t = 1 noise .. 0 data)
    plus images (the final samples), method (label), guidance_scale, captions. All on the CPU."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    name, p, c, label = parse_method(method, percentile, cap)
    record = {"x_t": [], "x0_raw": [], "x0": [], "log_snr": [], "s": [], "outside": []}

    def callback(i, log_snr, x_t, x0_raw, x0):
        s = dynamic_threshold_scale(x0_raw, p, c) if name == "dynamic" else torch.ones(len(x0_raw))
        outside = (x0_raw.abs() > 1).float().flatten(1).mean(1)
        for key, value in zip(record, (x_t, x0_raw, x0, log_snr[0], s, outside)):
            record[key].append(value.detach().float().cpu())

    images = model.sample(captions, guidance_scale=float(guidance_scale), thresholding=name, percentile=p, cap=c,
                          steps=steps, sampler=sampler, seed=seed, stages=1, callback=callback).cpu()
    out = {key: torch.stack(values) for key, values in record.items()}
    out["t"] = torch.linspace(1.0, 0.0, steps + 1)[:steps]  # sample_loop's time grid, step i at t[i]
    out.update(images=images, method=label, thresholding=name, percentile=p, cap=c, guidance_scale=float(guidance_scale),
               captions=captions)
    return out


def aug_level_sweep(sr_model, lowres_images, captions, aug_levels=(0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0), seeds=(0,),
                    guidance_scale=3.0, steps=25, thresholding="dynamic", frechet=False, label="",
                    progress=None, percentile=DYNAMIC_PERCENTILE, cap=DYNAMIC_CAP) -> list[dict]:
    """Noise-conditioning augmentation at sampling time [Imagen Sec. 2.4; Ho et al. 2021, Sec. 4.3]:
    upsample the same low-res images with the SR stage at each augmentation level and score the results.
    sr_model: an SR-only cascade (load_cascade([sr checkpoint])); lowres_images [B, 3, h, w] in [-1, 1],
    e.g. the base stage's samples for `captions`. One row per level, keys as in guidance_sweep
    (alignment(_se), off_palette(_se), fidelity, frechet(_se), scores, images) plus aug_level and label.
    Level 0 hands the SR stage the base image untouched; 1 replaces it with pure noise (the SR stage
    then draws from the caption alone)."""
    captions, seeds, rows = list(captions), list(seeds), []
    for level in aug_levels:
        images = torch.stack([sr_model.sample(captions, guidance_scale=float(guidance_scale), thresholding=thresholding,
                                              percentile=percentile, cap=cap, steps=steps, seed=seed, lowres_images=lowres_images,
                                              lowres_aug_level=float(level)).cpu() for seed in seeds])
        row = dict(label=label, aug_level=float(level), **score_images(images, captions), images=images,
                   captions=captions)
        if frechet:
            row["frechet"], row["frechet_se"] = _mean_se(torch.tensor([metrics.fidelity(x)["frechet"] for x in images]))
        rows.append(row)
        if progress is not None:
            progress(len(rows), len(aug_levels), row)
    return rows
