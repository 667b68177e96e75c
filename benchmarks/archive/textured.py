"""The thresholding investigation's textured worlds, archived with it (issue 22: notebook 07b,
thresholding_regimes.py, thresholding_vs_model_error.py and exact_pull.py). The lessons' worlds, the shaded
shapes and the contrast world, are minimagen.data's; these extend them through the package's one renderer
(data.render_scene(paint=paint)) and its one spec (data/shapes.json "textured"):

  "textured" (regime B): one huge flat object whose caption decides its fine detail, at the pixel limits,
      "a huge {texture} {color} {shape}", e.g. "a huge striped red circle"
  "toned" (regime C): B's captions and scenes, each image's object in a shade of its colour that the caption
      does not name (data/shapes.json "textured" tone_range and vivid_range)
  phased (regime D, exact_pull.py only): B's texture shifted by a phase of its own

Captions containing a held-out (colour, shape) or (texture, colour) pair are never trained on. The readers
(`detect` with textures, `caption_alignment`, `detail_scores`, `score_images`) extend minimagen.metrics'.
The shipped textured32(_eps).pt and toned32(_eps).pt were trained on B and C (data/checkpoints/README.md);
this module's `train` command remakes one, with the package's Trainer on the same data:

    python benchmarks/archive/textured.py train --world textured --stage 0 --preset base32 --steps 3000 \\
        --text-encoder tiny --out runs/textured32 --sample-every 1000
"""
import argparse
import itertools
import math
import sys

import numpy as np
import torch

from minimagen import data, metrics
from minimagen.data import MAX_ROTATION, background_tones, load_spec
from minimagen.errors import MinimagenError
from minimagen.evaluate import score_images as _score_images

WORLDS = ("textured", "toned")
PLAIN_STD = 12.0  # 0..255: an object's interior luminance spread below this is plain (real textures: ~30-50)


def captions(split: str = "all", world: str = "textured") -> list[str]:
    """Every textured caption ("toned" shares them); split is 'train', 'held_out' or 'all'."""
    if world not in WORLDS:
        raise MinimagenError(f"Unknown world {world!r}; use one of {', '.join(WORLDS)}.")
    if split not in ("train", "held_out", "all"):
        raise MinimagenError(f"Unknown split {split!r}; use 'train', 'held_out' or 'all'.")
    spec, t = load_spec(), load_spec()["textured"]
    out = [f"a {t['size']} {texture} {color} {shape}"
           for texture, color, shape in itertools.product(t["textures"], spec["colors"], spec["shapes"])]
    return out if split == "all" else [c for c in out if is_held_out(c) == (split == "held_out")]


def is_held_out(caption: str) -> bool:
    spec = load_spec()
    return any(f"{a} {b}" in caption for a, b in spec["held_out_pairs"] + spec["textured"]["held_out_pairs"])


def parse(caption: str) -> dict:
    """"a huge striped red circle" -> {size, texture, color, shape}."""
    if caption not in captions():
        raise MinimagenError(f"Caption {caption!r} is not in the textured grammar; write e.g. 'a huge striped red circle'.")
    words = caption.split()
    return dict(size=words[1], texture=words[2], color=words[3], shape=words[4])


def make_scene(caption: str, seed=0, toned: bool = False, phased: bool = False) -> dict:
    """A textured caption and a seed -> a scene for data.render_scene, drawn as data.make_scene draws the shapes
    world's one-object scenes (huge, near the middle). toned=True (regime C) also draws the object's shade, and
    phased=True its texture's phase (a fraction of a period along x and y), both last: the same seed gives the
    same geometry in every regime."""
    t, rng = load_spec()["textured"], np.random.default_rng(seed)
    obj = parse(caption)
    tones = background_tones(rng)
    center = tuple(0.5 + rng.uniform(-t["spread"], t["spread"], 2))
    obj = dict(obj, center=center, half_size=float(rng.uniform(*t["half_size"])),
               angle=0.0 if obj["shape"] == "circle" else float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)))
    scene = dict(caption=caption, background=tones, gradient_angle=float(rng.uniform(-30, 30)), objects=[obj])
    if toned:
        obj["tone"] = float(rng.uniform(*t["tone_range"]))
        obj["vivid"] = float(rng.uniform(*t["vivid_range"]))
    if phased:
        obj["phase"] = [float(v) for v in rng.uniform(0, 1, 2)]
    return scene


