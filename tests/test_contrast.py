"""The contrast world (data/README.md): each image at a contrast the caption does not name. The detector reads
every contrast, the contrast read-back recovers a render's, and the exact denoiser shows the effect notebook 07
teaches: at high guidance static clipping over-saturates, the default dynamic rule keeps w = 1's look."""
import random

import numpy as np
import pytest
import torch

from minimagen import data, metrics
from minimagen import diffusion as D
from minimagen.exact import contrast_set

LOW, HIGH = data.load_spec()["contrast"]["range"]


def renders(captions, contrast, size=32):
    return torch.stack([data.from_uint8(data.render(c, size, seed=i, contrast=contrast)) for i, c in enumerate(captions)])


@pytest.mark.parametrize("split", ["train", "held_out"])
def test_detector_reads_every_contrast(split):
    captions = random.Random(0).sample(data.all_captions(split, world="contrast"), 60)
    for contrast in (LOW, 1.0, 1.3, HIGH):
        assert metrics.alignment_accuracy(renders(captions, contrast), captions) >= 0.98, contrast


def test_contrast_is_read_back_from_renders():
    captions = random.Random(1).sample(data.all_captions("train", world="contrast"), 30)
    for contrast in (LOW, 0.8, 1.0, 1.3):
        read = metrics.detail_scores(renders(captions, contrast), captions, contrast_world=True)["contrast"]
        assert (read - contrast).abs().max() <= 0.1 and abs(read.median().item() - contrast) <= 0.03, contrast
    # at the top of the range a dark colour's shadow side turns black and leaves the object's mask: it reads low
    read = metrics.detail_scores(renders(captions, HIGH), captions, contrast_world=True)["contrast"]
    assert HIGH - 0.15 <= read.median().item() <= HIGH


def test_shading_is_scored_against_a_render_at_the_same_contrast():
    captions = random.Random(2).sample([c for c in data.all_captions("train") if len(c.split()) == 4], 16)
    real = renders(captions, 1.4)
    flat = real.clone()
    for b, objects in enumerate(metrics.detect(real)):  # each object painted one flat colour: no shading left
        for o in objects:
            flat[b][:, o["mask"]] = real[b][:, o["mask"]].mean(1, keepdim=True)
    kept = lambda x: metrics.detail_scores(x, captions, contrast_world=True)["shading"].nanmean().item()
    assert kept(real) > 0.8 and kept(flat) < 0.3


def test_with_contrast_keeps_hue_and_pins_at_the_limits():
    paint = np.array(data.load_spec()["colors"]["orange"], np.float64)[None] * np.linspace(0.5, 1.1, 20)[:, None]
    assert np.allclose(data.with_contrast(paint.clip(0, 255), 1.0), paint.clip(0, 255))
    harsh = data.with_contrast(paint, 2.0)
    assert harsh.min() >= 0 and harsh.max() <= 255 and ((harsh == 0) | (harsh == 255)).any()
    q0, q1 = metrics.chroma(torch.tensor(paint)), metrics.chroma(torch.tensor(harsh))
    keep = q1.norm(dim=-1) > 1
    cosine = (q0[keep] * q1[keep]).sum(-1) / (q0[keep].norm(dim=-1) * q1[keep].norm(dim=-1))
    assert cosine.min() > 0.9999  # the same hue: the chroma only scales


def test_the_world_draws_a_continuum_with_a_real_share_at_the_limits():
    ds = data.ShapesDataset(32, n=400, world="contrast", seed=3)
    contrasts = np.array([s["contrast"] for s in ds.scenes])
    assert LOW <= contrasts.min() and contrasts.max() <= HIGH and contrasts.std() > 0.25
    pinned = ((ds.images == 0) | (ds.images == 255)).any(-1).flatten(1).float().mean(1)
    assert (pinned > 0.1).float().mean() > 0.1  # a real share of the data is over-exposed (~15%)
    shapes = data.make_scene(ds.captions[0], (3, 0))
    assert {k: v for k, v in ds.scenes[0].items() if k != "contrast"} == shapes  # the shapes world's geometry


def exact_world(contrasts):
    exact, levels, _ = contrast_set(contrasts, n_captions=4, seeds=2)
    return exact, levels


def test_exact_denoiser_is_the_posterior_mean():
    exact, _ = exact_world([1.0])
    x = exact.images.reshape(-1, *exact.shape)[:3]
    clean = exact.x0(x, torch.full((3,), 15.0))  # almost no noise: the image itself
    assert torch.allclose(clean, x, atol=1e-4)
    noisy = exact.x0(torch.zeros_like(x), torch.full((3,), -15.0))  # no signal: the mean of the data
    assert torch.allclose(noisy, exact.images.mean(0).reshape(exact.shape).expand_as(x), atol=1e-5)
    own = exact.x0(torch.zeros_like(x), torch.full((3,), -15.0), labels=exact.labels[:3])
    assert torch.allclose(own[0], exact.images[exact.labels == exact.labels[0]].mean(0).reshape(exact.shape), atol=1e-5)


def test_exact_denoiser_shows_static_over_saturating_and_the_default_keeping_the_look():
    exact, levels = exact_world(np.linspace(LOW, HIGH, 8))
    labels = torch.arange(4).repeat_interleave(3)

    def contrast(w, method, **kw):
        x = D.sample_loop(exact.model_fn(labels, w), (12, 3, 32, 32), steps=25, objective="x0", thresholding=method,
                          generator=torch.Generator().manual_seed(0), **kw)
        return levels[exact.nearest(x)].mean().item()

    look = contrast(1.0, "static")
    static, default = contrast(10.0, "static"), contrast(10.0, "dynamic")
    imagen = contrast(10.0, D.IMAGEN_THRESHOLDING)
    assert static > look + 0.1 and abs(default - look) < 0.1 and imagen < look - 0.2


def test_sample_loop_takes_a_thresholding_function():
    """Notebook 07 samples with the learner's threshold: a function x0 -> x0 in place of a rule's name."""
    exact, _ = exact_world([1.0])
    labels = torch.arange(4)
    run = lambda th: D.sample_loop(exact.model_fn(labels, 5.0), (4, 3, 32, 32), steps=5, objective="x0", thresholding=th,
                                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(run(lambda x0: D.dynamic_threshold(x0, 0.9, 1.5)), run("dynamic"))


def test_the_demo_captions_are_a_seeded_draw_not_a_choice():
    from minimagen.cli import DEMO_CONTRAST
    assert DEMO_CONTRAST == random.Random(0).sample(data.all_captions("train", world="contrast"), 6)


def test_pinned_view_marks_exactly_the_pixels_at_the_limits():
    """The demo's and notebook 07's clipping warning: a pixel is white iff one of its channels is at 0 or 255; every
    other pixel is the image dimmed to a third (so never white), and the figure adds one such row per named rule."""
    from minimagen.plot import pinned_view, thresholding_figure
    x = torch.rand(2, 3, 8, 8) * 1.8 - 0.9  # inside (-0.98, 0.98): nothing pinned
    x[0, 1, 2, 3], x[1, 0, 5, 5], x[1, 2, 0, 0] = 1.0, -1.0, 0.99
    view = pinned_view(x)
    white = (view == 1).all(1)
    assert white.sum() == 3 and white[0, 2, 3] and white[1, 5, 5] and white[1, 0, 0]
    assert view[~white[:, None].expand_as(view)].max() < -0.3
    fig = thresholding_figure({"w = 1": x, "static": x, "dynamic": x}, ["a", "b"], 10, pinned=("static",))
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["w = 1", "static", "static: at the limits", "dynamic"]
