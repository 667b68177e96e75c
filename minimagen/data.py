"""Toy data: the procedural "shapes" dataset (definition in data/shapes.json) and a folder loader.

Captions follow a small compositional grammar, in two worlds (WORLDS):
  "shapes", shaded solids on a grey ground:
    one object:  "a {size} {color} {shape}"                       e.g. "a large teal circle"
    two objects: "a {color} {shape} {relation} a {color} {shape}"  e.g. "an orange square above a pink circle"
  "contrast", the shapes world's captions and scenes, each image's objects at a contrast the caption does not
    name, from flat to harsh (data/shapes.json "contrast"): the world where dynamic thresholding wins
Captions that contain a held-out (color, shape) pair are never used for training: they test compositional
generalisation (the model has seen "blue" and "triangle", never "blue triangle"). The thresholding
investigation's textured worlds (regimes B, C and D) are archived with it, in benchmarks/archive/textured.py.

Images are float tensors [B, 3, H, W] in [-1, 1]; `to_uint8` / `from_uint8` convert to and from
uint8 arrays [..., H, W, 3]. A caption plus a seed gives a *scene* (`make_scene`), and a scene is
drawn once at RENDER_SIZE px and box-filtered down (`render_scene`), so the same (caption, seed)
looks the same at 32, 64 and 128 px: the cascade's low- and high-resolution targets agree.
"""
import csv
import itertools
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .errors import MinimagenError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
RENDER_SIZE = 256  # draw here, then box-filter down: antialiased edges, identical geometry at every size
SHADE_SIZE = 128   # objects are shaded at 128 px (or the image size if larger) and box-filtered down too
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}

# Half-width of an object as a fraction of the image side. "small" stays >= 9 px wide at 32 px, so a
# circle, a square and a triangle are still tellable; "large" is about twice that, so size is obvious.
# Two-object captions name no size: both objects get a medium-small size so they fit side by side.
HALF_SIZE = {"small": (0.14, 0.17), "large": (0.27, 0.31), None: (0.13, 0.16)}
MAX_ROTATION = 10.0  # degrees, squares and triangles only: a little variety the detector can undo


def shown_path(path) -> Path:
    """A path as messages print it: the repository's own files as data/..., not as this machine's folders
    (stored notebook outputs then read the same on every checkout); any other path as given."""
    path = Path(str(path))
    return path.relative_to(DATA_DIR.parent) if path.is_absolute() and path.is_relative_to(DATA_DIR.parent) else path


@lru_cache(maxsize=None)
def load_spec(path: str | None = None) -> dict:
    """The dataset definition (colours, shapes, sizes, relations, held-out pairs)."""
    return json.loads(Path(path or DATA_DIR / "shapes.json").read_text())


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"  # "an orange square"


def one_object_captions(spec: dict) -> list[str]:
    return [f"a {size} {color} {shape}"
            for size, color, shape in itertools.product(spec["sizes"], spec["colors"], spec["shapes"])]


def two_object_captions(spec: dict) -> list[str]:
    objects = list(itertools.product(spec["colors"], spec["shapes"]))
    return [f"{article(c1)} {c1} {s1} {rel} {article(c2)} {c2} {s2}"
            for rel in spec["relations"] for (c1, s1), (c2, s2) in itertools.product(objects, objects)
            if c1 != c2]  # two objects never share a colour, so the detector can tell them apart


def is_held_out(caption: str, spec: dict | None = None) -> bool:
    """True if the caption names a (color, shape) pair that training never sees."""
    return any(f"{a} {b}" in caption for a, b in (spec or load_spec())["held_out_pairs"])


WORLDS = ("shapes", "contrast")  # the contrast world shares the shapes world's captions and scenes (data/shapes.json)


def all_captions(split: str = "all", spec: dict | None = None, world: str = "shapes") -> list[str]:
    """Every caption the grammar makes (one world of WORLDS: both have the same captions); split is 'train',
    'held_out' or 'all'."""
    spec = spec or load_spec()
    if world not in WORLDS:
        raise MinimagenError(f"Unknown world {world!r}; use one of {', '.join(WORLDS)}.")
    captions = one_object_captions(spec) + two_object_captions(spec)
    if split == "all":
        return captions
    if split not in ("train", "held_out"):
        raise MinimagenError(f"Unknown split {split!r}; use 'train', 'held_out' or 'all'.")
    keep_held_out = split == "held_out"
    return [c for c in captions if is_held_out(c, spec) == keep_held_out]