# Regime B's textures: two tones of the object's colour, fixed to the image grid (so a texture is the
# same at every size and where the object sits changes nothing). The bright tone is the colour scaled
# until its brightest channel is 255, x = +1 with no headroom; the dark tone is `dark` times it. Both
# are the colour's hue, so the detector reads colour as for the shapes, and texture by its frequency.
# Regime C's shades: `vivid` in [0, 1] moves the bright tone toward the most vivid colour of the same hue
# (the colour stretched until its channels span 0..255, which keeps every channel ratio that sets the hue),
# and `tone` in [0.6, 1] darkens both tones. Regime B is vivid 0, tone 1.
def texture_tones(color: str, vivid: float = 0.0, tone: float = 1.0, dark: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(bright, dark) RGB 0..255 of a colour's texture tones; 'plain' is their mean. dark: the dark tone's
    share of the bright one (None: data/shapes.json "textured" dark)."""
    spec = load_spec()
    c = np.array(spec["colors"][color], np.float32)
    bright = c * (255.0 / c.max())
    bright = tone * (bright + vivid * ((c - c.min()) * (255.0 / (c.max() - c.min())) - bright))
    return bright, bright * (spec["textured"]["dark"] if dark is None else dark)


def texture_pattern(texture: str, size: int, phase=(0.0, 0.0)) -> np.ndarray:
    """[size, size, 1]: 1 where the texture shows its bright tone, 0 dark, 0.5 for 'plain' (the mean).
    Stripes are horizontal bands and the checkerboard has squares, both of period 1/`period` of the side,
    shifted by phase (x, y) periods (0: on the image grid)."""
    period = load_spec()["textured"]["period"]
    half_periods = lambda shift: np.floor(((np.arange(size) + 0.5) / size * period + shift) * 2).astype(int) % 2
    rows, cols = half_periods(phase[1])[:, None], half_periods(phase[0])[None, :]
    pattern = {"striped": 1 - rows + 0 * cols, "checked": (rows == cols).astype(int), "plain": np.full((size, size), 0.5)}
    if texture not in pattern:
        raise MinimagenError(f"Unknown texture {texture!r}; use one of {sorted(pattern)}.")
    return pattern[texture].astype(np.float32)[..., None]


def paint(obj: dict, size: int) -> np.ndarray:
    """An object's surface [size, size, 3] (0..255): its texture in its shade, or a lit solid (data.object_paint)."""
    if "texture" not in obj:
        return data.object_paint(obj, size)
    bright, dark = texture_tones(obj["color"], obj.get("vivid", 0.0), obj.get("tone", 1.0), obj.get("dark"))
    return dark + (bright - dark) * texture_pattern(obj["texture"], size, obj.get("phase", (0.0, 0.0)))


def render_scene(scene: dict, size: int = 32) -> np.ndarray:
    return data.render_scene(scene, size, paint=paint)


def render(caption: str, size: int = 32, seed=0) -> np.ndarray:
    return render_scene(make_scene(caption, seed), size)


class Dataset(data.ShapesDataset):
    """ShapesDataset for a textured world: item i is (image [3, size, size] in [-1, 1], caption), captions drawn
    uniformly from `captions(split, world)`, item i's scene seeded by (seed, i)."""

    def __init__(self, size: int = 32, split: str = "train", n: int = 10000, seed: int = 0, world: str = "textured"):
        pool, rng = captions(split, world), np.random.default_rng(seed)
        rng.integers(0, 1, n)  # ShapesDataset's draw of each item's caption group (one group here): same data as before
        self.size, self.split, self.world = int(size), split, world
        self.captions = [pool[rng.integers(len(pool))] for _ in range(n)]
        self.scenes = [make_scene(c, (seed, i), toned=world == "toned") for i, c in enumerate(self.captions)]
        self.images = torch.from_numpy(np.stack([render_scene(s, self.size) for s in self.scenes]))


# ---------------------------------------------------------------- reading the textured worlds back
def _texture(lum: torch.Tensor, core: torch.Tensor) -> tuple[str, float, float]:
    """(texture, share, spread) of an object from its interior luminance. Regime B's textures sit on the
    image grid with a period of 1/P of the side (P = data/shapes.json "textured" period), and at that
    period a 2-px square wave is exactly a sinusoid, so its variance lies at one frequency: stripes at
    (0, P) cycles per side, the checkerboard at (P, P) and (P, -P). share = the fraction of the interior's
    variance at the winning texture's frequencies (1 for a real render, ~0 for noise); spread = std.
    Plain if spread < PLAIN_STD; 'none' if the variance is not where a texture puts it (share < 0.5)."""
    H, W = lum.shape
    P = load_spec()["textured"]["period"]
    ys, xs = torch.meshgrid(torch.arange(H) / H, torch.arange(W) / W, indexing="ij")
    m = core.float()
    n = m.sum().clamp(min=1)
    d = (lum - (lum * m).sum() / n) * m
    var = (d**2).sum() / n
    power = lambda fx, fy: (2 * (d * torch.exp(-2j * math.pi * (fx * xs + fy * ys))).sum().abs() ** 2 / n**2).item()
    # that is the variance of d's part at frequency (fx, fy): a sinusoid's amplitude A gives A^2 / 2
    spread = var.sqrt().item()
    shares = {"striped": power(0, P), "checked": power(P, P) + power(P, -P)}  # power: A^2 / 2 per sinusoid
    shares = {k: v / max(var.item(), 1e-9) for k, v in shares.items()}
    best = max(shares, key=shares.get)
    if spread < PLAIN_STD:
        return "plain", 1.0 - max(shares.values()), spread
    return (best if shares[best] >= 0.5 else "none"), shares[best], spread


def detect(images: torch.Tensor) -> list[list[dict]] | list[dict]:
    """metrics.detect (which reads a huge object's size: 0.36-0.40 of the side here) with each object's texture
    ('plain'/'striped'/'checked', or 'none': see `_texture`), texture_share and texture_spread."""
    single = torch.as_tensor(images).dim() == 3
    x, found = metrics._as_batch(images), metrics.detect(images)  # x: 0..255, as the detector reads it
    for b, objects in enumerate([found] if single else found):
        for o in objects:
            texture, share, spread = _texture(x[b].mean(0), metrics.interior(o["mask"]))
            o.update(texture=texture, texture_share=share, texture_spread=spread)
    return found


def caption_attributes(objects: list[dict], caption: str) -> dict[str, bool]:
    """Which of the caption's 5 attributes the objects found satisfy: colour, shape, size, texture and count (one)."""
    want = parse(caption)
    got = {o["color"]: o for o in objects}.get(want["color"])
    out = {k: got is not None and (k == "color" or got[k] == want[k]) for k in ("color", "shape", "size", "texture")}
    return dict(out, count=len(objects) == 1)


def caption_alignment(images: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Per-image fraction [B] of the caption's attributes that hold (metrics.caption_alignment's, texture too)."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    scores = [caption_attributes(o, c) for o, c in zip(detect(metrics._as_batch(images) / 127.5 - 1), captions, strict=True)]
    return torch.tensor([sum(s.values()) / len(s) for s in scores])


def object_shade(x: torch.Tensor, mask: torch.Tensor, color: str, texture: str) -> tuple[float, float]:
    """(tone, vivid): the shade of a textured object in regime C's units (texture_tones), read on
    the mask from its colour's brightest and dimmest channels, against a regime-B render (tone 1, vivid 0):
      tone  = brightest channel's mean / the render's (vividness leaves that channel alone);
      vivid = 1 - dimmest channel's mean / (tone x the render's): 0 as regime B's colour, 1 when that
              channel is at 0 (the most vivid colour of the hue).
    A real render of shade (b, v) reads (b, v) back; a guided overshoot pinned at 255 reads a tone above any
    real shade, and one pinned at 0 reads vivid 1. x [3,H,W] 0..255."""
    means = torch.from_numpy(paint(dict(color=color, texture=texture), x.shape[-1]))[mask].mean(0)  # [3]
    hi, lo = int(means.argmax()), int(means.argmin())
    tone = (x[hi][mask].mean() / means[hi]).item()
    return tone, 1.0 - (x[lo][mask].mean() / (max(tone, 1e-3) * means[lo])).item()


def detail_scores(images: torch.Tensor, captions: list[str], toned: bool = False) -> dict[str, torch.Tensor]:
    """metrics.detail_scores for textured captions: `shading` is the texture kept (its pattern times its contrast
    against a real render of the caption's texture; NaN for 'plain', which has no detail to keep), plus each
    object's shade, `tone` and `vivid` (object_shade). toned=True (regime C, where each image has its own shade)
    compares the texture with a real render *of the shade it has*, so a real render scores ~1 at any shade, and
    a texture flattened against the pixel limit scores low however vivid it is."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    x = metrics._as_batch(images)
    q, size = x.round(), x.shape[-1]
    lum, at_limit = q.mean(1), ((q == 0) | (q == 255)).any(1)  # [B,H,W]
    out = {k: [] for k in ("shading", "pinned", "pattern", "contrast", "tone", "vivid")}
    for b, (objects, caption) in enumerate(zip(metrics.detect(x / 127.5 - 1), captions, strict=True)):
        want = parse(caption)
        obj = {o["color"]: o for o in objects}.get(want["color"])
        kept, parts, tone, vivid = math.nan, (math.nan, math.nan), math.nan, math.nan
        if obj is None:
            kept = math.nan if want["texture"] == "plain" else 0.0
        else:
            core = metrics.interior(obj["mask"])
            tone, vivid = object_shade(q[b], core, want["color"], want["texture"])
            if want["texture"] != "plain":
                shade = dict(tone=tone, vivid=min(max(vivid, 0.0), 1.0)) if toned else {}
                ideal = torch.from_numpy(paint(dict(color=want["color"], texture=want["texture"], **shade), size).mean(-1))
                parts = metrics._shading_parts(lum[b][core], ideal[core])
                kept = metrics._shading_kept(*parts)
        for key, value in zip(out, (kept, at_limit[b][obj["mask"]].float().mean().item() if obj else 0.0, *parts,
                                    tone, vivid)):
            out[key].append(value)
    return {k: torch.tensor(v) for k, v in out.items()}


def score_images(images, captions, toned: bool = False) -> dict:
    """minimagen.evaluate.score_images with this module's readers (the sweep's `score` for textured captions)."""
    return _score_images(images, captions, caption_alignment, lambda x, c: detail_scores(x, c, toned=toned))


def training_data(config, world: str) -> Dataset:
    """The data `python -m minimagen train --dataset <world>` trained on while this world was the package's:
    pass it as Trainer(config, data=...)."""
    from minimagen.unet import PRESETS
    return Dataset(PRESETS[config.preset].image_size, "train", config.dataset_size, config.seed, world)


def main(argv=None):
    from minimagen.cli import add_train_args, config_from_args
    from minimagen.train import Trainer
    parser = argparse.ArgumentParser(prog="python benchmarks/archive/textured.py", description="retrain a textured world's "
                                     "base model with the package's Trainer (the flags of `python -m minimagen train`)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("--world", choices=WORLDS, required=True)
    add_train_args(p)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    config.dataset = args.world  # a label in the checkpoint; the data are passed in
    Trainer(config, data=training_data(config, args.world)).train()
    print(f"checkpoint: {config.out_dir}/last.pt  EMA weights: {config.out_dir}/ema.pt")


if __name__ == "__main__":
    sys.exit(main())
