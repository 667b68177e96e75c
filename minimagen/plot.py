"""Pictures: image grids (to PNG or into a notebook), the loss curve, and the thresholding figure."""
import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
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


def pinned_pixels(images, at: float = 0.98) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> bool [B, H, W]: the pixels with a channel at the pixel limits (|x| > at, i.e. at 0
    or 255 once stored). Their share, pinned_pixels(x).float().mean(), is how much of a picture is pinned."""
    return (images.abs() > at).any(-3)


def pinned_view(images, at: float = 0.98):
    """[B, 3, H, W] in [-1, 1] -> the same images dimmed to a third, with every pinned pixel (pinned_pixels) in
    white: where a picture is pinned, as a camera's clipping warning."""
    return torch.where(pinned_pixels(images, at)[:, None], torch.ones_like(images), images / 3 - 2 / 3)


def with_pinned(rows: dict, names=()) -> dict:
    """rows ({label: images}) with each row named in `names` followed by its pinned_view, "<label>: at the limits"."""
    out = {}
    for label, images in rows.items():
        out[label] = images
        if label in names:
            out[f"{label}: at the limits"] = pinned_view(images)
    return out


def thresholding_figure(rows: dict, captions, guidance_scale: float, path=None, note: str = "", pinned=()):
    """One row per thresholding method, one column per caption (the demo's comparison figure); each row named in
    `pinned` is followed by where it pins the picture (with_pinned)."""
    return grid_figure(with_pinned(rows, pinned), captions, f"guidance w = {guidance_scale}: no clipping vs static "
                       f"clipping vs dynamic thresholding{note}", path)
