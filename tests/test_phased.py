"""Textures at a random phase (benchmarks/archive/textured.py's make_scene(phased=True)) and benchmarks/archive/exact_pull.py, the exact model's
caption pull that tells which worlds keep the caption deciding detail late (issue 22)."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.archive.textured import caption_alignment, captions, make_scene, render_scene, texture_pattern
from minimagen.data import from_uint8, load_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "archive"))  # it finds benchmarks/common.py itself
import exact_pull  # noqa: E402


def test_phase_zero_is_the_grid_texture_and_the_phase_is_drawn_last():
    period = load_spec()["textured"]["period"]
    for size in (32, 128):
        half = np.floor((np.arange(size) + 0.5) / size * 2 * period).astype(int) % 2  # the grid's half-periods
        assert (texture_pattern("striped", size)[..., 0] == 1 - half[:, None]).all()
        assert (texture_pattern("checked", size)[..., 0] == (half[:, None] == half[None, :])).all()
        # half a period along y swaps the stripes' tones; along x it leaves them
        assert (texture_pattern("striped", size, (0.0, 0.5)) == 1 - texture_pattern("striped", size)).all()
        assert (texture_pattern("striped", size, (0.5, 0.0)) == texture_pattern("striped", size)).all()
    for seed, caption in enumerate(["a huge striped red circle", "a huge checked teal square"]):
        grid, phased = make_scene(caption, seed), make_scene(caption, seed, phased=True)
        (og,), (op,) = grid["objects"], phased["objects"]
        assert {k: v for k, v in op.items() if k != "phase"} == og and all(0 <= p < 1 for p in op["phase"])


def test_phased_renders_are_one_picture_at_every_size_and_the_detector_reads_them():
    caps = captions("all")
    scenes = [make_scene(c, (3, i), phased=True) for i, c in enumerate(caps)]
    for scene in scenes[:6]:
        big = Image.fromarray(render_scene(scene, 128))
        for size in (32, 64):
            down = np.asarray(big.resize((size, size), Image.BOX)).astype(int)
            assert np.abs(down - render_scene(scene, size).astype(int)).max() <= 2
    images = torch.stack([from_uint8(torch.from_numpy(render_scene(s, 32))) for s in scenes])
    assert caption_alignment(images, caps).mean() == 1.0  # texture too, wherever its stripes fall
    assert caption_alignment(images, caps[1:] + caps[:1]).mean() < 0.9  # a wrong caption is caught


def test_exact_pull_tells_a_visible_texture_early_and_a_faint_one_late():
    steps = 10
    t = torch.linspace(1.0, 0.0, steps + 1)[:steps]
    grid = exact_pull.exact_pull("a huge striped red circle", (7, 0), exact_pull.WORLDS["B"], 4, steps, noise_seed=0)
    # at pure noise every texture is as likely; once x_t tells the texture the pull is exactly zero
    assert grid["p_caption"][0] == pytest.approx(1 / 3, abs=0.05)
    assert (grid["p_caption"][t < 0.6] > 0.999).all() and (grid["delta_high"][t < 0.6] < 1e-4).all()
    faint = exact_pull.exact_pull("a huge striped red circle", (7, 0), exact_pull.WORLDS["D, dark 0.99"], 4, steps,
                                  noise_seed=0)
    assert faint["p_caption"][t >= 0.3].max() < 0.6 and faint["delta_high"][t < 0.4].max() > 1e-4
    x0s, owner, real = exact_pull.hypotheses("a huge checked blue square", (7, 1), exact_pull.WORLDS["D"], 4)
    assert x0s.shape[0] == 3 * 16 + 1 and owner[real] == load_spec()["textured"]["textures"].index("checked")


def test_a_perfect_model_lands_on_a_real_render_of_the_caption_whatever_the_thresholding():
    """Guided sampling with the exact denoiser ends on one of the scene's renders, with the caption's texture, under
    every thresholding method: the last steps' posterior mean is a real image, where no threshold acts."""
    caption = "a huge checked green square"
    x0s, owner, _ = exact_pull.hypotheses(caption, (7, 2), exact_pull.WORLDS["D, dark 0.8"], 4)
    want = load_spec()["textured"]["textures"].index("checked")
    finals = []
    for method in ("none", "static", "dynamic"):
        sample, real, mask = exact_pull.exact_sample(caption, (7, 2), exact_pull.WORLDS["D, dark 0.8"], 4, 10.0,
                                                     method, 10, noise_seed=3)
        gap = (x0s.float() - sample).flatten(1).abs().amax(1)
        assert gap.min() < 1e-3 and owner[gap.argmin()] == want
        finals.append(sample)
        assert mask.float().mean() > 0.3  # the huge object
    assert torch.allclose(finals[0], finals[1], atol=1e-5) and torch.allclose(finals[0], finals[2], atol=1e-5)
    spread, pinned = exact_pull.texture_kept(x0s[owner == want][0].float(), x0s[owner == want][0].float(), mask)
    assert spread == pytest.approx(1.0) and 0 <= pinned <= 1
