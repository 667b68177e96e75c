"""Guidance / thresholding sweeps and x0 trajectories on a tiny random Imagen (2 sampling steps)."""
import pytest
import torch

from minimagen import diffusion as D
from benchmarks.common import find_row, guidance_sweep, sweep_table
from minimagen.evaluate import paired_difference, x0_trajectory
from minimagen.imagen import Imagen
from minimagen.text import TextEncoder
from minimagen.unet import Unet, unet_preset

CAPTIONS = ["a small red circle", "a blue square above a green circle"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    encoder = TextEncoder("tiny")
    unet = Unet(unet_preset("tiny32", encoder.dim))
    for p in unet.parameters():  # zero-initialised output convs would make every prediction 0
        p.data.add_(torch.randn_like(p) * 0.02)
    return Imagen([unet], encoder)


@pytest.fixture(scope="module")
def rows(model):
    return guidance_sweep(model, CAPTIONS, [1.0, 30.0], methods=["none", "static", D.Thresholding("dynamic", 0.9, None)],
                          seeds=(0, 1), steps=2, frechet=True)


def test_sweep_rows_structure(rows):
    assert [(r["method"], r["guidance_scale"]) for r in rows] == [
        ("none", 1.0), ("none", 30.0), ("static", 1.0), ("static", 30.0), ("dynamic p=0.9 uncapped", 1.0),
        ("dynamic p=0.9 uncapped", 30.0)]
    for r in rows:
        assert r["images"].shape == (2, 2, 3, 32, 32)  # [seeds, captions, 3, H, W]
        assert r["images"].device.type == "cpu"
        assert 0 <= r["alignment"] <= 1 and 0 <= r["off_palette"] <= 1
        assert r["fidelity"] == pytest.approx(1 - r["off_palette"])
        assert r["alignment_se"] >= 0 and r["off_palette_se"] >= 0 and r["frechet_se"] >= 0
        assert r["frechet"] >= 0 and 0 <= r["raw_x0_outside"] <= 1
        assert all(r["scores"][k].shape == (2, 2) for k in ("alignment", "off_palette", "shading", "pinned"))
        assert 0 <= r["shading"] <= 1 and 0 <= r["pinned"] <= 1 and r["shading_se"] >= 0
        assert r["alignment"] == pytest.approx(r["scores"]["alignment"].double().mean().item())
        assert r["captions"] == CAPTIONS
    assert find_row(rows, D.Thresholding("dynamic", 0.9, None), 30) is rows[5]
    assert find_row(rows, "static", 1) is rows[2]
    with pytest.raises(KeyError):
        find_row(rows, "static", 7.5)
    table = sweep_table(rows).splitlines()
    assert len(table) == 1 + len(rows) and "Fréchet" in table[0] and "dynamic p=0.9 uncapped" in table[-1]


def test_thresholded_x0_stays_in_range_and_none_does_not_clip(rows):
    strong = {r["method"]: r for r in rows if r["guidance_scale"] == 30.0}
    assert strong["none"]["raw_x0_max"] > 1.0, "w = 30 should push the random model's x0 out of [-1, 1]"
    assert strong["none"]["x0_max"] == strong["none"]["raw_x0_max"]
    for method in ("static", "dynamic p=0.9 uncapped"):
        assert strong[method]["x0_max"] <= 1.0 + 1e-6
        assert strong[method]["raw_x0_max"] > 1.0


def test_sweep_is_deterministic_per_seed(model, rows):
    again = guidance_sweep(model, CAPTIONS, [30.0], methods=["static"], seeds=(1, 0), steps=2)[0]["images"]
    static = find_row(rows, "static", 30)["images"]
    assert torch.equal(again[0], static[1]) and torch.equal(again[1], static[0])
    assert not torch.equal(static[0], static[1]), "different seeds give different samples"


def test_x0_trajectory_records_every_step(model):
    steps = 3
    traj = x0_trajectory(model, CAPTIONS, guidance_scale=30.0, method="static", steps=steps, seed=0)
    for key in ("x_t", "x0_raw", "x0"):
        assert traj[key].shape == (steps, 2, 3, 32, 32) and traj[key].device.type == "cpu"
    assert traj["log_snr"].shape == (steps,) and torch.all(traj["log_snr"][1:] > traj["log_snr"][:-1])
    assert traj["t"][0] == 1.0 and traj["t"].shape == (steps,)
    assert torch.equal(traj["x0"], traj["x0_raw"].clamp(-1, 1))
    assert traj["s"].shape == traj["outside"].shape == (steps, 2) and (traj["s"] == 1).all()
    torch.testing.assert_close(traj["outside"], (traj["x0_raw"].abs() > 1).float().flatten(2).mean(2))
    assert torch.equal(traj["images"], traj["x0"][-1].clamp(-1, 1))  # the last step returns its x0
    assert traj["method"] == "static" and traj["captions"] == CAPTIONS
    # the same seed gives the same trajectory, and its first x_t is the sweep's starting noise
    again = x0_trajectory(model, CAPTIONS, guidance_scale=30.0, method="static", steps=steps, seed=0)
    assert torch.equal(again["x0_raw"], traj["x0_raw"])
    assert torch.equal(traj["x_t"][0], torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("cap", [None, 1.5])
def test_dynamic_trajectory_divides_by_s(model, cap):
    traj = x0_trajectory(model, CAPTIONS[:1], guidance_scale=30.0, method=D.Thresholding("dynamic", 0.9, cap), steps=2)
    raw, x0 = traj["x0_raw"][0, 0], traj["x0"][0, 0]
    s = min(max(torch.quantile(raw.abs().flatten(), 0.9).item(), 1.0), cap or float("inf"))
    assert torch.allclose(x0, raw.clamp(-s, s) / s, atol=1e-6)
    assert traj["s"][0, 0].item() == pytest.approx(s)
    assert traj["method"] == f"dynamic p=0.9 {'uncapped' if cap is None else 'cap=1.5'}"


def test_paired_difference(rows):
    a, b = find_row(rows, "none", 30), find_row(rows, "static", 30)
    d, se = paired_difference(a, b)
    assert d == pytest.approx(a["off_palette"] - b["off_palette"]) and se >= 0
    assert paired_difference(a, a, "alignment") == (0.0, 0.0)


def test_aug_level_sweep_rows():
    """One row per level with scores for every (seed, caption); level 1 ignores the low-res input, so
    two different inputs give the same images there but different ones at level 0."""
    from minimagen.evaluate import aug_level_sweep
    from minimagen.imagen import Imagen
    from minimagen.text import TextEncoder
    from minimagen.unet import Unet, unet_preset
    torch.manual_seed(0)
    enc = TextEncoder("tiny")
    unet = Unet(unet_preset("tiny-sr64", enc.dim))
    torch.nn.init.normal_(unet.out[-1].weight, std=0.1)  # zero-initialised: make the output depend on the input
    sr = Imagen([unet], enc, lowres_size=32)
    captions = ["a large red circle", "a small blue square"]
    low_a, low_b = torch.zeros(2, 3, 32, 32), torch.ones(2, 3, 32, 32) * 0.5
    kw = dict(aug_levels=(0.0, 1.0), seeds=(0, 1), steps=2)
    rows_a, rows_b = aug_level_sweep(sr, low_a, captions, **kw), aug_level_sweep(sr, low_b, captions, **kw)
    assert [r["aug_level"] for r in rows_a] == [0.0, 1.0]
    assert rows_a[0]["images"].shape == (2, 2, 3, 64, 64) and rows_a[0]["scores"]["alignment"].shape == (2, 2)
    assert not torch.equal(rows_a[0]["images"], rows_b[0]["images"])
    torch.testing.assert_close(rows_a[1]["images"], rows_b[1]["images"], atol=1e-3, rtol=0)  # alpha(t=1) ~ 5e-5
