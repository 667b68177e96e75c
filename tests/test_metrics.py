"""Caption alignment (the detector), detail and fidelity (off-palette fraction) on real shapes data."""
import pytest
import torch

from minimagen.data import ShapesDataset, from_uint8, make_scene, render, render_scene
from minimagen.errors import MinimagenError
from minimagen.metrics import (alignment_accuracy, caption_alignment, caption_attributes, detect, detail_scores,
                               off_palette_fraction)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


def real(size, n, seed, split="all"):
    ds = ShapesDataset(size, split, n=n, seed=seed)
    return from_uint8(ds.images), ds


@pytest.mark.parametrize("size", [32, 64, 128])
def test_detector_reads_dataset_images_back(size):
    images, ds = real(size, 300, seed=size)
    scores = caption_alignment(images, ds.captions)
    assert scores.shape == (300,)
    assert alignment_accuracy(images, ds.captions) >= 0.98
    two = torch.tensor([len(c.split()) > 4 for c in ds.captions])
    assert scores[two].mean() >= 0.98 and scores[~two].mean() >= 0.98  # both caption kinds, separately


def test_detector_on_held_out_pairs_and_details():
    images, ds = real(32, 150, seed=9, split="held_out")
    assert alignment_accuracy(images, ds.captions) >= 0.98
    scene = make_scene("a large orange square", 3)
    (obj,) = detect(from_uint8(render_scene(scene, 64)))
    assert (obj["color"], obj["shape"], obj["size"]) == ("orange", "square", "large")
    assert abs(obj["half_size"] - scene["objects"][0]["half_size"]) < 0.01
    assert all(abs(a - b) < 0.02 for a, b in zip(obj["center"], scene["objects"][0]["center"]))
    assert detect(torch.full((3, 32, 32), 0.6)) == []  # plain background: no objects


def test_alignment_drops_for_mismatched_captions():
    red_circle = from_uint8(render("a large red circle", 32, 1))
    assert caption_alignment(red_circle, ["a large red circle"]).item() == 1.0
    assert caption_alignment(red_circle, ["a large blue square"]).item() < 0.5
    assert caption_alignment(red_circle, ["a small red circle"]).item() == 0.75  # only the size is wrong
    pair = from_uint8(render("a red square to the left of a blue circle", 32, 1))
    attrs = caption_attributes(detect(pair), "a blue circle to the left of a red square")
    assert attrs == dict(color1=True, shape1=True, color2=True, shape2=True, relation=False, count=True)
    images, ds = real(32, 200, seed=5)
    shuffled = ds.captions[1:] + ds.captions[:1]
    assert alignment_accuracy(images, shuffled) < 0.6


def test_off_palette_fraction_orders_real_saturated_noise():
    b, _ = real(64, 100, seed=300)
    clean, mild, saturated, noise = (off_palette_fraction(x).mean().item() for x in
                                     (b, (b * 1.3).clamp(-1, 1), (b * 2).clamp(-1, 1), torch.rand_like(b) * 2 - 1))
    assert clean < 0.001 < mild < saturated and saturated > 0.9 and noise > 0.5


def test_metrics_reject_bad_inputs():
    with pytest.raises(MinimagenError, match="one caption per image"):
        caption_alignment(torch.zeros(2, 3, 32, 32), ["a small red circle"])
    with pytest.raises(MinimagenError, match="shape"):
        detect(torch.zeros(1, 32, 32))
    with pytest.raises(MinimagenError, match="grammar"):
        caption_alignment(torch.zeros(3, 32, 32), ["a cat"])


def test_detector_is_at_chance_on_noise():
    _, ds = real(32, 300, seed=21)
    noise = torch.rand(300, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert 0.1 < alignment_accuracy(noise, ds.captions) < 0.35  # shuffled captions on real images score ~0.2


def test_detail_scores_see_what_clipping_destroys():
    """Real renders keep their shading (~1) with no pinned pixel; scaling up then clipping (what static
    clipping does at high guidance) flattens objects into plateaus at +-1; noise has no shading."""
    images, ds = real(32, 120, seed=31)
    real_scores = detail_scores(images, ds.captions)
    assert real_scores["shading"].mean() > 0.85 and real_scores["pinned"].max() == 0
    scores = [detail_scores((images * f).clamp(-1, 1), ds.captions) for f in (1.5, 3.0, 8.0)]
    shading = [real_scores["shading"].mean()] + [d["shading"].mean() for d in scores]
    pinned = [real_scores["pinned"].mean()] + [d["pinned"].mean() for d in scores]
    assert all(a > b for a, b in zip(shading, shading[1:])) and all(a < b for a, b in zip(pinned, pinned[1:]))
    assert scores[-1]["pinned"].mean() > 0.8
    noise = detail_scores(torch.rand_like(images) * 2 - 1, ds.captions)
    assert noise["shading"].mean() < 0.15


def test_flat_objects_score_no_shading(monkeypatch):
    """The old flat toy (one tone per object): nothing inside for clipping to destroy."""
    import minimagen.data as data
    monkeypatch.setattr(data, "KMIN", 1.0), monkeypatch.setattr(data, "SPECULAR", 0.0)
    monkeypatch.setattr(data, "KMAX", 1.0)
    images, ds = real(32, 40, seed=32)
    assert alignment_accuracy(images, ds.captions) >= 0.98
    assert detail_scores(images, ds.captions)["shading"].max() < 0.1


def test_detail_measures_tell_real_detail_from_bilinear_and_noise():
    """What an SR stage must add: real renders have it (error 0), bilinear upsampling of the real low-res
    render lacks it (error ~0.6, energy ~0.2 of real), noise has the wrong detail (error above 1)."""
    from minimagen.metrics import detail_energy, detail_error
    captions = ["a large red circle", "a teal square above a yellow triangle", "a large blue triangle"]
    high = torch.stack([from_uint8(render(c, 64, seed=i)) for i, c in enumerate(captions)])
    low = torch.stack([from_uint8(render(c, 32, seed=i)) for i, c in enumerate(captions)])
    bilinear = torch.nn.functional.interpolate(low, size=64, mode="bilinear", align_corners=False)
    noisy = (high + 0.3 * torch.randn(high.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert detail_error(high, high, 32).abs().max() < 1e-6
    assert ((detail_error(bilinear, high, 32) > 0.4) & (detail_error(bilinear, high, 32) < 0.9)).all()
    assert (detail_error(noisy, high, 32) > 1.5).all()
    assert (detail_energy(bilinear, 32) < 0.3 * detail_energy(high, 32)).all()
