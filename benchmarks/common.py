"""What the benchmark scripts share and the package does not need: the machine a timing ran on, the timing
precisions a machine can measure fairly, the guidance x thresholding sweep, its rows' CSV and text table, and
its trade-off figure.

Scripts in benchmarks/ import it as `from common import ...` (Python puts a script's folder first on
sys.path); tests as `from benchmarks.common import ...`.
"""
import csv
import os
from functools import lru_cache
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minimagen.device import cpu_has_bf16
from minimagen.diffusion import as_thresholding
from minimagen.evaluate import rule_fields, score_images

try:  # imported as benchmarks.common (tests) or as common (the scripts)
    from .fid import frechet_per_seed
except ImportError:
    from fid import frechet_per_seed


@lru_cache(maxsize=None)
def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."): every timing should say it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def describe_machine(device: torch.device | None = None) -> str:
    """One line for a timing: the chip, the threads and the load it ran under."""
    if device is not None and device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), host CPU {cpu_name()}"
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return f"{cpu_name()}, {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads{load}"


def usable_precisions(requested, device: torch.device | None = None) -> tuple[list[str], str | None]:
    """The precisions ("fp32", "bf16") among `requested` that a benchmark can time fairly here, and the one
    line saying why bf16 was dropped (None if nothing was). A CPU without native bf16 (e.g. AMD Zen 3)
    emulates it about 20x slower than fp32: timing it would time the emulation, not the models."""
    device = torch.device("cpu") if device is None else torch.device(device)
    native = device.type == "cuda" and torch.cuda.is_bf16_supported() or device.type == "cpu" and cpu_has_bf16()
    if native or "bf16" not in requested:
        return list(requested), None
    return [p for p in requested if p != "bf16"], (f"skipping the bf16 rounds: this {device.type} has no native bf16 "
                                                   "(avx512_bf16 or AMX on a CPU), so only fp32 is measured")


def save_rows(rows, path, columns) -> Path:
    """Write sweep rows to a CSV with these columns (tensors and images left out, floats rounded)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items() if k in columns}
                          for r in rows])
    return path


# ---------------------------------------------------------------- the guidance x thresholding sweep
def guidance_sweep(model, captions, guidance_scales, methods=("none", "static", "dynamic"), seeds=(0,), steps=25,
                   sampler="ddim", frechet=False, progress=None, score=score_images) -> list[dict]:
    """One row per (method, w) [Imagen Sec. 2.2-2.3, Fig. 4c / A.31]: the base stage sampled once per seed for all
    captions (every (method, w) from the same noise for a given seed), then
      method, thresholding, percentile, cap   the rule (a diffusion.Thresholding or a method name) and its label
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
    progress: optional callable(done, total, row) to report each row (sweeps are slow on a CPU).
    score: score_images, or another world's (benchmarks/archive/textured.py)."""
    captions, seeds = list(captions), list(seeds)
    total, rows = len(methods) * len(guidance_scales), []
    for method in methods:
        rule = as_thresholding(method)
        for w in guidance_scales:
            seen = {"raw_max": 0.0, "max": 0.0, "outside": []}

            def callback(i, log_snr, x_t, x0_raw, x0):  # how far guidance pushes x0 out of the data range
                seen["raw_max"] = max(seen["raw_max"], x0_raw.abs().max().item())
                seen["max"] = max(seen["max"], x0.abs().max().item())
                seen["outside"].append((x0_raw.abs() > 1).float().mean().item())

            images = torch.stack([model.sample(captions, guidance_scale=float(w), thresholding=rule, steps=steps,
                                               sampler=sampler, seed=seed, stages=1, callback=callback).cpu()
                                  for seed in seeds])  # [S, B, 3, H, W]
            row = dict(**rule_fields(rule), guidance_scale=float(w), **score(images, captions),
                       raw_x0_max=seen["raw_max"], x0_max=seen["max"],
                       raw_x0_outside=sum(seen["outside"]) / len(seen["outside"]), images=images, captions=captions)
            if frechet:  # a set statistic: one value per seed (needs many captions to mean much)
                row["frechet"], row["frechet_se"] = frechet_per_seed(images)
            rows.append(row)
            if progress is not None:
                progress(len(rows), total, row)
    return rows