def paraphrase_captions(n: int, seed: int = 0, split: str = "all") -> list[tuple[str, str]]:
    """n (paraphrase, caption) pairs: a caption of the grammar with every colour, shape, size and relation
    replaced by a synonym that training never shows ("a large red circle" -> "a big crimson ball",
    data/shapes.json "paraphrases"). The detector scores a sample of the paraphrase against the caption:
    does the text encoder know that crimson is red? Half one-object, half two-object captions."""
    spec = load_spec()
    words = {k: v for k, v in spec["paraphrases"].items() if not k.startswith("_")}
    rng = np.random.default_rng(seed)
    captions = all_captions(split, spec)
    groups = [[c for c in captions if len(c.split()) == 4], [c for c in captions if len(c.split()) > 4]]
    out = []
    for i in range(n):
        caption = groups[i % 2][rng.integers(len(groups[i % 2]))]
        objects, relation = parse_caption(caption)
        pick = lambda w: words[w][rng.integers(len(words[w]))]
        if relation is None:
            o = objects[0]
            text = f"{pick(o['size'])} {pick(o['color'])} {pick(o['shape'])}"
        else:
            a, b = ((pick(o["color"]), pick(o["shape"])) for o in objects)
            text = f"{a[0]} {a[1]} {pick(relation)} {article(b[0])} {b[0]} {b[1]}"
        out.append((f"{article(text)} {text}", caption))
    return out


@lru_cache(maxsize=1)
def _grammar() -> frozenset[str]:
    return frozenset(all_captions("all"))


def parse_caption(caption: str, spec: dict | None = None) -> tuple[list[dict], str | None]:
    """Caption -> ([{size, color, shape}] (size None for two-object captions), relation or None)."""
    words = caption.split()
    if " ".join(words) not in (_grammar() if spec is None else set(all_captions("all", spec))):
        raise MinimagenError(f"Caption {caption!r} is not in the shapes grammar; write e.g. 'a large teal circle' or "
                             "'a red square above a pink circle' (two different colours).")
    if len(words) == 4:
        return [dict(size=words[1], color=words[2], shape=words[3])], None
    return [dict(size=None, color=words[1], shape=words[2]),
            dict(size=None, color=words[-2], shape=words[-1])], " ".join(words[3:-3])


def background_tones(rng: np.random.Generator) -> list[list[float]]:
    """The background's top and bottom tones: neutral greys, each one's brightness jittered (all channels alike:
    a grey carries no hue). The first draws of every scene."""
    bg = load_spec()["background"]
    return [np.clip(np.array(bg[k], float) + rng.uniform(-bg["jitter"], bg["jitter"]), 0, 255).round().tolist()
            for k in ("top", "bottom")]


def make_scene(caption: str, seed=0, contrast: bool = False) -> dict:
    """A caption and a seed (int or tuple of ints) -> background tones + objects with exact geometry.

    Positions/sizes are fractions of the image side; centre is (x, y) with y pointing down. contrast=True
    (the contrast world) gives the image one contrast from data/shapes.json "contrast" range, drawn last:
    the same seed gives the shapes world's geometry.
    """
    spec, rng = load_spec(), np.random.default_rng(seed)
    objects, relation = parse_caption(caption)  # the cached grammar: no spec argument
    tones = background_tones(rng)
    if relation is None:  # large objects stay near the middle so they never touch the border
        spread = {"small": 0.2, "large": 0.04}[objects[0]["size"]]
        centers = [tuple(0.5 + rng.uniform(-spread, spread, 2))]
    else:  # first object clearly left of / above the second, gap >= 1 px at 32 px even when rotated
        along = (rng.uniform(0.22, 0.29), rng.uniform(0.71, 0.78))
        across = rng.uniform(0.38, 0.62, 2)
        centers = [(a, c) if relation == "to the left of" else (c, a) for a, c in zip(along, across)]
    out = [dict(o, center=c, half_size=float(rng.uniform(*HALF_SIZE[o["size"]])),
                angle=0.0 if o["shape"] == "circle" else float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)))
           for o, c in zip(objects, centers)]
    scene = dict(caption=caption, background=tones, gradient_angle=float(rng.uniform(-30, 30)), objects=out)
    if contrast:
        scene["contrast"] = float(rng.uniform(*spec["contrast"]["range"]))
    return scene


