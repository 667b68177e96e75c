"""Evaluation for the shapes data: caption alignment (the paper's CLIP score), detail and fidelity.

CLIP can't judge 32 px toy images, but here we know the world exactly: `detect` reads the objects
back out of an image (colour, shape, size, centre), and `caption_alignment` checks them against the
caption's grammar. `detail_scores` measures what clipping destroys inside the objects (their shading,
and the pixels pinned at the limits), `off_palette_fraction` the pixels no real image contains
(over-saturation from static clipping at high guidance lands there), and `detail_error` what a
super-resolution stage adds. (The benchmarks' Fréchet distance, FID's formula on a tiny feature net,
is benchmarks/fid.py: a set statistic that needs hundreds of images.)
"""
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from . import data
from .data import load_spec, parse_caption
from .errors import MinimagenError

LAM_ON = 0.2  # chroma, as a fraction of the colour's own, that makes a pixel part of an object
MIN_AREA = 0.005  # objects smaller than this fraction of the image are noise, not objects
TRIANGLE_MOMENT, SQUARE_MOMENT = 0.3, 0.2  # thresholds half-way between ~0 and the ideal 0.65 / 0.43
AREA_FACTOR = {"circle": math.pi, "square": 4.0, "triangle": math.sqrt(3)}  # area / half_size^2
LARGE = 0.22  # half-width (fraction of image side): small shapes are 0.13-0.17, large 0.27-0.31
HUGE = 0.335  # above this an object is bigger than any real large one: it reads "huge", which no caption here says
OFF_PALETTE = 30.0  # 0-255 units: farther than this from every real colour (or a blend) is off-palette


