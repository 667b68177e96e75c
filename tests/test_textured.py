"""Regime B, the textured world (benchmarks/archive/textured.py, data/shapes.json "textured"): one huge object whose
caption decides its fine detail (stripes, a checkerboard or plain) at the pixel limits. Its grammar and split, its
renders, and the detector's texture reading: >= 98% on real renders, about chance on noise."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.archive.textured import (Dataset, caption_alignment, caption_attributes, captions, detail_scores,
                                         detect, is_held_out, make_scene, parse, render, texture_tones)
from minimagen.data import all_captions, from_uint8, load_spec, parse_caption
from minimagen.errors import MinimagenError


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


def real(size, n, seed, split="all"):
    ds = Dataset(size, split, n=n, seed=seed, world="textured")
    return from_uint8(ds.images), ds


def alignment_accuracy(images, caps):
    return caption_alignment(images, caps).mean().item()


def test_grammar_split_and_parse():
    spec = load_spec()
    train, held = captions("train"), captions("held_out")
    n = len(spec["textured"]["textures"]) * len(spec["colors"]) * len(spec["shapes"])
    assert len(train) + len(held) == n and not set(train) & set(held)
    assert all(is_held_out(c) for c in held) and not any(is_held_out(c) for c in train)
    # both kinds of held-out pair: a (texture, colour) one and a (colour, shape) one
    assert "a huge striped green circle" in held and "a huge plain blue triangle" in held
    assert not set(train) & set(all_captions("all"))  # the worlds share no caption
    assert parse("a huge checked teal square") == dict(size="huge", texture="checked", color="teal", shape="square")
    assert set(Dataset(32, n=200, seed=1).captions) <= set(train)
    with pytest.raises(MinimagenError, match="grammar"):
        parse("a huge striped red cat")
    with pytest.raises(MinimagenError, match="grammar"):  # the package's shapes grammar no longer has them
        parse_caption("a huge striped red circle")
    with pytest.raises(MinimagenError, match="world"):
        captions("train", world="stripes")


def test_renders_are_huge_at_the_limits_and_agree_across_sizes():
    for seed, caption in enumerate(["a huge striped red circle", "a huge checked yellow square",
                                    "a huge plain teal triangle"]):
        assert np.array_equal(render(caption, 32, seed), render(caption, 32, seed))
        assert not np.array_equal(render(caption, 32, seed), render(caption, 32, seed + 1))
        big = Image.fromarray(render(caption, 128, seed))
        for size in (32, 64):
            down = np.asarray(big.resize((size, size), Image.BOX)).astype(int)
            assert np.abs(down - render(caption, size, seed).astype(int)).max() <= 2
        (obj,) = make_scene(caption, seed)["objects"]
        assert 0.36 <= obj["half_size"] <= 0.40
    # an object covers much of the frame, and a textured one's bright tone reaches 255 (x = +1)
    images, ds = real(32, 60, seed=3)
    areas = [detect(im)[0]["area"] for im in images]
    assert min(areas) > 0.2 and np.mean(areas) > 0.35
    textured = torch.tensor([" plain " not in c for c in ds.captions])
    assert (ds.images[textured].flatten(1).max(1).values == 255).all()
    for color in load_spec()["colors"]:
        bright, dark = texture_tones(color)
        assert bright.max() == 255 and np.allclose(dark, bright * load_spec()["textured"]["dark"])


@pytest.mark.parametrize("size", [32, 64, 128])
def test_detector_reads_textured_renders_back(size):
    for split, seed in (("train", size), ("held_out", size + 1)):
        images, ds = real(size, 120, seed=seed, split=split)
        assert alignment_accuracy(images, ds.captions) >= 0.98
        found = detect(images)
        texture_right = [caption_attributes(f, c)["texture"] for f, c in zip(found, ds.captions)]
        assert np.mean(texture_right) >= 0.98
        assert all(o[0]["size"] == "huge" for o in found)


def test_texture_is_an_attribute_a_wrong_caption_fails():
    stripes = from_uint8(render("a huge striped red circle", 32, 1))
    assert caption_alignment(stripes, ["a huge striped red circle"]).item() == 1.0
    attrs = caption_attributes(detect(stripes), "a huge checked red circle")
    assert attrs == dict(color=True, shape=True, size=True, texture=False, count=True)
    assert caption_alignment(stripes, ["a huge plain red circle"]).item() == pytest.approx(0.8)
    # a stripe pattern rotated by 90 degrees is not the caption's stripes
    assert detect(stripes.transpose(1, 2))[0]["texture"] == "none"


def test_detector_is_about_chance_on_noise():
    images, ds = real(32, 200, seed=21)
    shuffled = alignment_accuracy(images, ds.captions[1:] + ds.captions[:1])
    noise = torch.rand(200, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert alignment_accuracy(noise, ds.captions) < 0.35 and shuffled < 0.75


def test_texture_detail_score_sees_flattening_and_saturation():
    """Real textures keep their detail (~1); blending toward the object's mean (flattening) or scaling
    up then clipping (what static clipping does at high guidance) lowers it; plain captions have none (NaN)."""
    images, ds = real(32, 90, seed=31)
    textured = torch.tensor([" plain " not in c for c in ds.captions])
    real_scores = detail_scores(images, ds.captions)["shading"]
    assert real_scores[textured].mean() > 0.95 and real_scores[~textured].isnan().all()
    flat = images + 0.5 * (images.mean((2, 3), keepdim=True) - images)  # half the contrast, same mean
    flattened = detail_scores(flat, ds.captions)
    assert flattened["shading"][textured].mean() < 0.7 and math.isclose(
        flattened["contrast"][textured].nanmean().item(), 0.5, abs_tol=0.12)
    saturated = detail_scores((images * 3).clamp(-1, 1), ds.captions)["shading"]
    assert saturated[textured].mean() < real_scores[textured].mean() - 0.2
