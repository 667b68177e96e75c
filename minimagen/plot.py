"""Pictures: image grids (to PNG or into a notebook), the loss curve, and the thresholding figure."""
import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from einops import rearrange

from .data import to_uint8


def image_grid(images, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """[B, 3, H, W] -> one uint8 [rows*H, cols*W, 3] picture, white padding between images."""
    arr = to_uint8(images)
    ncols = ncols or min(len(arr), 8)
    rows = -(-len(arr) // ncols)
    arr = np.concatenate([arr, np.full((rows * ncols - len(arr), *arr.shape[1:]), 255, np.uint8)])
    arr = np.pad(arr, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=255)
    return rearrange(arr, "(r c) h w ch -> (r h) (c w) ch", c=ncols)


def show_images(images, titles=None, ncols: int | None = None, size: float = 1.6, suptitle=None):
    """Show images in a notebook, each with an optional (wrapped) title; returns the figure."""
    arr = to_uint8(images)
    ncols = ncols or min(len(arr), 8)
    rows = -(-len(arr) // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(ncols * size, rows * (size + (0.45 if titles else 0))), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(arr):
            ax.imshow(arr[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(_wrap(str(titles[i])), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()) if suptitle else None)  # room for the suptitle
    return fig


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def save_grid(images, path, captions=None, ncols: int | None = None) -> Path:
    """Save a grid PNG (captions as titles when given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if captions is None:
        plt.imsave(path, image_grid(images, ncols))
    else:
        fig = show_images(images, captions, ncols)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path


def read_loss_log(path) -> tuple[list[int], list[float]]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [int(r["step"]) for r in rows], [float(r["loss"]) for r in rows]


def plot_loss(log_path, out_path=None, ax=None):
    """The training loss from a Trainer's loss.csv (log scale: it falls by orders of magnitude)."""
    steps, losses = read_loss_log(log_path)
    if not steps:  # a log with no rows yet (a run stopped before its first log line)
        return None
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(steps, losses, lw=1)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    if own:
        ax.figure.tight_layout()
        if out_path:
            ax.figure.savefig(out_path, dpi=100)
            plt.close(ax.figure)
    return ax


def grid_figure(rows: dict, column_titles, title=None, path=None, size: float = 1.7):
    """A labelled grid: one row per entry of `rows` ({row label: [C, 3, H, W] images}), one column per
    title (images of different sizes are drawn at the same size, so resolutions compare side by side)."""
    fig, axes = plt.subplots(len(rows), len(column_titles), figsize=(size * len(column_titles), (size + 0.2) * len(rows)),
                             squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c, img in enumerate(to_uint8(images)):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(_wrap(str(column_titles[c])), fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def thresholding_figure(rows: dict, captions, guidance_scale: float, path=None, note: str = ""):
    """One row per thresholding method, one column per caption (the demo's comparison figure)."""
    return grid_figure(rows, captions, f"guidance w = {guidance_scale}: no clipping vs static clipping vs dynamic "
                                       f"thresholding{note}", path)


# ---------------------------------------------------------------- guidance and thresholding (notebook 07)
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
    and the shading kept inside its objects (metrics.detail_scores; 1 = as shaded as a real render)."""
    from .metrics import caption_alignment, detail_scores
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
                shade = detail_scores(img, [caption_text])["shading"].item()
                ax.set_xlabel(f"align {caption_alignment(img, [caption_text]).item():.2f} · shade {shade:.2f}",
                              fontsize=7, labelpad=1)
            if i == 0:
                ax.set_title(f"w = {w:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel(_wrap(m, 14), fontsize=8)
    if caption_text is not None:
        fig.suptitle(f'"{caption_text}"', fontsize=10)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the suptitle
    return fig


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
    from .diffusion import dynamic_threshold, dynamic_threshold_scale
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
    """Regime C: each object's shade read back (metrics.object_shade), vividness (x) against tone (y), one
    colour per method; `real` = (vivid, tone) of real renders, drawn as grey dots with the data's range boxed.
    Over-saturation shows as a pile-up in the top-right corner (the most vivid, brightest shade of each hue)."""
    from matplotlib.patches import Rectangle
    from .data import load_spec
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
