"""Scoring samples [Imagen Sec. 2.2-2.4]: caption alignment (the paper's CLIP score), fidelity and the
detail measures of a set of images, paired differences between two settings run from the same noise, what
thresholding does at every step of one run, and an SR stage's noise-augmentation sweep.

    traj = x0_trajectory(model, captions, guidance_scale=15, method="dynamic", steps=25)

A method is a diffusion.Thresholding, or a method name for that method with the default p and cap; a row's
"method" is its label ("static", "dynamic p=0.9 cap=1.5"). The guidance x thresholding sweep the benchmarks run
is benchmarks/common.py's guidance_sweep.
"""
import math

import torch

from . import metrics
from .diffusion import DEFAULT_THRESHOLDING, Thresholding, as_thresholding, dynamic_threshold_scale


def rule_fields(rule: Thresholding) -> dict:
    """A rule's columns in a row of results."""
    return dict(method=rule.label, thresholding=rule.method, percentile=rule.percentile, cap=rule.cap)


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error (std / sqrt(n)) over the values that are not NaN (a score that does
    not apply to an image, such as detail kept for a 'plain' caption); the error is 0 for a single value."""
    values = values.double().flatten()
    values = values[~values.isnan()]
    se = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return values.mean().item(), se


SCORES = ("alignment", "off_palette", "shading", "pinned")


def score_images(images, captions, alignment=metrics.caption_alignment, detail=metrics.detail_scores) -> dict:
    """images [seeds, B, 3, H, W] for `captions` -> for each score in SCORES its mean over all images
    and standard error (`alignment`, `alignment_se`, ...), fidelity = 1 - off_palette, and the
    per-image `scores` [seeds, B]: caption alignment, off-palette fraction, and the detail measures
    (metrics.detail_scores: shading kept inside the objects, fraction of object pixels pinned at +-1).
    alignment, detail: the readers of another world's captions (benchmarks/archive/textured.py)."""
    flat, caps = images.flatten(0, 1), list(captions) * images.shape[0]
    scores = {"alignment": alignment(flat, caps), "off_palette": metrics.off_palette_fraction(flat),
              **detail(flat, caps)}
    scores = {k: scores[k].view(images.shape[:2]) for k in SCORES}
    out = {}
    for key, values in scores.items():
        out[key], out[f"{key}_se"] = _mean_se(values)
    return dict(out, fidelity=1.0 - out["off_palette"], scores=scores)


def paired_difference(row_a, row_b, key="off_palette") -> tuple[float, float]:
    """Mean and standard error of row_a's per-image score minus row_b's. Rows of one sweep are paired
    (same caption, same seed, same starting noise), so this is far less noisy than comparing means."""
    return _mean_se(row_a["scores"][key] - row_b["scores"][key])


def x0_trajectory(model, captions, guidance_scale=7.5, method=DEFAULT_THRESHOLDING, steps=25, seed=0, sampler="ddim"
                  ) -> dict:
    """Sample the base stage once and record, at every sampling step i (via the sampler's callback):
      x_t [T, B, 3, H, W]   the noisy image the network saw
      x0_raw                its predicted clean image, before thresholding
      x0                    the same after thresholding (what the step used)
      s [T, B]              dynamic thresholding's divisor at each step (1 for the other methods)
      outside [T, B]        the fraction of x0_raw's values outside [-1, 1]
      log_snr [T], t [T]    the noise level of step i (t = 1 noise .. 0 data)
    plus images (the final samples), method (label), guidance_scale, captions. All on the CPU."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    rule = as_thresholding(method)
    record = {"x_t": [], "x0_raw": [], "x0": [], "log_snr": [], "s": [], "outside": []}

    def callback(i, log_snr, x_t, x0_raw, x0):
        s = (dynamic_threshold_scale(x0_raw, rule.percentile, rule.cap) if rule.method == "dynamic"
             else torch.ones(len(x0_raw)))
        outside = (x0_raw.abs() > 1).float().flatten(1).mean(1)
        for key, value in zip(record, (x_t, x0_raw, x0, log_snr[0], s, outside)):
            record[key].append(value.detach().float().cpu())

    images = model.sample(captions, guidance_scale=float(guidance_scale), thresholding=rule, steps=steps,
                          sampler=sampler, seed=seed, stages=1, callback=callback).cpu()
    out = {key: torch.stack(values) for key, values in record.items()}
    out["t"] = torch.linspace(1.0, 0.0, steps + 1)[:steps]  # sample_loop's time grid, step i at t[i]
    out.update(images=images, **rule_fields(rule), guidance_scale=float(guidance_scale), captions=captions)
    return out


def aug_level_sweep(sr_model, lowres_images, captions, aug_levels=(0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0), seeds=(0,),
                    guidance_scale=3.0, steps=25, thresholding=DEFAULT_THRESHOLDING, label="", progress=None) -> list[dict]:
    """Noise-conditioning augmentation at sampling time [Imagen Sec. 2.4; Ho et al. 2021, Sec. 4.3]:
    upsample the same low-res images with the SR stage at each augmentation level and score the results.
    sr_model: an SR-only cascade (load_cascade([sr checkpoint])); lowres_images [B, 3, h, w] in [-1, 1],
    e.g. the base stage's samples for `captions`. One row per level, keys as in guidance_sweep
    (alignment(_se), off_palette(_se), fidelity, scores, images) plus aug_level and label.
    Level 0 hands the SR stage the base image untouched; 1 replaces it with pure noise (the SR stage
    then draws from the caption alone)."""
    captions, seeds, rows = list(captions), list(seeds), []
    for level in aug_levels:
        images = torch.stack([sr_model.sample(captions, guidance_scale=float(guidance_scale), thresholding=thresholding,
                                              steps=steps, seed=seed, lowres_images=lowres_images,
                                              lowres_aug_level=float(level)).cpu() for seed in seeds])
        row = dict(label=label, aug_level=float(level), **score_images(images, captions), images=images,
                   captions=captions)
        rows.append(row)
        if progress is not None:
            progress(len(rows), len(aug_levels), row)
    return rows
