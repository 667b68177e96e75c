"""Regime C, the toned world: regime B's captions and scenes, each image in a shade of its colour that the
caption does not name (data/shapes.json "textured" tone_range). Its renders, the exact detector on every
shade, and the shade and detail scores that tell a real shade from a guided overshoot pinned at +-1."""
import numpy as np
import pytest
import torch
from PIL import Image

from minimagen.data import ShapesDataset, all_captions, from_uint8, load_spec, make_scene, render_scene
from minimagen.metrics import alignment_accuracy, detail_scores, detect
from minimagen.train import TrainConfig, Trainer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_regime_c_is_regime_b_in_a_drawn_shade():
    lo, hi = load_spec()["textured"]["tone_range"]
    assert all_captions("train", world="toned") == all_captions("train", world="textured")
    assert all_captions("held_out", world="toned") == all_captions("held_out", world="textured")
    tones = []
    for seed, caption in enumerate(["a huge striped red circle", "a huge checked yellow square", "a huge plain teal triangle"]):
        b, c = make_scene(caption, seed), make_scene(caption, seed, toned=True)
        (ob,), (oc,) = b["objects"], c["objects"]
        assert {k: v for k, v in oc.items() if k != "tone"} == ob and "tone" not in ob  # same geometry, drawn last
        tones.append(oc["tone"])
        big = Image.fromarray(render_scene(c, 128))  # one picture at every size
        for size in (32, 64):
            down = np.asarray(big.resize((size, size), Image.BOX)).astype(int)
            assert np.abs(down - render_scene(c, size).astype(int)).max() <= 2
        # the shade scales both texture tones: the toned render is the tone-1 render times the tone, on the object
        mask = detect(from_uint8(render_scene(b, 32)))[0]["mask"][None, None].float()
        inside = -torch.nn.functional.max_pool2d(-mask, 3, 1, 1)[0, 0] > 0  # no antialiased edge blends
        ratio = render_scene(c, 32)[inside.numpy()].astype(float).sum() / render_scene(b, 32)[inside.numpy()].sum()
        assert ratio == pytest.approx(oc["tone"], abs=0.03)
    ds = ShapesDataset(32, n=300, seed=2, world="toned")
    drawn = np.array([s["objects"][0]["tone"] for s in ds.scenes])
    assert lo <= drawn.min() and drawn.max() <= hi and drawn.std() > 0.08 and len(set(tones)) == 3
    assert (ds.images.flatten(1).max(1).values < 255).float().mean() > 0.95  # the limit is reached only at tone 1


@pytest.mark.parametrize("size", [32, 64, 128])
def test_detector_reads_every_shade(size):
    lo = load_spec()["textured"]["tone_range"][0]
    captions = all_captions("all", world="toned")
    scenes = [make_scene(c, (size, i), toned=True) for i, c in enumerate(captions)]
    for s in scenes[::2]:
        s["objects"][0]["tone"] = lo  # the darkest shade, the hardest to read
    images = torch.stack([from_uint8(render_scene(s, size)) for s in scenes])
    assert alignment_accuracy(images, captions) >= 0.98


def test_shade_and_detail_scores_tell_a_real_shade_from_an_overshoot():
    ds = ShapesDataset(32, "all", n=90, seed=11, world="toned")
    images = from_uint8(ds.images)
    textured = torch.tensor([" plain " not in c for c in ds.captions])
    truth = torch.tensor([s["objects"][0]["tone"] for s in ds.scenes])
    real = detail_scores(images, ds.captions, toned=True)
    assert (real["tone"] - truth).abs().max() < 0.01  # every shade is read back, plain objects too
    assert real["shading"][textured].min() > 0.95
    assert ((real["pinned"] > 0) == (truth * 255 > 254.5)).all()  # only the top shade rounds to 255
    # tone-1 scoring (regime B's) takes a dim shade for lost contrast; the toned score does not
    assert detail_scores(images, ds.captions)["shading"][textured].mean() < 0.9
    # static clipping at high guidance: pushed past the limit and clipped, the texture flattens against it
    over = detail_scores((images * 3).clamp(-1, 1), ds.captions, toned=True)
    assert over["shading"][textured].mean() < 0.6 and over["pinned"].mean() > 0.5
    # an overshoot toward a more vivid shade (twice as bright, clipped at 255) reads brighter than any real shade
    vivid = detail_scores(((images + 1) * 2 - 1).clamp(-1, 1), ds.captions, toned=True)
    read = ~vivid["tone"].isnan()  # the object is still found (its colour can shift when a channel clips)
    assert read.float().mean() > 0.9 and (vivid["tone"][read] > truth[read] + 0.1).all()


def test_trainer_trains_on_the_toned_world():
    trainer = Trainer(TrainConfig(stage=0, preset="tiny32", dataset="toned", dataset_size=16, batch_size=4, steps=1,
                                  text_encoder="tiny", sample_every=0, out_dir="/tmp/minimagen_toned_test"))
    assert trainer.data.world == "toned" and "tone" in trainer.data.scenes[0]["objects"][0]
    assert np.isfinite(trainer.train_step(0))
