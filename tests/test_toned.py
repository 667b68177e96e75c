"""Regime C, the toned world (benchmarks/archive/textured.py): regime B's captions and scenes, each image in a shade of its colour that the
caption does not name (data/shapes.json "textured" tone_range and vivid_range: from regime B's colour to the
most vivid one of its hue, and darker). Its renders, the exact detector on every shade, and the shade and detail
scores that tell a real shade from a guided overshoot pinned at +-1."""
import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.archive.textured import (Dataset, caption_alignment, captions, detail_scores, make_scene,
                                         render_scene, texture_tones)
from minimagen.data import from_uint8, load_spec
from minimagen.train import TrainConfig, Trainer


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


def test_regime_c_is_regime_b_in_a_drawn_shade():
    spec = load_spec()["textured"]
    assert captions("train", world="toned") == captions("train", world="textured")
    assert captions("held_out", world="toned") == captions("held_out", world="textured")
    for seed, caption in enumerate(["a huge striped red circle", "a huge checked yellow square", "a huge plain teal triangle"]):
        b, c = make_scene(caption, seed), make_scene(caption, seed, toned=True)
        (ob,), (oc,) = b["objects"], c["objects"]
        shade = ("tone", "vivid")
        assert {k: v for k, v in oc.items() if k not in shade} == ob and not set(shade) & set(ob)  # drawn last
        big = Image.fromarray(render_scene(c, 128))  # one picture at every size
        for size in (32, 64):
            down = np.asarray(big.resize((size, size), Image.BOX)).astype(int)
            assert np.abs(down - render_scene(c, size).astype(int)).max() <= 2
    # the shade keeps the hue: vividness stretches the colour's channels to span 0..255, tone darkens both tones
    for color in load_spec()["colors"]:
        base, _ = texture_tones(color)
        vivid, dark = texture_tones(color, vivid=1.0, tone=0.7)
        assert vivid.max() == pytest.approx(0.7 * 255) and vivid.min() == pytest.approx(0.0, abs=1e-4)
        assert np.allclose(dark, vivid * spec["dark"])
        ratio = lambda c: (c - c.min()) / (c.max() - c.min())  # what sets the hue
        assert np.allclose(ratio(vivid), ratio(base), atol=1e-5)
    ds = Dataset(32, n=300, seed=2, world="toned")
    for key, (lo, hi) in (("tone", spec["tone_range"]), ("vivid", spec["vivid_range"])):
        drawn = np.array([s["objects"][0][key] for s in ds.scenes])
        assert lo <= drawn.min() and drawn.max() <= hi and drawn.std() > 0.08
    assert (ds.images.flatten(1).max(1).values < 255).float().mean() > 0.95  # 255 only at tone 1


@pytest.mark.parametrize("size", [32, 64, 128])
def test_detector_reads_every_shade(size):
    caps = captions("all", world="toned")
    for tone, vivid in ((0.6, 0.0), (0.6, 1.0), (1.0, 1.0), (None, None)):  # the corners of the shade range, and drawn
        scenes = [make_scene(c, (size, i), toned=True) for i, c in enumerate(caps)]
        for s in scenes:
            s["objects"][0].update({} if tone is None else dict(tone=tone, vivid=vivid))
        images = torch.stack([from_uint8(render_scene(s, size)) for s in scenes])
        assert caption_alignment(images, caps).mean() >= 0.98


def test_shade_and_detail_scores_tell_a_real_shade_from_an_overshoot():
    ds = Dataset(32, "all", n=90, seed=11, world="toned")
    images = from_uint8(ds.images)
    textured = torch.tensor([" plain " not in c for c in ds.captions])
    truth = torch.tensor([s["objects"][0]["tone"] for s in ds.scenes])
    vivid = torch.tensor([s["objects"][0]["vivid"] for s in ds.scenes])
    real = detail_scores(images, ds.captions, toned=True)
    assert (real["tone"] - truth).abs().max() < 0.01  # every shade is read back, plain objects too
    assert (real["vivid"] - vivid).abs().max() < 0.03
    assert real["shading"][textured].min() > 0.95
    assert (real["pinned"] > 0).float().mean() < 0.05  # only the extreme shades (tone 1, vivid 1) reach 0 or 255
    # tone-1 scoring (regime B's) takes a dim shade for lost contrast; the toned score does not
    assert detail_scores(images, ds.captions)["shading"][textured].mean() < 0.9
    # static clipping at high guidance: pushed past the limit and clipped, the texture flattens against it
    over = detail_scores((images * 3).clamp(-1, 1), ds.captions, toned=True)
    assert over["shading"][textured].mean() < 0.6 and over["pinned"].mean() > 0.5
    assert over["vivid"].nanmean() > vivid.mean() + 0.2  # pushed toward the most vivid colour of its hue
    # an overshoot toward a more vivid shade (twice as bright, clipped at 255) reads brighter than any real shade
    vivid = detail_scores(((images + 1) * 2 - 1).clamp(-1, 1), ds.captions, toned=True)
    read = ~vivid["tone"].isnan()  # the object is still found (its colour can shift when a channel clips)
    assert read.float().mean() > 0.9 and (vivid["tone"][read] > truth[read] + 0.1).all()


def test_the_package_trainer_trains_on_the_toned_world_it_is_given():
    trainer = Trainer(TrainConfig(stage=0, preset="tiny32", dataset="toned", dataset_size=16, batch_size=4, steps=1,
                                  text_encoder="tiny", sample_every=0, out_dir="/tmp/minimagen_toned_test"),
                      data=Dataset(32, n=16, world="toned"))
    assert trainer.data.world == "toned" and "tone" in trainer.data.scenes[0]["objects"][0]
    assert np.isfinite(trainer.train_step(0))


def test_shade_scatter_shows_each_method_against_the_real_range():
    import matplotlib
    matplotlib.use("agg")
    from benchmarks.archive.regimes import shade_scatter  # notebook 07b's figure, archived with it
    ds = Dataset(32, "all", n=20, seed=4, world="toned")
    d = detail_scores(from_uint8(ds.images), ds.captions, toned=True)
    ax = shade_scatter({"static": (d["vivid"], d["tone"]), "none": (d["vivid"] + 0.3, d["tone"])},
                            real=(d["vivid"], d["tone"]))
    assert len(ax.collections) == 3 and len(ax.patches) == 1  # real dots, two methods; the real range's box
    box = ax.patches[0]
    spec = load_spec()["textured"]
    assert (box.get_x(), box.get_y()) == (spec["vivid_range"][0], spec["tone_range"][0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["real renders", "static", "none"]
