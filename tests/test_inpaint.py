"""RePaint inpainting (minimagen/inpaint.py): the known region is kept exactly, the model is called
(steps - 1) * U + 1 times, the caption decides what fills the hole, and bad inputs get clear errors."""
import pytest
import torch

from minimagen import diffusion as D
from minimagen import metrics
from minimagen.data import DATA_DIR, from_uint8, render
from minimagen.errors import MinimagenError
from minimagen.imagen import Imagen, load_cascade
from minimagen.inpaint import forward_transition, inpaint
from minimagen.unet import Unet, unet_preset

CAPTION = "a red circle to the left of a blue square"


@pytest.fixture(scope="module")
def tiny_model(encoder):
    torch.manual_seed(0)
    base = Unet(unet_preset("tiny32", encoder.dim))
    for p in base.parameters():  # zero-initialised output convs would make every prediction 0
        p.data.add_(torch.randn_like(p) * 0.02)
    return Imagen([base], encoder)


def shapes_images(n=2):
    return torch.stack([from_uint8(render(CAPTION, 32, seed=s)) for s in range(n)])


def right_half():
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[..., 16:] = True
    return mask


def test_forward_transition_composes_with_q_sample():
    """q(x_s | x_0) then q(x_t | x_s) must be q(x_t | x_0): alpha_t|s alpha_s = alpha_t and
    alpha_t|s^2 sigma_s^2 + v = sigma_t^2 [VDM Eq. 1-2]."""
    ls, lt = torch.tensor([3.0, 0.5, -1.0]), torch.tensor([2.0, -0.5, -4.0])
    (a_t, s_t), (a_s, s_s) = D.alpha_sigma(lt), D.alpha_sigma(ls)
    one, zero = torch.ones(3, 1, 1, 1), torch.zeros(3, 1, 1, 1)
    a_ts = forward_transition(one, ls, lt, zero).flatten()        # the mean of x_t given x_s = 1
    v = forward_transition(zero, ls, lt, one).flatten() ** 2      # the variance, through the noise
    torch.testing.assert_close(a_ts * a_s, a_t)
    torch.testing.assert_close(a_ts**2 * s_s**2 + v, s_t**2)


def test_known_region_is_kept_exactly_and_the_model_called_steps_minus_one_times_u_plus_one(tiny_model):
    images, mask = shapes_images(), right_half()
    calls = []
    out = inpaint(tiny_model, images, mask, [CAPTION, "a large teal square"], steps=6, resample=3,
                  callback=lambda i, log_snr, x, x0_raw, x0: calls.append(i))
    assert torch.equal(out[..., :16], images[..., :16])
    assert (out[..., 16:] - images[..., 16:]).abs().mean() > 0.05  # a random model really did repaint
    assert out.abs().max() <= 1
    assert calls == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5]  # (6 - 1) * 3 + 1
    again = inpaint(tiny_model, images, mask.float(), [CAPTION, "a large teal square"], steps=6, resample=3)
    assert torch.equal(out, again)  # seeded: same seed, same images; a float 0/1 mask works too


@pytest.mark.skipif(not (DATA_DIR / "checkpoints" / "base32.pt").is_file(), reason="needs the shipped base32 checkpoint")
def test_the_caption_decides_the_colour_of_the_repainted_object():
    """Erase the blue square (right half) and ask for a green or a pink one: the detector must find
    exactly the asked colour in the repainted half, and the red circle on the left stays untouched."""
    model = load_cascade([DATA_DIR / "checkpoints" / "base32.pt"], device="cpu")
    images, colours = shapes_images(2).repeat(2, 1, 1, 1), ["green", "green", "pink", "pink"]
    captions = [f"a red circle to the left of a {c} square" for c in colours]
    out = inpaint(model, images, right_half(), captions, steps=20, resample=2, seed=0)
    assert (out[:2, :, :, 16:] - out[2:, :, :, 16:]).abs().mean() > 0.1
    for objects, colour in zip(metrics.detect(out), colours):
        assert {o["color"] for o in objects if o["center"][0] > 0.5} == {colour}
        assert [o["color"] for o in objects if o["center"][0] < 0.5] == ["red"]


@pytest.mark.parametrize("mask,match", [(torch.zeros(1, 32, 32, dtype=torch.bool), r"\[2 or 1, 1, 32, 32\]"),
                                        (torch.zeros(3, 1, 32, 32), r"\[2 or 1, 1, 32, 32\]"),
                                        (torch.zeros(1, 1, 16, 16), r"\[2 or 1, 1, 32, 32\]"),
                                        (torch.full((1, 1, 32, 32), 0.5), "0 or 1")])
def test_bad_masks_say_what_a_mask_is(tiny_model, mask, match):
    with pytest.raises(MinimagenError, match=match):
        inpaint(tiny_model, shapes_images(), mask, CAPTION, steps=2)


@pytest.mark.parametrize("captions,kwargs,match", [(["", "a red circle"], {}, "empty"),
                                                    (["a red circle"] * 3, {}, "one caption per image"),
                                                    (CAPTION, {"resample": 0}, "resample"),
                                                    (CAPTION, {"steps": 0}, "positive"),
                                                    (CAPTION, {"thresholding": "clip"}, "dynamic")])
def test_bad_arguments_name_the_fix(tiny_model, captions, kwargs, match):
    with pytest.raises(MinimagenError, match=match):
        inpaint(tiny_model, shapes_images(), right_half(), captions, **kwargs)


def test_an_sr_only_cascade_is_refused(encoder):
    sr_only = Imagen([Unet(unet_preset("tiny-sr64", encoder.dim))], encoder, lowres_size=32)
    with pytest.raises(MinimagenError, match="base checkpoint"):
        inpaint(sr_only, torch.zeros(1, 3, 64, 64), torch.ones(1, 1, 64, 64), CAPTION)
