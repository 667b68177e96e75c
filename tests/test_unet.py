"""Tests of the Efficient U-Net: shapes, gradients, masking, conditioning, learning, and error messages."""
from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minimagen.errors import MinimagenError
from minimagen.unet import PRESETS, Unet, UnetConfig, count_parameters, unet_preset

D = 32  # a small text embedding size keeps the tests fast; the real encoders are 128 / 512


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


def small_config(**kw):
    return UnetConfig(**{**dict(dim=32, dim_mults=(1, 2, 2), num_resnet_blocks=(1, 1, 2), text_embed_dim=D), **kw})


def randomized(model, seed=0):
    """The final conv and every residual branch's last layer are zero-initialised, so at init the output
    is exactly 0 whatever the input and no gradient reaches the layers before them. Perturbing every
    parameter makes the network a generic function of its inputs, which is what these tests probe."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def inputs(cfg, B=2, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = cfg.image_size
    kw = dict(x=torch.randn(B, 3, S, S, generator=g), log_snr=torch.randn(B, generator=g) * 5,
              text_embeds=torch.randn(B, L, cfg.text_embed_dim, generator=g),
              text_mask=torch.ones(B, L, dtype=torch.bool))
    if cfg.lowres_cond:
        kw.update(lowres=torch.randn(B, 3, S, S, generator=g), aug_log_snr=torch.randn(B, generator=g))
    return kw


def test_presets_copy_and_fill_text_dim():
    cfg = unet_preset("base32", 128)
    assert cfg.text_embed_dim == 128 and cfg is not PRESETS["base32"]
    assert cfg == UnetConfig(text_embed_dim=128)  # base32 is the default configuration
    assert 3e6 < count_parameters(Unet(cfg)) < 5e6
    with pytest.raises(MinimagenError, match="preset"):
        unet_preset("base1024", 128)


@pytest.mark.parametrize("name", list(PRESETS))
def test_shape_and_every_parameter_gets_gradient(name):
    cfg = unet_preset(name, D)
    model = randomized(Unet(cfg)).train()
    kw = inputs(cfg, B=2)
    kw["text_mask"][0, 3:] = False                      # one caption padded
    out = model(**kw, cond_drop_mask=torch.tensor([True, False]))  # one null caption: the null tokens get gradient
    assert out.shape == kw["x"].shape
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_padding_is_ignored():
    cfg = small_config()
    model = randomized(Unet(cfg))
    kw = inputs(cfg, B=2, L=5)
    kw["text_mask"][1, 4] = False                       # a caption that is already padded
    with torch.no_grad():
        ref = model(**kw)
        pad = torch.randn(2, 3, D)
        longer = dict(kw, text_embeds=torch.cat([kw["text_embeds"], pad], 1),
                      text_mask=torch.cat([kw["text_mask"], torch.zeros(2, 3, dtype=torch.bool)], 1))
        torch.testing.assert_close(model(**longer), ref, atol=1e-5, rtol=0)
        longer["text_embeds"][:, 5:] = 100 * torch.randn(2, 3, D)  # new values at padded positions
        longer["text_embeds"][1, 4] = 7.0
        torch.testing.assert_close(model(**longer), ref, atol=1e-5, rtol=0)


def test_all_padding_and_null_text():
    cfg = small_config()
    model = randomized(Unet(cfg))
    kw = inputs(cfg, B=2)
    with torch.no_grad():
        assert torch.isfinite(model(**dict(kw, text_mask=torch.zeros(2, 5, dtype=torch.bool)))).all()
        # A dropped caption is replaced by the null tokens: its text then has no effect at all.
        drop = torch.tensor([True, True])
        other = dict(kw, text_embeds=torch.randn(2, 5, D))
        torch.testing.assert_close(model(**kw, cond_drop_mask=drop), model(**other, cond_drop_mask=drop))
        assert not torch.allclose(model(**kw, cond_drop_mask=drop), model(**kw), atol=1e-4)


def test_conditioning_changes_output():
    for cfg in (small_config(), small_config(lowres_cond=True, image_size=64)):
        model = randomized(Unet(cfg))
        kw = inputs(cfg, B=2)
        changes = dict(text_embeds=torch.randn_like(kw["text_embeds"]), log_snr=kw["log_snr"] + 3)
        if cfg.lowres_cond:
            changes.update(lowres=torch.randn_like(kw["lowres"]), aug_log_snr=kw["aug_log_snr"] + 3)
        with torch.no_grad():
            ref = model(**kw)
            for key, value in changes.items():
                diff = (model(**dict(kw, **{key: value})) - ref).abs().max()
                assert diff > 1e-4, f"changing {key} does not change the output"


def test_efficient_vs_classic():
    """Same parameters (within 1%), same output shape; the efficient ordering runs every block at half the
    resolution, so it costs far fewer FLOPs."""
    cfg = unet_preset("base32", D)
    eff, classic = Unet(cfg), Unet(replace(cfg, efficient=False))
    assert abs(count_parameters(eff) - count_parameters(classic)) < 0.01 * count_parameters(classic)
    flops = []
    for model in (eff, classic):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            assert model(**inputs(model.config, B=1)).shape == (1, 3, 32, 32)
        flops.append(counter.get_total_flops())
    assert flops[0] < 0.4 * flops[1]


def test_bf16_autocast():
    cfg = small_config(lowres_cond=True)
    model = randomized(Unet(cfg))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = model(**inputs(cfg), cond_drop_mask=torch.tensor([False, True]))
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out.float()).all()


def test_overfits_four_images():
    """As a denoiser (eps-prediction, x_t = alpha*x0 + sigma*eps, variance preserving) the U-Net memorises
    4 captioned images: the loss on a fixed held batch falls from ~1 (zero output) to below 0.1."""
    torch.manual_seed(0)
    cfg = small_config()
    model = Unet(cfg)
    images = -torch.ones(4, 3, 32, 32)                    # four coloured squares in four places
    colors = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])
    for i, (y, x) in enumerate([(2, 2), (2, 16), (16, 2), (16, 16)]):
        images[i, :, y:y + 14, x:x + 14] = colors[i, :, None, None]
    text, mask = torch.randn(4, 6, D), torch.ones(4, 6, dtype=torch.bool)

    def loss_on(x0, log_snr, eps):
        alpha, sigma = (torch.sigmoid(s * log_snr).sqrt()[:, None, None, None] for s in (1, -1))
        x_t = alpha * x0 + sigma * eps
        return (model(x_t, log_snr, text.repeat(2, 1, 1), mask.repeat(2, 1)) - eps).square().mean()

    x0 = images.repeat(2, 1, 1, 1)
    g = torch.Generator().manual_seed(1)
    held = (torch.rand(8, generator=g) * 10 - 5, torch.randn(8, 3, 32, 32, generator=g))
    with torch.no_grad():
        initial = loss_on(x0, *held).item()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(300):
        loss = loss_on(x0, torch.rand(8) * 10 - 5, torch.randn_like(x0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 19:
            with torch.no_grad():
                final = loss_on(x0, *held).item()
            if final < 0.1:
                break
    assert final < 0.1 and final < 0.2 * initial, (initial, final, step)


def test_error_messages():
    base, sr = Unet(small_config()), Unet(small_config(lowres_cond=True))
    kw = inputs(base.config)
    with pytest.raises(MinimagenError, match="32x32"):
        base(**dict(kw, x=torch.randn(2, 3, 64, 64)))
    with pytest.raises(MinimagenError, match="3, H, W"):
        base(**dict(kw, x=torch.randn(2, 4, 32, 32)))
    with pytest.raises(MinimagenError, match="use the encoder it was trained with"):
        base(**dict(kw, text_embeds=torch.randn(2, 5, D + 1)))
    with pytest.raises(MinimagenError, match="needs lowres"):
        sr(**kw)
    with pytest.raises(MinimagenError, match="base U-Net"):
        base(**kw, lowres=kw["x"], aug_log_snr=kw["log_snr"])
    with pytest.raises(MinimagenError, match="image_size"):
        Unet(small_config(image_size=36))
