"""The shapes dataset (determinism, sizes, splits, ranges) and the user-folder loader (formats, errors)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minimagen.data import (DATA_DIR, ImageCaptionFolder, ShapesDataset, all_captions, from_uint8, is_held_out,
                            make_scene, parse_caption, render, render_scene, shown_path, to_uint8)
from minimagen.errors import MinimagenError

ONE, TWO = "a small teal triangle", "a red square above a pink circle"


def test_same_seed_same_image_and_different_seed_different_image():
    for caption in (ONE, TWO):
        assert np.array_equal(render(caption, 32, 5), render(caption, 32, 5))
        assert not np.array_equal(render(caption, 32, 5), render(caption, 32, 6))
    a, b, c = ShapesDataset(32, n=40, seed=0), ShapesDataset(32, n=40, seed=0), ShapesDataset(32, n=40, seed=1)
    assert a.captions == b.captions and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_sizes_agree_downsampled_128_matches_32_and_64():
    for seed, caption in enumerate([ONE, TWO, "a large purple circle", "a blue circle to the left of a green triangle"]):
        big = Image.fromarray(render(caption, 128, seed))
        for size in (32, 64):
            down = np.asarray(big.resize((size, size), Image.BOX)).astype(int)
            assert np.abs(down - render(caption, size, seed).astype(int)).max() <= 2


def test_train_split_never_holds_a_held_out_caption():
    train, held = all_captions("train"), all_captions("held_out")
    assert held and not set(train) & set(held)
    assert all(is_held_out(c) for c in held) and not any(is_held_out(c) for c in train)
    assert set(train) | set(held) == set(all_captions("all"))
    ds = ShapesDataset(32, "train", n=500, seed=3)
    assert not any(is_held_out(c) for c in ds.captions)
    assert all(is_held_out(c) for c in ShapesDataset(32, "held_out", n=50).captions)


def test_items_are_float_images_in_range_with_about_half_two_object_captions():
    ds = ShapesDataset(64, n=200, seed=2)
    image, caption = ds[7]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and isinstance(caption, str)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.2
    two = sum(len(c.split()) > 4 for c in ds.captions) / len(ds)
    assert 0.35 < two < 0.65
    uniform = ShapesDataset(32, n=400, seed=2, balanced=False).captions  # as often as the grammar has them
    share = sum(len(c.split()) > 4 for c in all_captions("train")) / len(all_captions("train"))
    assert abs(sum(len(c.split()) > 4 for c in uniform) / 400 - share) < 0.05 and share > 0.9
    assert torch.equal(from_uint8(to_uint8(x)), x)  # exact round trip on dataset images


def test_scenes_follow_their_captions():
    for seed in range(30):
        small = make_scene("a small red circle", seed)["objects"][0]["half_size"]
        large = make_scene("a large red circle", seed)["objects"][0]["half_size"]
        assert large > 1.5 * small and small * 32 >= 4  # >= 8 px wide at 32 px
        a, b = make_scene("a red square to the left of a blue circle", seed)["objects"]
        assert b["center"][0] - a["center"][0] > 0.4 > abs(a["center"][1] - b["center"][1])
        a, b = make_scene(TWO, seed)["objects"]
        assert b["center"][1] - a["center"][1] > 0.4
        for obj in (a, b):  # inside the frame even when rotated (half-diagonal bound)
            assert all(obj["half_size"] * 1.42 < c < 1 - obj["half_size"] * 1.42 for c in obj["center"])
    ds = ShapesDataset(32, n=20, seed=4)
    assert [s["caption"] for s in ds.scenes] == ds.captions
    assert np.array_equal(render_scene(ds.scenes[3], 32), ds.images[3].numpy())


def test_bad_arguments_raise_minimagen_errors():
    assert parse_caption(TWO)[1] == "above"
    for bad in ("a huge red circle", "a red circle near a blue square", "a red circle above a red square", ""):
        with pytest.raises(MinimagenError, match="grammar"):
            parse_caption(bad)
    with pytest.raises(MinimagenError, match="split"):
        ShapesDataset(32, split="test", n=4)
    with pytest.raises(MinimagenError, match="size"):
        render(ONE, 4)


def _png(path, size=(20, 12), color=(200, 60, 55)):
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def folder(tmp_path):
    _png(tmp_path / "a.png", (40, 20))
    _png(tmp_path / "b.png", (16, 30), (60, 95, 190))
    return tmp_path


def test_folder_loader_reads_csv_and_jsonl(folder):
    (folder / "captions.csv").write_text('file,caption\na.png,a red thing\nb.png,"a blue, tall thing"\n')
    ds = ImageCaptionFolder(folder, size=16)
    assert len(ds) == 2 and ds[1][1] == "a blue, tall thing"
    image = ds[0][0]
    assert image.shape == (3, 16, 16) and image.min() >= -1 and image.max() <= 1
    assert torch.allclose(image[:, 8, 8], torch.tensor([200, 60, 55]) / 127.5 - 1, atol=0.02)
    lines = [json.dumps({"file": f, "caption": c}) for f, c in [("a.png", "red"), ("b.png", "blue")]]
    (folder / "captions.csv").unlink()
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n\n")
    ds = ImageCaptionFolder(folder, size=8)
    assert [c for _, c in ds.items] == ["red", "blue"] and ds[1][0].shape == (3, 8, 8)
    other = folder / "elsewhere.csv"  # an explicit captions file anywhere
    other.write_text("file,caption\na.png,x\nb.png,y\n")
    assert len(ImageCaptionFolder(folder, other, size=8)) == 2


@pytest.mark.parametrize("setup, message", [
    (lambda f: None, "captions.csv or captions.jsonl"),
    (lambda f: [(f / n).write_text("file,caption\na.png,x\nb.png,y\n") for n in ("captions.csv", "captions.jsonl")],
     "exactly one"),
    (lambda f: (f / "captions.csv").write_text("file,caption\na.png,x\nb.png,y\nc.png,z\n"), "c.png"),
    (lambda f: (f / "captions.csv").write_text("file,caption\na.png,x\n"), "no caption row"),
    (lambda f: (f / "captions.csv").write_text("file,caption\na.png,x\nb.png,  \n"), "empty caption"),
    (lambda f: (f / "captions.csv").write_text("name,text\na.png,x\nb.png,y\n"), "header"),
    (lambda f: (f / "captions.jsonl").write_text('{"file": "a.png", "caption": "x"}\n{"file": "b.png"\n'), "Line 2"),
    (lambda f: [(f / "c.png").write_bytes(b"not a png at all"),
                (f / "captions.csv").write_text("file,caption\na.png,x\nb.png,y\nc.png,z\n")], "c.png is unreadable"),
])
def test_folder_loader_errors_name_the_problem(folder, setup, message):
    setup(folder)
    with pytest.raises(MinimagenError, match=message):
        ImageCaptionFolder(folder)


def test_folder_loader_missing_paths(tmp_path):
    with pytest.raises(MinimagenError, match="does not exist"):
        ImageCaptionFolder(tmp_path / "nope")
    (tmp_path / "captions.csv").write_text("file,caption\n")
    with pytest.raises(MinimagenError, match="no images"):
        ImageCaptionFolder(tmp_path)
    _png(tmp_path / "a.png")
    with pytest.raises(MinimagenError, match="does not exist"):
        ImageCaptionFolder(tmp_path, tmp_path / "missing.csv")


def test_objects_are_shaded_with_a_wide_range_inside_and_never_hit_the_limits():
    """Lit solids: a light side, a shadow side and a highlight, all of the object's own hue; the detail
    that static clipping flattens. No real pixel sits at 0 or 255 (x = -1 or +1)."""
    from minimagen.metrics import chroma
    for shape in ("circle", "square", "triangle"):
        scene = make_scene(f"a large red {shape}", 2)
        img = render_scene(scene, 64).astype(float)
        (obj,) = scene["objects"]
        cx, cy, s = (v * 64 for v in (*obj["center"], obj["half_size"] * 0.5))
        inner = img[int(cy - s):int(cy + s), int(cx - s):int(cx + s)]  # well inside the outline
        lum = inner.mean(-1)
        assert lum.max() - lum.min() > 60, shape
        # light side (upper left) brighter than the shadow side (lower right)
        assert inner[:4, :4].mean() > inner[-4:, -4:].mean() + 30, shape
        q = chroma(torch.from_numpy(inner).float()).reshape(-1, 3)
        red = chroma(torch.tensor([200.0, 60, 55]))
        q = q[q.norm(dim=1) > 20]  # object pixels (a triangle's box corners are background)
        cos = (q @ red) / (q.norm(dim=1) * red.norm())
        assert len(q) > 20 and cos.min() > 0.99, "shading keeps the hue (up to uint8 rounding)"
    images = ShapesDataset(32, n=300, seed=11).images
    assert images.min() > 0 and images.max() < 255


def test_messages_show_the_repositorys_files_relative_to_it_and_other_paths_as_given(tmp_path):
    """Stored notebook outputs print data/tiny-t5, the same on every checkout, not this machine's folders."""
    assert shown_path(DATA_DIR / "tiny-t5") == Path("data/tiny-t5")
    assert shown_path(str(DATA_DIR / "checkpoints" / "sr128.pt")) == Path("data/checkpoints/sr128.pt")
    assert shown_path(tmp_path / "x.pt") == tmp_path / "x.pt"
    assert shown_path("runs/base/ema.pt") == Path("runs/base/ema.pt")