def find_row(rows, method, guidance_scale) -> dict:
    """The sweep row with this method (a label, a name, or a Thresholding) and guidance scale."""
    label = method if isinstance(method, str) and method in {r["method"] for r in rows} else as_thresholding(method).label
    for r in rows:
        if r["method"] == label and r["guidance_scale"] == float(guidance_scale):
            return r
    raise KeyError(f"no sweep row for method {label!r} at w = {guidance_scale}")


def sweep_table(rows, frechet=None) -> str:
    """A guidance sweep (guidance_sweep) as a text table: one line per (method, w);
    x0 out = raw_x0_outside."""
    frechet = any("frechet" in r for r in rows) if frechet is None else frechet
    lines = [f"{'method':<27}{'w':>5}{'alignment':>16}{'shading kept':>16}{'pinned':>16}{'x0 out':>8}"
             + (f"{'Fréchet':>15}" if frechet else "")]
    for r in rows:
        line = (f"{r['method']:<27}{r['guidance_scale']:>5g}{r['alignment']:>9.3f} ± {r['alignment_se']:.3f}"
                f"{r['shading']:>9.3f} ± {r['shading_se']:.3f}{r['pinned']:>9.3f} ± {r['pinned_se']:.3f}"
                f"{r['raw_x0_outside']:>8.3f}")
        if frechet:
            line += f"{r['frechet']:>8.0f} ± {r['frechet_se']:<4.0f}"
        lines.append(line.rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------- the trade-off figure (guidance_thresholding.py, notebook 07b)
W_MARKERS = "os^Dv<>px*h"  # guidance scale w -> marker, in order of w


def tradeoff_plot(rows, y: str = "fidelity", ax=None, title=None):
    """Imagen Fig. 4c / A.31 in miniature: caption alignment (x) against a fidelity or detail measure
    (y), one curve per method, w growing along each curve (its marker, keyed in a second legend; no
    text on the points, so nothing overlaps); error bars are standard errors.
    y = "fidelity" (1 - off-palette fraction), "shading" (shading kept inside the objects, 1 = as real),
    "pinned" (fraction of object pixels at +-1, plotted as 1 - pinned) or "frechet" (minus the Fréchet distance)."""
    from matplotlib.lines import Line2D
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.2))
    sign, offset, name = {"frechet": (-1, 0, "- Fréchet distance (higher is better)"),
                          "shading": (1, 0, "shading kept inside objects (1 = as real)"),
                          "pinned": (-1, 1, "1 - fraction of object pixels at ±1"),
                          }.get(y, (1, 0, "fidelity = 1 - off-palette fraction"))
    ws = sorted({r["guidance_scale"] for r in rows})
    marker = {w: W_MARKERS[i % len(W_MARKERS)] for i, w in enumerate(ws)}
    methods = []
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["guidance_scale"])
        xs, ys = [r["alignment"] for r in pts], [offset + sign * r[y] for r in pts]
        line, = ax.plot(xs, ys, lw=1.2, label=method)
        methods.append(line)
        ax.errorbar(xs, ys, xerr=[r["alignment_se"] for r in pts], yerr=[r.get(f"{y}_se", 0.0) for r in pts],
                    fmt="none", ecolor=line.get_color(), elinewidth=0.7, alpha=0.4)
        for r, x_, y_ in zip(pts, xs, ys):
            ax.plot(x_, y_, marker[r["guidance_scale"]], color=line.get_color(), ms=5)
    ax.set(xlabel="caption alignment (higher is better)", ylabel=name)
    ax.set_title(title or "alignment against detail as guidance w grows", fontsize=10)
    # both legends outside the axes, on the right: inside they can hide the high-w points. The wider one (methods)
    # is the axes' own legend, the one a layout engine makes room for; the w key is added beside it.
    key = ax.legend(handles=[Line2D([], [], ls="", marker=marker[w], color="0.3", label=f"w = {w:g}") for w in ws],
                    fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0), title="guidance", title_fontsize=7)
    ax.add_artist(key)
    ax.legend(handles=methods, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method", title_fontsize=7)
    if ax.figure.get_layout_engine() is None:  # a figure made with layout="constrained" lays itself out
        ax.figure.tight_layout()
    return ax