def _palette() -> tuple[list[str], torch.Tensor]:
    """Colour names and their base RGB tones [K,3] (0..255)."""
    spec = load_spec()
    return list(spec["colors"]), torch.tensor(list(spec["colors"].values())).float()


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    """[3,H,W] or [B,3,H,W] in [-1,1] -> [B,3,H,W] float in 0..255."""
    images = torch.as_tensor(images)
    images = images[None] if images.dim() == 3 else images
    if images.dim() != 4 or images.shape[1] != 3:
        raise MinimagenError(f"Expected images [B, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}; "
                             "pass RGB image tensors.")
    return (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5


def chroma(x: torch.Tensor) -> torch.Tensor:
    """The colourful part of RGB [..., 3]: the pixel minus its grey level (mean), q = p - mean(p).
    A grey has q = 0. Shading scales q (k * colour) or leaves it alone (mixing with white or with the
    grey background adds only grey), so q's direction, the hue, is the object's colour throughout."""
    return x - x.mean(-1, keepdim=True)


def _segment(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel colour label [B,H,W] (palette index, -1 background) and coverage [B,K,H,W] of
    each colour, for images x [B,3,H,W] in 0..255. Colour by hue, as in data.shading:

    a real pixel's chroma is q = lam * q(colour) with lam = alpha (1 - t) k: alpha the object's
    coverage (antialiased edge), k its shading, t its highlight. For each colour we project q onto
    q(colour): lam is the projection, the residual is how far the hue is off. A pixel takes the colour
    with the smallest residual, and belongs to it if lam >= LAM_ON (half the darkest shading times
    half coverage would be 0.22). Coverage: lam over the brightest lam among the pixel's 3x3
    neighbours of the same colour (the shading hardly changes across one pixel), 1 deep inside.
    """
    _, colors = _palette()
    B, _, H, W = x.shape
    q = chroma(x.permute(0, 2, 3, 1))  # [B,H,W,3]
    qc = chroma(colors)  # [K,3]
    lam = q @ qc.T / (qc**2).sum(-1)  # [B,H,W,K]
    resid2 = (q**2).sum(-1, keepdim=True) - lam**2 * (qc**2).sum(-1)
    resid2 = torch.where(lam > 0, resid2, torch.inf)
    best = resid2.argmin(-1)
    lam_best = lam.gather(-1, best[..., None])[..., 0]
    # hue within ~30 degrees of the colour's (residual < half the projection) and enough of it
    on = (lam_best >= LAM_ON) & (resid2.gather(-1, best[..., None])[..., 0] < (0.5 * lam_best) ** 2 * (qc**2).sum(-1)[best])
    labels = torch.where(on, best, -1)
    lam = lam.permute(0, 3, 1, 2).clamp(min=0)  # [B,K,H,W]
    same = labels[:, None] == torch.arange(len(colors))[None, :, None, None]
    ref = F.max_pool2d(lam * same, 3, 1, 1)
    inside = F.avg_pool2d(same.float(), 3, 1, 1, count_include_pad=False) == 1
    alpha = torch.where(inside & same, 1.0, (lam / ref.clamp(min=1e-3)).clamp(0, 1))
    return labels, alpha


def _largest_component(masks: torch.Tensor) -> torch.Tensor:
    """Keep each [H,W] mask's largest 8-connected component (a stray blob must not count as part
    of the object). Found on a <= 32 px grid (max-pooled), which is fast and ample for this."""
    M, H, W = masks.shape
    small = F.adaptive_max_pool2d(masks[:, None].float(), (min(H, 32), min(W, 32)))[:, 0]
    h, w = small.shape[1:]
    lab = torch.arange(1, h * w + 1, dtype=torch.float32).reshape(1, h, w) * small
    while True:  # every pixel takes the largest id among its neighbours until nothing changes
        new = F.max_pool2d(lab[:, None], 3, 1, 1)[:, 0] * small
        if torch.equal(new, lab):
            break
        lab = new
    ids = lab.long().flatten(1)  # component sizes by counting ids; id 0 is "not in the mask"
    counts = torch.zeros(M, h * w + 1).scatter_add_(1, ids, torch.ones(ids.shape)).index_fill_(1, torch.tensor([0]), 0)
    keep = (lab == counts.argmax(1)[:, None, None]) & (small > 0)
    return masks & (F.interpolate(keep[:, None].float(), size=(H, W), mode="nearest")[:, 0] > 0)


def _describe(alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """Shape statistics, size and centre of objects from their soft coverage maps [M,H,W].

    Rotation-invariant harmonic moments about the centroid, z = x + iy:
    |sum a z^3| / sum a |z|^3 is ~0.65 for a triangle and ~0 for a circle or square (3-fold symmetry),
    |sum a z^4| / sum a |z|^4 is ~0.43 for a square and ~0 for a circle or triangle (4-fold).
    Coverage-weighted sums are sub-pixel accurate, so this holds even for 9 px shapes at 32 px.
    """
    _, H, W = alpha.shape
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    area = alpha.sum((1, 2))
    cx, cy = (alpha * xs).sum((1, 2)) / area, (alpha * ys).sum((1, 2)) / area
    z = torch.complex(xs - cx[:, None, None], ys - cy[:, None, None])
    r = z.abs()
    tri = (alpha * z**3).sum((1, 2)).abs() / (alpha * r**3).sum((1, 2))
    sq = (alpha * z**4).sum((1, 2)).abs() / (alpha * r**4).sum((1, 2))
    return dict(area=area / (H * W), x=cx / W, y=cy / H, tri=tri, sq=sq)


def _detect_batch(x: torch.Tensor, names: list[str]) -> list[list[dict]]:
    labels, alpha = _segment(x)
    B, min_px = labels.shape[0], MIN_AREA * labels[0].numel()
    masks = labels[:, None] == torch.arange(len(names))[None, :, None, None]  # [B,K,H,W]
    # drop pixels with fewer than 2 same-colour neighbours: noise speckle, not part of any object
    masks &= F.avg_pool2d(masks.float(), 3, 1, 1, count_include_pad=False) * 9 >= 2.5
    b_idx, k_idx = torch.nonzero(masks.sum((2, 3)) >= min_px, as_tuple=True)
    blobs = _largest_component(masks[b_idx, k_idx])
    # soft coverage: the blob plus its 1-px rim (antialiased edge), minus other objects' pixels
    rim = F.max_pool2d(blobs[:, None].float(), 3, 1, 1)[:, 0] > 0
    other = (labels[b_idx] >= 0) & (labels[b_idx] != k_idx[:, None, None])
    stats = {k: v.tolist() for k, v in _describe(alpha[b_idx, k_idx] * (rim & ~other)).items()}
    found = [[] for _ in range(B)]
    for i, (b, k, big) in enumerate(zip(b_idx.tolist(), k_idx.tolist(), (blobs.sum((1, 2)) >= min_px).tolist())):
        if big:
            tri, sq = stats["tri"][i], stats["sq"][i]
            shape = "triangle" if tri > TRIANGLE_MOMENT else "square" if sq > SQUARE_MOMENT else "circle"
            half = math.sqrt(stats["area"][i] / AREA_FACTOR[shape])  # area = factor * half_size^2
            found[b].append(dict(color=names[k], shape=shape,
                                 size="huge" if half > HUGE else "large" if half > LARGE else "small",
                                 half_size=half, center=(stats["x"][i], stats["y"][i]), area=stats["area"][i],
                                 triangularity=tri, squareness=sq, mask=blobs[i]))
    return found


def detect(images: torch.Tensor) -> list[list[dict]] | list[dict]:
    """Objects in an image [3,H,W] (-> list of dicts) or a batch [B,3,H,W] (-> list of lists).

    Each object: color, shape ('circle'/'square'/'triangle'), size ('small'/'large'/'huge'), half_size and
    area (fractions of the image side / area), center (x, y) in [0,1] with y down (the centroid), the
    two shape statistics, and mask (bool [H,W], the object's pixels). Deterministic: per-pixel colour
    labels, one object per colour (its largest blob).
    """
    single = torch.as_tensor(images).dim() == 3
    x, names = _as_batch(images), _palette()[0]
    chunk = max(1, 2**17 // (x.shape[2] * x.shape[3]))  # bounds memory: [chunk, H*W, colours]
    found = [objs for part in x.split(chunk) for objs in _detect_batch(part, names)]
    return found[0] if single else found


def caption_attributes(objects: list[dict], caption: str) -> dict[str, bool]:
    """Which of the caption's attributes the detected objects satisfy.

    One object ("a {size} {color} {shape}"): color (an object of that colour), shape (that object's
    shape), size (its size word), count (exactly one object) -> 4 attributes.
    Two objects ("a {c1} {s1} {relation} a {c2} {s2}"): color1, shape1, color2, shape2, relation
    (first centre left of / above the second's), count (exactly two objects) -> 6 attributes.
    """
    wanted, relation = parse_caption(caption)
    by_color = {o["color"]: o for o in objects}
    out = {}
    for i, w in enumerate(wanted, 1):
        tag = "" if relation is None else str(i)
        got = by_color.get(w["color"])
        out["color" + tag] = got is not None
        out["shape" + tag] = got is not None and got["shape"] == w["shape"]
        if relation is None:
            out["size"] = got is not None and got["size"] == w["size"]
    if relation is not None:
        a, b = (by_color.get(w["color"]) for w in wanted)
        axis = 0 if relation == "to the left of" else 1
        out["relation"] = a is not None and b is not None and a["center"][axis] < b["center"][axis]
    out["count"] = len(objects) == len(wanted)
    return out


def caption_alignment(images: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Per-image fraction [B] of the caption's attributes (see `caption_attributes`) that hold."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    found = detect(_as_batch(images) / 127.5 - 1)
    if len(found) != len(captions):
        raise MinimagenError(f"Got {len(found)} images but {len(captions)} captions; pass one caption per image.")
    scores = [caption_attributes(o, c) for o, c in zip(found, captions)]
    return torch.tensor([sum(s.values()) / len(s) for s in scores])


def alignment_accuracy(images: torch.Tensor, captions: list[str]) -> float:
    """Mean caption alignment over a batch (1.0: every attribute of every caption is right)."""
    return float(caption_alignment(images, captions).mean())


# ---------------------------------------------------------------- detail: what clipping destroys
def object_profile(obj: dict, color: str, size: int) -> torch.Tensor:
    """Luminance [size, size] (0..255) a real render gives an object of this colour, shape, size and
    place (data.shading): the reference a sample's detail is compared with."""
    k, t = data.shading(_dome_of(obj), size)
    base = float(np.mean(load_spec()["colors"][color]))
    return torch.from_numpy((1 - t) * k * base + 255 * t)[..., 0]


def _dome_of(obj: dict) -> dict:
    """The scene object a detected one was drawn from: detect() reports the centroid, and a triangle's dome is
    centred on its bounding box, 0.29 half-sizes above the centroid."""
    (cx, cy), half = obj["center"], obj["half_size"]
    lift = half * math.sqrt(3) / 6 if obj["shape"] == "triangle" else 0.0
    return dict(shape=obj["shape"], center=(cx, cy - lift), half_size=half)


def object_paint_at(obj: dict, color: str, size: int) -> np.ndarray:
    """RGB [size, size, 3] (0..255) a real render paints a lit solid found by detect() (see object_profile),
    shaded at SHADE_SIZE and box-filtered down exactly as data.render_scene does."""
    f = max(1, data.SHADE_SIZE // size)
    paint = data.object_paint(dict(_dome_of(obj), color=color), size * f)
    return paint.reshape(size, f, size, f, 3).mean((1, 3))


# The contrast world (data.with_contrast): an image's contrast, read back by fitting a real render of the same
# object at each contrast of this grid to the object's luminance (least squares). The render is clipped as the
# data is, so the fit undoes the clipping exactly for renders; a sample pushed past the data reads the grid's end.
CONTRAST_GRID = np.arange(0.2, 4.0001, 0.02)


def read_contrast(lum: np.ndarray, paint: np.ndarray) -> float:
    """The contrast c whose render of this object best matches the observed luminance lum [N] (0..255):
    argmin_c mean (mean_rgb(with_contrast(paint, c)) - lum)^2, paint [N, 3] the render at contrast 1 on the
    object's pixels."""
    renders = data.with_contrast(paint[None], CONTRAST_GRID[:, None, None]).mean(-1)  # [grid, N]
    return float(CONTRAST_GRID[((renders - lum[None]) ** 2).mean(1).argmin()])


def _shading_parts(lum: torch.Tensor, ideal: torch.Tensor) -> tuple[float, float]:
    """(pattern, contrast) of an object's luminance against a real render's: pattern = corr (the same
    light side, shadow side and highlight), contrast = r = std(lum) / std(ideal) (1: as much contrast)."""
    lum, ideal = lum.double(), ideal.double()
    sl, si = lum.std().item(), ideal.std().item()
    if len(lum) < 4 or sl < 1e-6 or si < 1e-6:
        return 0.0, 0.0
    corr = ((lum - lum.mean()) * (ideal - ideal.mean())).mean().item() / (sl * si) * (len(lum) - 1) / len(lum)
    return corr, sl / si


def _shading_kept(pattern: float, contrast: float) -> float:
    """max(0, pattern) * min(r, 1/r): 1 when the object is shaded like a real one (same pattern, same
    contrast); 0 when it is flat (a clipped plateau) or unrelated (noise)."""
    return max(0.0, pattern) * min(contrast, 1 / contrast) if contrast > 0 else 0.0


def interior(mask: torch.Tensor) -> torch.Tensor:
    """An object's pixels [H, W] eroded by 1 px, without the antialiased edge's blends with the background
    (the whole mask for an object too small to erode)."""
    core = -F.max_pool2d(-mask[None, None].float(), 3, 1, 1)[0, 0] > 0
    return core if core.sum() >= 4 else mask


def detail_scores(images: torch.Tensor, captions: list[str], contrast_world: bool = False) -> dict[str, torch.Tensor]:
    """Per image [B]: how much of the shading inside the caption's objects survives.

      shading   mean over the caption's objects of `_shading_kept`: the object's luminance against a
                real render of the object found there (its colour, shape, size and place). Real renders
                score ~1; a missing object scores 0. The interior only (edges are antialiased blends).
      pinned    fraction of the objects' pixels with a channel at exactly 0 or 255 (x = -1 or +1).
                Real renders have none (the lit side peaks at 1.05 x a mid-tone colour); static clipping
                at high guidance makes plateaus of them.
      pattern, contrast   the two factors of `shading` (mean over the objects found; NaN if none):
                the correlation with the real profile, and the ratio of luminance spreads (1 = as real).

    contrast_world=True (the contrast world, where each image has its own contrast): `contrast` is the image's
    contrast read back (`read_contrast`, mean over the caption's objects found: a real render reads its own
    contrast back), and `shading` is the pattern's correlation with a real render *at that contrast*
    (clipped as the data clips), so a harsh render scores ~1 and a guided plateau with no shading scores low.
    """
    captions = [captions] if isinstance(captions, str) else list(captions)
    x = _as_batch(images)
    found = detect(x / 127.5 - 1)
    if len(found) != len(captions):
        raise MinimagenError(f"Got {len(found)} images but {len(captions)} captions; pass one caption per image.")
    q = x.round()
    lum, at_limit = q.mean(1), ((q == 0) | (q == 255)).any(1)  # [B,H,W]
    shading, pinned, pattern, contrast = [], [], [], []
    for b, (objects, caption) in enumerate(zip(found, captions)):
        by_color = {o["color"]: o for o in objects}
        kept, parts, inside = [], [], torch.zeros_like(at_limit[b])
        for want in parse_caption(caption)[0]:
            obj = by_color.get(want["color"])
            if obj is None:
                kept.append(0.0)
                continue
            core = interior(obj["mask"])
            inside |= obj["mask"]
            if contrast_world:  # the render at the contrast read back
                paint = object_paint_at(obj, want["color"], x.shape[-1])[core.numpy()]
                c = read_contrast(lum[b][core].numpy(), paint)
                pattern_c, _ = _shading_parts(lum[b][core], torch.from_numpy(data.with_contrast(paint, c).mean(-1)))
                parts.append((pattern_c, c))
                kept.append(max(0.0, pattern_c))
            else:
                parts.append(_shading_parts(lum[b][core], object_profile(obj, want["color"], x.shape[-1])[core]))
                kept.append(_shading_kept(*parts[-1]))
        shading.append(sum(kept) / len(kept))
        pattern.append(sum(p for p, _ in parts) / len(parts) if parts else math.nan)
        contrast.append(sum(c for _, c in parts) / len(parts) if parts else math.nan)
        pinned.append(at_limit[b][inside].float().mean().item() if inside.any() else 0.0)
    return dict(shading=torch.tensor(shading), pinned=torch.tensor(pinned), pattern=torch.tensor(pattern),
                contrast=torch.tensor(contrast))


# ---------------------------------------------------------------------------------------------
# What a super-resolution stage adds. Bilinear upsampling keeps an image's colours and layout, so
# caption alignment cannot tell it from a good SR stage; what differs is the detail above the input's
# resolution. `lost_detail` isolates that band; the scores compare it with real renders at that size.

def lost_detail(images: torch.Tensor, low_size: int) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> the part a round trip through low_size px removes (the band an
    upsampler from low_size must add). Bilinear upsampling of a low_size image has almost none of it."""
    low = F.interpolate(images.float(), size=low_size, mode="bilinear", antialias=True, align_corners=False)
    return images.float() - F.interpolate(low, size=images.shape[-1], mode="bilinear", align_corners=False)


def detail_energy(images: torch.Tensor, low_size: int) -> torch.Tensor:
    """[B]: mean squared `lost_detail` per image: how much fine detail (edges, highlights) it holds."""
    return lost_detail(images, low_size).pow(2).mean(dim=(1, 2, 3))


def detail_error(images: torch.Tensor, real: torch.Tensor, low_size: int) -> torch.Tensor:
    """[B]: the error of the fine detail against a real render of the same scene, in units of that
    render's detail energy: 0 = the right detail in the right place, 1 = none at all, ~0.6 = bilinear
    upsampling of the real low-res render (it keeps some of the band), > 1 = wrong detail (misplaced
    edges, noise)."""
    err = (lost_detail(images, low_size) - lost_detail(real, low_size)).pow(2).mean(dim=(1, 2, 3))
    return err / detail_energy(real, low_size).clamp_min(1e-8)


def _dist_to_triangle(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Euclidean distance from points p [N,3] to the filled triangle (a, b, c)."""
    def to_segment(u, v):
        return (p - u - (((p - u) @ (v - u)) / (v - u).dot(v - u)).clamp(0, 1)[:, None] * (v - u)).norm(dim=1)
    v0, v1, v2 = b - a, c - a, p - a  # barycentric coordinates of p's projection onto the plane
    d00, d01, d11, d20, d21 = v0.dot(v0), v0.dot(v1), v1.dot(v1), v2 @ v0, v2 @ v1
    det = d00 * d11 - d01**2
    v, w = (d11 * d20 - d01 * d21) / det, (d00 * d21 - d01 * d20) / det
    inside = (v >= 0) & (w >= 0) & (v + w <= 1)
    edges = torch.stack([to_segment(a, b), to_segment(b, c), to_segment(c, a)]).amin(0)
    return torch.where(inside, (v2 - v[:, None] * v0 - w[:, None] * v1).norm(dim=1), edges)


def _real_colour_triangles() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Triangles in RGB (0..255) whose union holds every colour a real image contains.

    A real pixel of colour c is lam * c + mu * (1, 1, 1): an object's shading and highlight
    (lam = (1 - t) k, mu = 255 t; data.shading), antialiased into the grey background g
    (lam -> 0, mu -> g). In the (lam, mu) plane of each colour that region is the hull of five corners:
    the shadow side (KMIN, 0), the lit side (KMAX, 0), the highlight's peak, and the darkest and the
    lightest background grey. Three triangles fanned from the darkest grey cover it."""
    _, colors = _palette()
    bg = load_spec()["background"]
    greys = (min(bg["top"] + bg["bottom"]) - bg["jitter"], max(bg["top"] + bg["bottom"]) + bg["jitter"])
    k_peak = data.KMIN + (data.KMAX - data.KMIN) * float(data.HALFWAY @ data.LIGHT)  # shading under the highlight
    corners = [(data.KMIN, 0.0), (data.KMAX, 0.0), ((1 - data.SPECULAR) * k_peak, 255 * data.SPECULAR),
               (0.0, greys[1])]
    out = []
    for c in colors:
        point = lambda lam, mu: lam * c + mu * torch.ones(3)
        dark = point(0.0, greys[0])
        out += [(dark, point(*p), point(*q)) for p, q in zip(corners, corners[1:])]
    return out


@lru_cache(maxsize=1)
def _off_palette_table() -> torch.Tensor:
    """Bool lookup table [64^3] over RGB cells 4 units wide: is the cell's centre off-palette?
    (Cell error <= 3.5 units, small next to the OFF_PALETTE threshold, and lookups are ~100x faster.)"""
    levels = torch.arange(64) * 4 + 1.5
    grid = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    return torch.stack([_dist_to_triangle(grid, *tri) for tri in _real_colour_triangles()]).amin(0) > OFF_PALETTE


def off_palette_fraction(images: torch.Tensor) -> torch.Tensor:
    """Per-image fraction [B] of pixels that no real image contains.

    Real pixels are a palette colour shaded, highlighted and antialiased into the grey background
    (`_real_colour_triangles`). Pixels farther than OFF_PALETTE from all of them are off-palette:
    over-saturated colours, a white-clipped background, coloured noise. Real images score 0.
    """
    q = (_as_batch(images).round().long() // 4).clamp(0, 63)  # [B,3,H,W] cell indices
    off = _off_palette_table()[q[:, 0] * 4096 + q[:, 1] * 64 + q[:, 2]]
    return off.float().flatten(1).mean(1)
