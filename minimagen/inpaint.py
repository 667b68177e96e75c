"""Inpainting with a text-to-image model that was never trained for it: RePaint
[Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models", Algorithm 1].

At every ancestral step the image is rebuilt from two parts: the known pixels are the *original*
image pushed through the forward process to the next noise level (exact, no model needed), the
unknown pixels are the model's ancestral step. Alone that stitches two images that disagree at the
border: the model never saw the real known pixels, only their noise. RePaint's fix is resampling:
after a step, go back up one step with the forward transition q(x_t | x_s) and redo the step, U
times, so the model sees the stitched image and harmonises the unknown part with the known part.
"""
import torch

from . import diffusion as D
from .checks import check_finite, check_images, check_sampling_args
from .errors import MinimagenError


def forward_transition(x_s, log_snr_s, log_snr_t, noise):
    """x_t ~ q(x_t | x_s), s < t (one step back towards noise) [VDM Eq. 1-2 / DDPM Eq. 2, in log-SNR form]:
        x_t = (alpha_t / alpha_s) x_s + sqrt(v) z,  v = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2
                                                      = sigma_t^2 (1 - SNR(t) / SNR(s)) = -sigma_t^2 expm1(lambda_t - lambda_s)."""
    (alpha_t, sigma_t), (alpha_s, _) = D.alpha_sigma(log_snr_t), D.alpha_sigma(log_snr_s)
    var = sigma_t**2 * -torch.expm1(log_snr_t - log_snr_s)
    return D._bcast(alpha_t / alpha_s, x_s) * x_s + D._bcast(var.clamp(min=0).sqrt(), x_s) * noise


def check_mask(mask, images):
    """mask: bool or 0/1 float [B or 1, 1, H, W], True = regenerate; returned as bool [B, 1, H, W]."""
    B, _, H, W = images.shape
    if not torch.is_tensor(mask) or mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, B) \
            or tuple(mask.shape[-2:]) != (H, W):
        raise MinimagenError(f"mask must be a tensor [{B} or 1, 1, {H}, {W}] (True = regenerate), got "
                             f"{tuple(getattr(mask, 'shape', ())) or type(mask).__name__}: e.g. mask = torch.zeros(1, 1, {H}, {W}, dtype=torch.bool).")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise MinimagenError("mask values must be 0 or 1 (1 = regenerate): threshold a soft mask with mask > 0.5.")
    return mask.bool().expand(B, 1, H, W)


@torch.no_grad()
def inpaint(model, images, mask, captions, guidance_scale=3.0, steps=50, resample=5,
            thresholding=D.DEFAULT_THRESHOLDING, seed=0, callback=None):
    """Regenerate the masked region of base-stage images [B, 3, H, W] in [-1, 1] to fit captions.

    mask [B or 1, 1, H, W]: True / 1 = the region to regenerate. resample: RePaint's U (1 = plain
    stitching, no going back). The model is called (steps - 1) * resample + 1 times (each a guided,
    2B-image batch when guidance_scale != 1); callback(i, log_snr, x_t, x0_raw, x0) at every call.
    The known region of the result is the original, pixel for pixel."""
    if model.lowres_sizes[0] is not None:
        raise MinimagenError("inpaint works on the base stage but this cascade starts with a super-resolution "
                             "stage: load the base checkpoint first, e.g. load_cascade(['data/checkpoints/base32.pt']).")
    if not isinstance(resample, int) or resample < 1:
        raise MinimagenError(f"resample must be an integer >= 1 (RePaint's U; 1 = no resampling), got {resample!r}.")
    original = check_images(images, model.image_sizes[0]).float()
    regen = check_mask(mask, original)
    captions = [captions] * len(original) if isinstance(captions, str) else list(captions)
    if len(captions) != len(original):
        raise MinimagenError(f"got {len(original)} images but {len(captions)} captions: pass one caption per image.")
    rule = check_sampling_args(steps, "ddpm", thresholding)
    model.eval()
    dev, g = model.device, torch.Generator().manual_seed(seed)
    original, regen = original.to(dev), regen.to(dev)
    embeds, text_mask = (t.to(dev) for t in model.text_encoder.encode(captions))
    model_fn = model.guided_model_fn(model.unets[0], embeds, text_mask, guidance_scale)
    randn = lambda: torch.randn(original.shape, generator=g).to(dev)  # CPU noise: same seed, same images anywhere

    B = len(original)
    log_snrs = D.sampling_log_snrs(steps, model.schedule, dev)
    x = randn()  # x_1 ~ N(0, I)
    for i in range(steps):
        log_snr_t, log_snr_s = log_snrs[i].expand(B), log_snrs[i + 1].expand(B)
        for u in range(1 if i == steps - 1 else resample):  # Algorithm 1 line 3: for u = 1..U
            x0_raw = D.prediction_to_x0(model.objective, model_fn(x, log_snr_t).float(), x, log_snr_t)
            x0 = rule(x0_raw)
            if callback is not None:
                callback(i, log_snr_t, x, x0_raw, x0)
            if i == steps - 1:  # the last step returns x_0 itself (as diffusion.sample_loop)
                return torch.where(regen, check_finite(x0).clamp(-1, 1), original)  # paste the original back: exact
            known = D.q_sample(original, log_snr_s, randn())  # line 5: x_{t-1}^known ~ q(x_{t-1} | x_0)
            unknown = D.ddpm_step(x, x0, log_snr_t, log_snr_s, randn())  # lines 6-7: ancestral step
            x_s = torch.where(regen, unknown, known)  # line 8
            if u < resample - 1:  # lines 9-10: back to the noise level of step i, and redo it
                x = forward_transition(x_s, log_snr_s, log_snr_t, randn())
        x = x_s
