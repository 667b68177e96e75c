"""The cascade: loss per stage, noise-conditioning augmentation consistent between training and
sampling, guided sampling through the stages. Its input errors: the tables of test_robustness.py."""
import pytest
import torch

from minimagen import diffusion as D
from minimagen.errors import MinimagenError
from minimagen.imagen import Imagen, down_up, noise_augment, resize


class Spy(torch.nn.Module):
    """Wraps a U-Net and records the low-res conditioning it is given."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.config, self.seen = unet, unet.config, []

    def forward(self, x, log_snr, embeds, mask, lowres=None, aug_log_snr=None, drop=None):
        self.seen.append((lowres, aug_log_snr))
        return self.unet(x, log_snr, embeds, mask, lowres, aug_log_snr, drop)


def test_loss_for_each_stage_is_finite_and_backpropagates(cascade):
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    for stage, size in enumerate(cascade.image_sizes):
        loss = cascade.loss(resize(images, size), ["a small red circle", "a large blue square"], stage)
        loss.backward()
        assert torch.isfinite(loss) and loss.item() > 0


def test_down_up_keeps_size_and_loses_detail():
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    y = down_up(x, 32)
    assert y.shape == x.shape and not torch.allclose(x, y)
    assert y.std() < 0.7 * x.std()  # white noise: most of its detail lives above 16 cycles per image


def residual_std(lowres_noised, clean, aug_log_snr):
    alpha, sigma = D.alpha_sigma(aug_log_snr)
    return ((lowres_noised - D._bcast(alpha, clean) * clean) / D._bcast(sigma, clean)).std().item()


def test_noise_augmentation_is_the_forward_process_in_minus_one_to_one():
    """The augmentation noises the [-1, 1] image: (z - alpha x) / sigma is unit noise. MinImagen's
    bug (noising in [0, 1] at sampling, then normalising) would give std 2 here."""
    x = torch.rand(64, 3, 16, 16) * 2 - 1
    z, log_snr = noise_augment(x, torch.full((64,), 0.5))
    assert abs(residual_std(z, x, log_snr) - 1) < 0.02


def test_training_and_sampling_give_the_sr_stage_the_same_kind_of_input(encoder, cascade):
    """Spy on what the SR U-Net receives in training and at sampling: the same forward process of the
    same [-1, 1] low-res image (unit-variance residual, identical clean part at aug level 0)."""
    spy = Spy(cascade.unets[1])
    model = Imagen([cascade.unets[0], spy], encoder)
    image = resize(torch.rand(4, 3, 64, 64) * 2 - 1, 64)
    captions = ["a small red circle"] * 4
    model.loss(image, captions, stage=1, noise_aug=1.0)  # augmented training, over the paper's U(0, 1) range
    lowres, aug_log_snr = spy.seen[-1]
    train_clean = down_up(image, 32)
    assert abs(residual_std(lowres, train_clean, aug_log_snr) - 1) < 0.05
    spy.seen.clear()
    sr_only = Imagen([spy], encoder, lowres_size=32)
    sr_only.sample(captions, lowres_images=resize(image, 32), steps=2, lowres_aug_level=0.5, guidance_scale=1.0)
    lowres, aug_log_snr = spy.seen[0]
    assert abs(residual_std(lowres, train_clean, aug_log_snr) - 1) < 0.05
    torch.testing.assert_close(aug_log_snr, D.cosine_log_snr(torch.full((4,), 0.5)))


def test_sample_shapes_and_determinism(cascade):
    out = cascade.sample(["a large teal square", "a red circle above a blue square"], steps=3, return_all_stages=True)
    assert [o.shape for o in out] == [(2, 3, 32, 32), (2, 3, 64, 64)]
    assert all(o.abs().max() <= 1 for o in out)
    again = cascade.sample(["a large teal square", "a red circle above a blue square"], steps=3)
    assert torch.equal(again, out[-1])
    for sampler in ("ddim", "ddpm"):
        a = cascade.sample("a small pink triangle", steps=3, sampler=sampler, seed=3, stages=1)
        b = cascade.sample("a small pink triangle", steps=3, sampler=sampler, seed=3, stages=1)
        assert torch.equal(a, b)


def test_guidance_uses_one_batched_call(cascade):
    spy = Spy(cascade.unets[0])
    calls = []
    spy.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    Imagen([spy], cascade.text_encoder).sample(["a small red circle"] * 3, guidance_scale=5.0, steps=2)
    assert calls == [6, 6]  # conditional + unconditional halves together, every step


def test_each_stage_can_have_its_own_guidance_scale(cascade):
    """A list gives one w per stage: the base's calls are batched (guided), the SR stage's are not (w = 1)."""
    spies = [Spy(u) for u in cascade.unets]
    calls = [[], []]
    for spy, seen in zip(spies, calls):
        spy.register_forward_hook(lambda m, args, out, seen=seen: seen.append(args[0].shape[0]))
    model = Imagen(spies, cascade.text_encoder)
    out = model.sample(["a small red circle"] * 3, guidance_scale=[5.0, 1.0], steps=2)
    assert calls == [[6, 6], [3, 3]] and out.shape == (3, 3, 64, 64)
    same = model.sample(["a small red circle"] * 3, guidance_scale=(5.0, 5.0), steps=2)
    torch.testing.assert_close(same, model.sample(["a small red circle"] * 3, guidance_scale=5.0, steps=2))


def test_min_snr_weight_is_min_snr_in_x0_space():
    """Each objective's weight times its error scale (SNR for eps, SNR+1 for v, 1 for x0) is min(SNR, 5)."""
    from minimagen.imagen import min_snr_weight
    log_snr = torch.linspace(-8, 8, 17)
    snr = log_snr.exp()
    expected = snr.clamp(max=5.0)
    for objective, scale in {"x0": torch.ones_like(snr), "eps": snr, "v": snr + 1}.items():
        torch.testing.assert_close(min_snr_weight(log_snr, objective) * scale, expected)