def _outline(obj: dict, scale: float) -> list[tuple[float, float]]:
    """Polygon vertices (pixels) of a square or an equilateral triangle, centred on its bounding box."""
    s = obj["half_size"]
    pts = [(-s, -s), (s, -s), (s, s), (-s, s)] if obj["shape"] == "square" else \
        [(0.0, -s * math.sqrt(3) / 2), (s, s * math.sqrt(3) / 2), (-s, s * math.sqrt(3) / 2)]
    a = math.radians(obj["angle"])
    (cx, cy) = obj["center"]
    return [((cx + x * math.cos(a) - y * math.sin(a)) * scale, (cy + x * math.sin(a) + y * math.cos(a)) * scale)
            for x, y in pts]


@lru_cache(maxsize=512)
def _unit_gradient(angle_deg: int, size: int) -> np.ndarray:
    """[size, size, 1] ramp 0 (top) -> 1 (bottom) along a direction tilted by angle; cached (angles repeat)."""
    r = (np.arange(size) + 0.5) / size - 0.5
    a = math.radians(angle_deg)
    ramp = r[:, None] * math.cos(a) + r[None, :] * math.sin(a)
    return (0.5 + ramp / (math.cos(a) + abs(math.sin(a))))[..., None].astype(np.float32)  # corners: 0 and 1


# Lit solids. Every object is shaded as a dome over its outline, lit from the upper left (a fixed
# light, so an object's shading pattern depends on its shape and size only, never on where it is):
#     k = KMIN + (KMAX - KMIN) * max(0, n.L)      Lambert: the light side KMAX, the shadow side KMIN
#     t = SPECULAR * max(0, n.H)^SHININESS        Blinn-Phong highlight, H halfway between L and the viewer
#     pixel = (1 - t) * k * colour + t * white
# Both terms move a colour along its own hue (scaling it, mixing it with white), and the background is
# neutral grey, so hue alone still names an object's colour exactly (metrics.detect). Inside one object
# a channel spans ~2.5x in value (e.g. red's R from 100 to 230): the detail inside an image that static
# clipping flattens at high guidance and dynamic thresholding keeps [Imagen Sec. 2.3].
LIGHT = np.array([-0.55, -0.65, 0.52]) / np.linalg.norm([-0.55, -0.65, 0.52])  # x right, y down, z to the viewer
HALFWAY = (LIGHT + [0, 0, 1]) / np.linalg.norm(LIGHT + [0, 0, 1])
KMIN, KMAX, SPECULAR, SHININESS = 0.45, 1.05, 0.5, 24


def _dome_radius(obj: dict) -> float:
    """Radius (fraction of the side) of the dome whose normals shade the object: it covers the outline."""
    return obj["half_size"] * {"circle": 1.0, "square": math.sqrt(2), "triangle": math.sqrt(7) / 2}[obj["shape"]]


def shading(obj: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, t) [size, size, 1] each: the object's diffuse factor and highlight weight at every pixel centre."""
    c = (np.arange(size) + 0.5) / size
    (cx, cy), radius = obj["center"], _dome_radius(obj)
    u, v = (c[None, :] - cx) / radius, (c[:, None] - cy) / radius  # [1,size], [size,1]: dome coordinates
    r2 = np.minimum(u**2 + v**2, 1.0)  # antialiased edge pixels can sit just outside the dome
    n = np.stack(np.broadcast_arrays(u, v, np.sqrt(1.0 - r2)), -1)  # outward normal of the unit dome
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    k = KMIN + (KMAX - KMIN) * np.maximum(n @ LIGHT, 0.0)
    t = SPECULAR * np.maximum(n @ HALFWAY, 0.0) ** SHININESS
    return k[..., None].astype(np.float32), t[..., None].astype(np.float32)


def with_contrast(paint: np.ndarray, contrast: float) -> np.ndarray:
    """The contrast world's photographic contrast: every channel stretched around mid-grey,
    p = mid + contrast (paint - mid), then brought into the pixel range *keeping its hue*: the grey level
    g = mean(p) is clipped to [0, 255] and the chroma q = p - g scaled down just enough that no channel
    leaves [0, 255]. Stretching around a grey scales q and keeps the hue (metrics.chroma); a channel that
    would leave the range ends exactly at 0 or 255, pinned, as in a harsh photograph. (Clipping each channel
    on its own would shift the hue: a harsh orange would turn red on its shadow side, yellow on its lit side.)
    So a plateau at the limit is a plausible image here, as guidance will find."""
    mid = load_spec()["contrast"]["mid"]
    p = mid + contrast * (paint - mid)
    g = np.clip(p.mean(-1, keepdims=True), 0, 255)
    q = p - p.mean(-1, keepdims=True)
    room = np.minimum(np.where(q > 0, (255 - g) / np.maximum(q, 1e-6), np.inf),
                      np.where(q < 0, g / np.maximum(-q, 1e-6), np.inf)).min(-1, keepdims=True)
    return np.clip(g + np.minimum(room, 1.0) * q, 0, 255)  # the clip only removes float rounding


