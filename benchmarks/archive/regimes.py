"""Notebook 07b's machinery, archived with the investigation it served: the per-step diagnostics of a guided run
(guidance_diagnostics) and the appendix's figures. Notebook 07b and the archived scripts (thresholding_regimes.py,
thresholding_vs_model_error.py) import it from here; the package keeps what the lessons use."""
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from minimagen import metrics
from minimagen.data import to_uint8
from minimagen.diffusion import as_thresholding, dynamic_threshold_scale
from minimagen.plot import _wrap


def _low_pass(x: torch.Tensor, period: int) -> torch.Tensor:
    """The part of x [B, C, H, W] coarser than `period` px: box averages over period x period tiles.
    A box as wide as the textures' period removes them exactly (regime B: 4 px at 32 px)."""
    return F.interpolate(F.avg_pool2d(x, period), scale_factor=period, mode="nearest")


DIAGNOSTIC_RULES = ((0.9, 1.5), (0.95, 1.5), (0.995, 1.5), (0.9, None), (0.95, None), (0.995, None))


@torch.no_grad()
def guidance_diagnostics(model, captions, guidance_scale=15.0, method="static", steps=25, seed=0,
                         sampler="ddim", rules=DIAGNOSTIC_RULES) -> dict:
    """Where and when guidance pushes x0 out of range: sample the base stage once and record, at every step,
      t [T]                     the noise level (1 noise .. 0 data)
      delta, delta_low, delta_high [T]   mean |x0_cond - x0_uncond| (the caption's pull on the prediction),
                                and its parts coarser and finer than `period` px (`_low_pass`): is the caption
                                still deciding layout (low) or detail (high)?
      outside_in, outside_out [T]   the fraction of the guided raw x0's values beyond +-1 inside the caption's
                                objects (their masks in the final samples, metrics.detect) and outside them
      s {(p, cap): [T]}          dynamic thresholding's divisor under each rule, on the same raw x0 (mean over images)
    plus images (final samples), mask [B, H, W] (the objects), captions, guidance_scale and method.
    period: the textured world's period in pixels (data/shapes.json; 4 px at 32 px)."""
    from minimagen import diffusion as D
    captions = [captions] if isinstance(captions, str) else list(captions)
    rule = as_thresholding(method)
    unet, B = model.unets[0], len(captions)
    embeds, mask = (t.to(model.device) for t in model.text_encoder.encode(captions))
    drop = torch.arange(2 * B, device=embeds.device) >= B
    two = lambda t: torch.cat([t, t])
    seen = {}

    def model_fn(x, log_snr):  # the guided prediction, keeping the conditional and unconditional parts
        cond, uncond = unet(two(x), two(log_snr), two(embeds), two(mask), None, None, drop).float().chunk(2)
        seen["x0"] = [D.prediction_to_x0(model.objective, pred, x, log_snr) for pred in (cond, uncond)]
        return D.classifier_free_guidance(cond, uncond, float(guidance_scale))

    size = model.image_sizes[0]
    period = max(1, size // (2 * metrics.load_spec()["textured"]["period"]) * 2)
    record = {"delta": [], "delta_low": [], "delta_high": [], "raw_out": [], "s": []}

    def callback(i, log_snr, x_t, x0_raw, x0):
        delta = seen["x0"][0] - seen["x0"][1]
        low = _low_pass(delta, period)
        record["delta"].append(delta.abs().mean().item())
        record["delta_low"].append(low.abs().mean().item())
        record["delta_high"].append((delta - low).abs().mean().item())
        record["raw_out"].append((x0_raw.abs() > 1).cpu())  # [B, 3, H, W]
        record["s"].append([dynamic_threshold_scale(x0_raw, q, cq).mean().item() for q, cq in rules])

    model.eval()
    g = torch.Generator().manual_seed(int(seed))
    images = D.sample_loop(model_fn, (B, 3, size, size), steps, sampler, model.objective, rule, model.schedule,
                           generator=g, device=model.device, callback=callback).float().clamp(-1, 1).cpu()
    objects = torch.zeros(B, size, size, dtype=torch.bool)
    for b, found in enumerate(metrics.detect(images)):
        for o in found:
            objects[b] |= o["mask"]
    out = torch.stack(record.pop("raw_out"))  # [T, B, 3, H, W]
    inside = objects[None, :, None].expand_as(out)
    s = torch.tensor(record.pop("s"))  # [T, rules]
    return dict({k: torch.tensor(v) for k, v in record.items()}, t=torch.linspace(1.0, 0.0, steps + 1)[:steps],
                outside_in=(out & inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp(min=1),
                outside_out=(out & ~inside).flatten(1).sum(1) / (~inside).flatten(1).sum(1).clamp(min=1),
                s={rule: s[:, j] for j, rule in enumerate(rules)}, images=images, mask=objects, captions=captions,
                guidance_scale=float(guidance_scale), method=rule.label, period=period)


def regime_diagnostics_figure(curves: dict, rules=((0.995, None), (0.9, 1.5)), title=None):
    """When and where guidance overshoots, one colour per run (evaluate.guidance_diagnostics outputs keyed by
    label), against t with sampling running left to right: the caption's pull |x0_cond - x0_uncond| as its
    coarse (solid) and fine (dashed) parts; the fraction of the guided raw x0 beyond +-1 inside (solid) and
    outside (dotted) the objects; and dynamic thresholding's s under two rules (solid, dashed)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), dpi=100)
    for (label, d), color in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        t = d["t"].numpy()
        axes[0].plot(t, d["delta_low"], color=color, label=f"{label}: coarse (layout, colour)")
        axes[0].plot(t, d["delta_high"], color=color, ls="--", label=f"{label}: fine (< {d['period']} px detail)")
        axes[1].plot(t, d["outside_in"], color=color, label=f"{label}: inside the objects")
        axes[1].plot(t, d["outside_out"], color=color, ls=":", label=f"{label}: outside")
        for rule, ls in zip(rules, ("-", "--")):
            axes[2].plot(t, d["s"][rule], color=color, ls=ls,
                         label=f"{label}: p = {rule[0]:g}, " + ("uncapped" if rule[1] is None else f"cap {rule[1]:g}"))
    axes[0].set(yscale="log", ylabel="mean |x̂0(cond) − x̂0(uncond)|", title="the caption's pull on x̂0")
    axes[1].set(ylabel="fraction of guided x̂0 beyond ±1", title="where guidance overshoots")
    axes[2].set(yscale="log", ylabel="dynamic threshold s", title="s under two rules, on the same x̂0")
    for ax in axes:
        ax.set_xlabel("t  (sampling runs from 1 = noise to 0 = image)")
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def bar_compare(values: dict, xlabels=None, title=None, ax=None):
    """Grouped bars: one group per position, one bar per entry of `values` ({label: [numbers]})."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3))
    n = len(values)
    for k, (label, v) in enumerate(values.items()):
        x = np.arange(len(v)) + (k - (n - 1) / 2) * 0.8 / n
        ax.bar(x, np.asarray(v, dtype=float), width=0.8 / n, label=label)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")  # the data range ends here
    ax.set_xticks(np.arange(len(next(iter(values.values())))), xlabels)
    ax.legend(fontsize=7), ax.set_title(title or "", fontsize=9)
    ax.figure.tight_layout()
    return ax


def guidance_grid(rows, caption: int = 0, seed: int = 0, methods=None, guidance_scales=None, size: float = 1.35):
    """Images from a guidance_sweep: one row per method, one column per guidance scale w, for one
    caption and seed (every cell starts from the same noise). Under each image: its caption alignment
    and the shading kept inside its objects (metrics.detail_scores, or the texture kept for a textured caption:
    textured.detail_scores; 1 = as shaded as a real render)."""
    try:  # imported as benchmarks.archive.regimes (tests) or as regimes (the scripts, notebook 07b)
        from . import textured
    except ImportError:
        import textured
    methods = methods or list(dict.fromkeys(r["method"] for r in rows))
    guidance_scales = guidance_scales or list(dict.fromkeys(r["guidance_scale"] for r in rows))
    by_key = {(r["method"], r["guidance_scale"]): r for r in rows}
    caption_text = rows[0].get("captions", [None] * (caption + 1))[caption]
    fig, axes = plt.subplots(len(methods), len(guidance_scales), squeeze=False,
                             figsize=(size * len(guidance_scales) + 1.2, (size + 0.2) * len(methods) + 0.5))
    for i, m in enumerate(methods):
        for j, w in enumerate(guidance_scales):
            ax, img = axes[i, j], by_key[(m, float(w))]["images"][seed, caption]
            ax.imshow(to_uint8(img), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if caption_text is not None:
                reader = textured if caption_text in textured.captions() else metrics
                shade = reader.detail_scores(img, [caption_text])["shading"].item()
                ax.set_xlabel(f"align {reader.caption_alignment(img, [caption_text]).item():.2f} · shade {shade:.2f}",
                              fontsize=7, labelpad=1)
            if i == 0:
                ax.set_title(f"w = {w:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel(_wrap(m, 14), fontsize=8)
    if caption_text is not None:
        fig.suptitle(f'"{caption_text}"', fontsize=10)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the suptitle
    return fig




def threshold_scale_plot(trajectories, axes=None):
    """The step-0 feedback loop, per sampling step: dynamic thresholding's divisor s (log scale) and the
    fraction of the raw x0 outside [-1, 1], one line per trajectory (evaluate.x0_trajectory), mean
    over its captions with the range shaded."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, tr in enumerate(trajectories):
        steps = np.arange(len(tr["t"]))
        for ax, key in zip(axes, ("s", "outside")):
            v = tr[key].numpy()
            ax.plot(steps, v.mean(1), "o-", ms=3, color=f"C{k}", label=tr["method"])
            ax.fill_between(steps, v.min(1), v.max(1), color=f"C{k}", alpha=0.15)
    axes[0].set(yscale="log", xlabel="sampling step (t = 1 -> 0)", ylabel="s (x0 is divided by it)",
                title=f"dynamic thresholding's s per step, w = {trajectories[0]['guidance_scale']:g}")
    axes[1].set(xlabel="sampling step (t = 1 -> 0)", ylabel="fraction of raw x0 outside [-1, 1]",
                title="how far guidance pushes x0 out of range", ylim=(0, 1))
    for ax in axes:
        ax.title.set_fontsize(10)
        ax.legend(fontsize=7)
    axes[0].figure.tight_layout()
    return axes


def scan_line_figure(images: dict, row: int, columns=None, reference=None, title=None):
    """The R, G, B values along one pixel row of each image ({label: [3, H, W] in [-1, 1]}), beside
    the image with the row marked: static clipping shows plateaus at +-1 where a real object (and a
    kept profile) has a slope. reference: an optional real render [3, H, W], drawn dotted on every panel."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(max(3.0 * n, 5.5), 5.0), squeeze=False, gridspec_kw={"height_ratios": [1.1, 1]})
    lo, hi = columns or (0, next(iter(images.values())).shape[-1])
    xs = np.arange(lo, hi)
    for j, (label, img) in enumerate(images.items()):
        ax = axes[0, j]
        ax.imshow(to_uint8(img), interpolation="nearest")
        ax.axhline(row, color="k", lw=0.8), ax.axvline(lo - 0.5, color="k", lw=0.5, ls=":"), ax.axvline(hi - 0.5, color="k", lw=0.5, ls=":")
        ax.set_xticks([]), ax.set_yticks([]), ax.set_title(label, fontsize=9)
        ax = axes[1, j]
        for c, color in enumerate(("red", "green", "blue")):
            ax.plot(xs, img[c, row, lo:hi].float().numpy(), color=color, lw=1.4)
            if reference is not None:
                ax.plot(xs, reference[c, row, lo:hi].float().numpy(), color=color, lw=0.9, ls=":")
        for v in (-1, 1):
            ax.axhline(v, color="k", lw=0.6, ls="--")
        ax.set(ylim=(-1.1, 1.1), xlabel="pixel column")
        if j == 0:
            ax.set_ylabel("channel value (x)")
    fig.suptitle(title or "one row of pixels through the object (dotted: a real render)", fontsize=10)
    fig.tight_layout()
    return fig


def trajectory_figure(traj, step: int, size: float = 1.1):
    """One sampling step of an x0_trajectory: x_t, the raw predicted x0 (shown clipped, its range in
    the title), the thresholded x0 for each caption, and the histogram of raw vs thresholded x0."""
    B = traj["x0"].shape[1]
    fig, axes = plt.subplots(3, B + 1, figsize=(size * B + 2.2, 3 * size + 0.5), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * B + [2]})
    for r, (key, label) in enumerate([("x_t", "x_t"), ("x0_raw", "raw x0"), ("x0", "thresholded x0")]):
        for b in range(B):
            x, ax = traj[key][step, b], axes[r, b]
            ax.imshow(to_uint8(x), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(f"[{x.min():.1f}, {x.max():.1f}]", fontsize=8, labelpad=1)
            if b == 0:
                ax.set_ylabel(label, fontsize=8)
        axes[r, B].axis("off")
    gs = axes[0, B].get_gridspec()
    hist = fig.add_subplot(gs[:, B])
    raw, thr = traj["x0_raw"][step].flatten().numpy(), traj["x0"][step].flatten().numpy()
    lim = max(float(np.abs(raw).max()), 1.05)
    edges = np.linspace(-lim, lim, 50)
    hist.hist(raw, edges, color="0.6", label="raw x0"), hist.hist(thr, edges, color="C1", alpha=0.7, label="thresholded")
    hist.axvline(-1, color="k", lw=0.6, ls="--"), hist.axvline(1, color="k", lw=0.6, ls="--")
    hist.set_yscale("log"), hist.tick_params(labelsize=8), hist.legend(fontsize=8)
    fig.suptitle(f"{traj['method']}, w = {traj['guidance_scale']:g}: step {step} of {len(traj['t'])}, "
                 f"t = {float(traj['t'][step]):.2f}, log-SNR = {float(traj['log_snr'][step]):.1f}", fontsize=9)
    fig.tight_layout(pad=0.3)
    return fig


def percentile_figure(raw_x0, percentile: float, images=None, titles=None, size: float = 1.1, cap=None):
    """Dynamic thresholding of one cached raw x0 [B, 3, H, W] at this percentile (and cap): histogram
    before and after, with each sample's s; and (optional) the final samples drawn with that setting."""
    from minimagen.diffusion import dynamic_threshold, dynamic_threshold_scale
    x = dynamic_threshold(raw_x0, percentile, cap)
    s = dynamic_threshold_scale(raw_x0, percentile, cap)
    n = 0 if images is None else len(images)
    fig, axes = plt.subplots(1, n + 1, figsize=(2.6 + size * n, size + 1.0), squeeze=False,
                             gridspec_kw={"width_ratios": [2.4] + [1] * n})
    lim = max(float(raw_x0.abs().max()), 1.05)
    edges = np.linspace(-lim, lim, 50)
    ax = axes[0, 0]
    ax.hist(raw_x0.flatten().numpy(), edges, color="0.6", label="raw x0")
    ax.hist(x.flatten().numpy(), edges, color="C2", alpha=0.7, label="dynamic")
    ax.axvline(-1, color="k", lw=0.6, ls="--"), ax.axvline(1, color="k", lw=0.6, ls="--")
    ax.set_yscale("log"), ax.tick_params(labelsize=8), ax.legend(fontsize=8)
    ax.set_title(f"p = {percentile:g}, cap {'none' if cap is None else f'{cap:g}'}: s = "
                 + ", ".join(f"{v:.2f}" for v in s.tolist()), fontsize=9)
    for i in range(n):
        axes[0, i + 1].imshow(to_uint8(images[i]), interpolation="nearest")
        axes[0, i + 1].axis("off")
        if titles is not None:
            axes[0, i + 1].set_title(_wrap(str(titles[i]), 16), fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def shade_scatter(shades: dict, real=None, ax=None, title=None):
    """Regime C: each object's shade read back (textured.object_shade), vividness (x) against tone (y), one
    colour per method; `real` = (vivid, tone) of real renders, drawn as grey dots with the data's range boxed.
    Over-saturation shows as a pile-up in the top-right corner (the most vivid, brightest shade of each hue)."""
    from matplotlib.patches import Rectangle
    from minimagen.data import load_spec
    if ax is None:
        _, ax = plt.subplots(figsize=(6.8, 4.4), dpi=100)
    spec = load_spec()["textured"]
    (v0, v1), (t0, t1) = spec["vivid_range"], spec["tone_range"]
    ax.add_patch(Rectangle((v0, t0), v1 - v0, t1 - t0, fill=False, ls="--", lw=0.8, ec="0.4"))
    if real is not None:
        ax.scatter(*real, s=10, c="0.75", label="real renders")
    for (label, (vivid, tone)), m in zip(shades.items(), "os^Dv<>"):
        ax.scatter(vivid, tone, s=18, marker=m, alpha=0.75, label=label)
    ax.set(xlabel="vividness (0 = the palette's colour, 1 = the most vivid of its hue)",
           ylabel="tone (1 = brightest channel at 255)", xlim=(-0.1, 1.1))
    ax.set_title(title or "the shade of each object (dashed: the range real images span)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if ax.figure.get_layout_engine() is None:
        ax.figure.tight_layout()
    return ax