def test_stage_loss_options():
    """min_snr changes the loss value but not its gradient's existence; by default (noise_aug 0, the
    shipped SR recipe) the SR U-Net gets the clean down-up image at aug level 0; an unknown weighting
    names the valid ones."""
    from minimagen.imagen import stage_loss
    from minimagen.unet import Unet, unet_preset
    torch.manual_seed(0)
    unet = Unet(unet_preset("tiny-sr64", 16))
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    embeds, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    seen = {}
    orig = unet.forward
    unet.forward = lambda x, log_snr, e, m, lowres, aug, drop: seen.update(lowres=lowres, aug=aug) or orig(x, log_snr, e, m, lowres, aug, drop)
    torch.manual_seed(1)
    plain = stage_loss(unet, images, embeds, mask, 32)
    from minimagen.imagen import down_up
    from minimagen import diffusion as D
    torch.testing.assert_close(seen["lowres"], down_up(images, 32))
    torch.testing.assert_close(seen["aug"], D.get_schedule("cosine")(torch.zeros(2)))
    torch.manual_seed(1)
    weighted = stage_loss(unet, images, embeds, mask, 32, noise_aug=False, loss_weighting="min_snr")
    assert torch.isfinite(weighted) and weighted.item() != plain.item()
    weighted.backward()
    torch.manual_seed(2)
    stage_loss(unet, images, embeds, mask, 32, noise_aug=0.25)  # training levels ~ U(0, 0.25)
    levels = torch.linspace(0, 0.25, 101)  # the log-SNRs of levels in [0, 0.25], so the U-Net saw one of them
    assert (seen["aug"] <= D.get_schedule("cosine")(levels).max() + 1e-4).all()
    assert (seen["aug"] >= D.get_schedule("cosine")(levels).min() - 1e-4).all()
    with pytest.raises(MinimagenError, match="min_snr"):
        stage_loss(unet, images, embeds, mask, 32, loss_weighting="snr")