def object_paint(obj: dict, size: int) -> np.ndarray:
    """[size, size, 3] RGB 0..255 of an object's surface at every pixel centre: a lit solid (`shading`)."""
    k, t = shading(obj, size)
    return (1 - t) * k * np.array(load_spec()["colors"][obj["color"]], np.float32) + t * 255


def render_scene(scene: dict, size: int = 32, paint=object_paint) -> np.ndarray:
    """Draw a scene: uint8 array [size, size, 3]. paint(obj, size): an object's surface (benchmarks/archive/
    textured.py passes its textures).

    Each object's coverage mask is drawn at RENDER_SIZE and box-filtered to SHADE_SIZE (exact area
    antialiasing), shaded there (see `shading`), and coverage and coloured coverage are box-filtered
    to `size`; then it is alpha-blended over the background ramp (a linear ramp's box average is its
    value at the pixel centre). So 32, 64 and 128 px agree as box-filtered versions of one picture,
    and no RGB image larger than SHADE_SIZE is ever made.
    """
    if not 8 <= int(size) <= RENDER_SIZE:
        raise MinimagenError(f"Image size {size} is out of range; use a size between 8 and {RENDER_SIZE} px.")
    size = int(size)
    sub = size * max(1, SHADE_SIZE // size) if SHADE_SIZE % size == 0 else size  # shading sampled at SHADE_SIZE
    top, bottom = (np.array(t, np.float32) for t in scene["background"])
    img = top + (bottom - top) * _unit_gradient(round(scene["gradient_angle"]), size)
    for obj in scene["objects"]:
        mask = Image.new("L", (RENDER_SIZE, RENDER_SIZE), 0)
        draw = ImageDraw.Draw(mask)
        if obj["shape"] == "circle":
            (cx, cy), s = obj["center"], obj["half_size"]
            draw.ellipse([(cx - s) * RENDER_SIZE, (cy - s) * RENDER_SIZE,
                          (cx + s) * RENDER_SIZE, (cy + s) * RENDER_SIZE], fill=255)
        else:
            draw.polygon(_outline(obj, RENDER_SIZE), fill=255)
        if sub != RENDER_SIZE:
            mask = mask.resize((sub, sub), Image.BOX)
        cover = np.asarray(mask, np.float32)[..., None] / 255  # [sub, sub, 1]
        color = paint(obj, sub)
        f = sub // size  # box-filter coverage and coverage-weighted colour down to `size`
        cover, painted = (a.reshape(size, f, size, f, -1).mean((1, 3)) for a in (cover, cover * color))
        img = img * (1 - cover) + painted
    if "contrast" in scene:  # the contrast world: the whole picture, as a photograph's contrast
        img = with_contrast(img, scene["contrast"])
    return img.round().astype(np.uint8)


def render(caption: str, size: int = 32, seed=0, contrast: float | None = None) -> np.ndarray:
    """Caption + seed -> uint8 image [size, size, 3]; the same (caption, seed) agrees across sizes.
    contrast: the image's contrast (the contrast world), None for the shapes world's look."""
    scene = make_scene(caption, seed)
    if contrast is not None:
        scene["contrast"] = float(contrast)
    return render_scene(scene, size)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images [..., 3, H, W] in [-1, 1] -> uint8 array [..., H, W, 3]."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def from_uint8(array) -> torch.Tensor:
    """uint8 array/tensor [..., H, W, 3] -> float images [..., 3, H, W] in [-1, 1]."""
    x = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.array(array))  # copy: PIL's are read-only
    return (x.float() / 127.5 - 1).movedim(-1, -3).contiguous()


class ShapesDataset(torch.utils.data.Dataset):
    """Seeded shapes images: item i is (image [3, size, size] in [-1, 1], caption).

    Captions are drawn from `all_captions(split, world=world)`: half one-object and half two-object
    (balanced=False: uniformly over the captions, 19 in 20 of which have two objects). Item i's scene is
    seeded by (seed, i), so the same arguments always give the same data. Images are rendered once here (about
    0.5 ms each) and kept as uint8; `scenes[i]` is item i's ground truth.
    """

    def __init__(self, size: int = 32, split: str = "train", n: int = 10000, seed: int = 0, balanced: bool = True,
                 world: str = "shapes"):
        if n < 1:
            raise MinimagenError(f"n={n} gives an empty dataset; ask for at least one image.")
        spec = load_spec()
        captions = all_captions(split, spec, world)
        groups = [g for g in ([c for c in captions if len(c.split()) == 4],
                              [c for c in captions if len(c.split()) > 4]) if g] if balanced else [captions]
        rng = np.random.default_rng(seed)
        kinds = rng.integers(0, len(groups), n)
        self.size, self.split, self.world = int(size), split, world
        self.captions = [groups[k][rng.integers(len(groups[k]))] for k in kinds]
        self.scenes = [make_scene(c, (seed, i), contrast=world == "contrast")
                       for i, c in enumerate(self.captions)]
        self.images = torch.from_numpy(np.stack([render_scene(s, self.size) for s in self.scenes]))

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return from_uint8(self.images[i]), self.captions[i]


def _read_caption_rows(path: Path) -> list[tuple[int, str, str]]:
    """(row number, file, caption) from a CSV with columns file,caption or a JSONL file."""
    rows = []
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append((n, str(row["file"]), str(row["caption"])))
            except (ValueError, KeyError, TypeError):
                raise MinimagenError(f"Line {n} of {path.name} is not a JSON object with keys 'file' and "
                                     "'caption'; fix that line.") from None
        return rows
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"file", "caption"} <= set(reader.fieldnames or []):
            raise MinimagenError(f"{path.name} needs a header row 'file,caption'; add it as the first line.")
        return [(n, (r["file"] or "").strip(), r["caption"] or "") for n, r in enumerate(reader, 2)]


class ImageCaptionFolder(torch.utils.data.Dataset):
    """Your own data: a folder of images plus captions.csv (columns file,caption) or captions.jsonl
    ({"file": ..., "caption": ...} per line). Items are (image [3, size, size] in [-1, 1], caption):
    the shorter side is resized to `size`, then the centre is cropped. Everything is checked here,
    so a bad row fails now with its name rather than halfway through training."""

    def __init__(self, folder, captions_file=None, size: int = 64):
        if not (isinstance(size, int) and 8 <= size <= 1024):
            raise MinimagenError(f"size={size!r} is not an image size: pass the stage's size in pixels (32, 64 or 128).")
        folder = Path(folder)
        if not folder.is_dir():
            raise MinimagenError(f"Image folder {folder} does not exist; pass the path of a folder of images.")
        images = {p.resolve() for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS}
        if not images:
            raise MinimagenError(f"Folder {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                                 "put your images in it.")
        if captions_file is None:
            found = [folder / n for n in ("captions.csv", "captions.jsonl") if (folder / n).is_file()]
            if len(found) != 1:
                raise MinimagenError(f"Folder {folder} needs exactly one captions.csv or captions.jsonl "
                                     f"(found {len(found)}); add one or pass captions_file=.")
            captions_file = found[0]
        captions_file = Path(captions_file)
        if not captions_file.is_file():
            raise MinimagenError(f"Captions file {captions_file} does not exist; pass the path of your captions file.")
        self.size, self.items = int(size), []
        for n, file, caption in _read_caption_rows(captions_file):
            path = (folder / file).resolve()
            if path not in images:
                raise MinimagenError(f"Row {n} of {captions_file.name} names {file!r}, which is not an image in "
                                     f"{folder}; fix the file name or remove the row.")
            if not caption.strip():
                raise MinimagenError(f"Row {n} of {captions_file.name} ({file}) has an empty caption; "
                                     "write a caption or remove the row.")
            self.items.append((path, caption.strip()))
        missing = sorted(images - {p for p, _ in self.items})
        if missing:
            raise MinimagenError(f"{len(missing)} image(s) have no caption row (e.g. {missing[0].name}); "
                                 f"add rows to {captions_file.name} or move them out of the folder.")
        for path in sorted(images):
            self._load(path)  # decode every image once now: a corrupt file fails here, by name

    def _load(self, path: Path) -> Image.Image:
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except Exception as e:  # PIL raises many types for bad files
            raise MinimagenError(f"Image {path.name} is unreadable or corrupt ({type(e).__name__}); "
                                 "replace it or remove it and its caption row.") from None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        path, caption = self.items[i]
        img = self._load(path)
        scale = self.size / min(img.size)
        w, h = max(self.size, round(img.width * scale)), max(self.size, round(img.height * scale))
        img = img.resize((w, h), Image.LANCZOS)
        left, top = (w - self.size) // 2, (h - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        return from_uint8(np.asarray(img)), caption
