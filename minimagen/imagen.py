"""The cascade [Imagen Sec. 2.4, Fig. A.4]: a frozen text encoder, a base U-Net at low resolution,
and super-resolution U-Nets, each conditioned on the text and on the previous stage's image.

Noise-conditioning augmentation [Imagen Sec. 2.4, Algorithms 1-2 of Ho et al. 2021 "Cascaded
Diffusion Models"]: an SR stage is trained on low-res images corrupted by the forward process at a
random level, and is told that level; at sampling the previous stage's output is corrupted at a
chosen level (default 0.2). The SR stage thereby learns to fix the base stage's artefacts instead
of copying them. Training and sampling call the same `noise_augment`, on images in [-1, 1].
"""
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from . import diffusion as D
from .checks import check_choice, check_finite, check_images, check_sample_args
from .data import shown_path
from .device import autocast, resolve_bf16
from .errors import MinimagenError


def resize(images, size: int):
    """[B, C, h, w] -> [B, C, size, size]: antialiased bilinear going down, bilinear going up."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def down_up(images, low_size: int):
    """What an SR stage sees of its target in training: the target downsampled, then upsampled back."""
    return resize(resize(images, low_size), images.shape[-1])


def noise_augment(lowres, aug_level, schedule: str = "cosine", generator=None):
    """Corrupt the (upsampled, [-1, 1]) conditioning image by q(z_aug | lowres) at time aug_level [B]
    in [0, 1] (0 = untouched); return it with its log-SNR, which the SR U-Net is given as extra conditioning."""
    aug_log_snr = D.get_schedule(schedule)(aug_level)
    if generator is None:
        noise = torch.randn_like(lowres)
    else:  # seeded sampling: draw on the CPU so a seed means the same noise on every device
        noise = torch.randn(lowres.shape, generator=generator).to(lowres.device)
    clean = (aug_level <= 0).view(-1, 1, 1, 1)  # level 0 means clean (the schedule's t = 0 still has sigma ~0.01)
    return torch.where(clean, lowres, D.q_sample(lowres, aug_log_snr, noise)), aug_log_snr


def upsample_and_augment(lowres, size: int, aug_level, schedule: str = "cosine", generator=None):
    """What an SR stage is given at sampling: the previous stage's image [B, 3, h, h] upsampled to `size`,
    THEN noise-augmented at aug_level [B] (the noise is drawn per output pixel). -> ([B, 3, size, size], log-SNR [B])"""
    return noise_augment(resize(lowres, size), aug_level, schedule, generator)


def min_snr_weight(log_snr, objective: str, gamma: float = 5.0):
    """Min-SNR-gamma loss weighting [Hang et al. 2023, Eq. 8-9]: weight the x0-space error by
    min(SNR, gamma), so the many easy low-noise timesteps stop dominating the gradient. Expressed as
    a weight on our objective's squared error (||eps err||^2 = SNR ||x0 err||^2 and
    ||v err||^2 = (SNR + 1) ||x0 err||^2): x0: min(SNR, g); eps: min(SNR, g) / SNR; v: min(SNR, g) / (SNR + 1)."""
    snr = log_snr.float().exp()
    clipped = snr.clamp(max=gamma)
    return {"x0": clipped, "eps": clipped / snr, "v": clipped / (snr + 1)}[objective]


LOSS_WEIGHTINGS = ("uniform", "min_snr")


def stage_loss(unet, images, embeds, mask, lowres_size=None, objective="v", schedule="cosine", cond_drop_prob=0.1,
               noise_aug=0.0, loss_weighting="uniform"):
    """Denoising loss of one stage [DDPM Eq. 14, in continuous time]: t ~ U(0, 1), noise the images,
    ask the U-Net for the objective (eps, v or x0), mean squared error. Stages train independently
    (one U-Net per run, as in the paper); an SR stage (lowres_size set) gets noise-conditioning
    augmentation at a random level per sample, uniform in [0, noise_aug]: 0 (the default, and the shipped
    SR stages' recipe) feeds it clean, 1.0 is the paper's whole range up to pure noise.
    loss_weighting "min_snr": Min-SNR-5 weights (min_snr_weight). `unet` may be a DDP wrapper."""
    check_choice(loss_weighting, LOSS_WEIGHTINGS, "loss_weighting")
    config = getattr(unet, "module", unet).config
    dev = embeds.device
    x0 = check_images(images, config.image_size).to(dev)
    if embeds.shape[0] != x0.shape[0]:
        raise MinimagenError(f"got {x0.shape[0]} images but {embeds.shape[0]} captions: pass one caption per image.")
    B = x0.shape[0]
    log_snr = D.get_schedule(schedule)(torch.rand(B, device=dev))
    noise = torch.randn_like(x0)
    x_t = D.q_sample(x0, log_snr, noise)
    lowres = aug_log_snr = None
    if lowres_size is not None:
        aug = torch.rand(B, device=dev) * float(noise_aug)
        lowres, aug_log_snr = noise_augment(down_up(x0, lowres_size), aug, schedule)
    drop = torch.rand(B, device=dev) < cond_drop_prob  # classifier-free guidance: also learn p(x | no text)
    pred = unet(x_t, log_snr, embeds, mask.to(dev), lowres, aug_log_snr, drop)
    target = D.training_target(objective, x0, noise, log_snr)
    if loss_weighting == "uniform":
        return F.mse_loss(pred.float(), target)
    per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))
    return (min_snr_weight(log_snr, objective) * per_sample).mean()


class Imagen(nn.Module):
    """A text encoder (frozen, deliberately not a submodule: never trained or saved here) and a list
    of U-Nets: unets[0] is the base (or, with lowres_size, an SR stage run on given images) and
    unets[k > 0] upsample the output of unets[k - 1]."""

    def __init__(self, unets, text_encoder, objective="v", schedule="cosine", cond_drop_prob=0.1, lowres_size=None):
        super().__init__()
        self.unets = nn.ModuleList(unets)
        self.text_encoder = text_encoder
        self.objective, self.schedule, self.cond_drop_prob = objective, schedule, cond_drop_prob
        self.image_sizes = [u.config.image_size for u in unets]
        self.lowres_sizes = [lowres_size] + self.image_sizes[:-1]  # what each stage upsamples from
        for k, unet in enumerate(unets):
            if unet.config.text_embed_dim != text_encoder.dim:
                raise MinimagenError(f"U-Net {k} expects text embeddings of size {unet.config.text_embed_dim} but the "
                                     f"text encoder {text_encoder.name!r} gives {text_encoder.dim}: use the encoder it was trained with.")
            if unet.config.lowres_cond != (self.lowres_sizes[k] is not None):
                raise MinimagenError(f"U-Net {k} is {'an SR' if unet.config.lowres_cond else 'a base'} model but sits at "
                                     f"stage {k}: put the base U-Net first (or pass lowres_size for an SR-only cascade).")

    @property
    def device(self):
        return next(self.parameters()).device

    def _stage(self, stage: int):
        if not isinstance(stage, numbers.Integral) or isinstance(stage, bool) or not 0 <= stage < len(self.unets):
            raise MinimagenError(f"stage {stage!r} is out of range: this cascade has stages 0..{len(self.unets) - 1}.")
        return self.unets[stage]

    def loss(self, images, captions, stage: int = 0, noise_aug=0.0, loss_weighting="uniform"):
        """The denoising loss of one stage (see stage_loss)."""
        unet = self._stage(stage)
        embeds, mask = self.text_encoder.encode(captions)
        return stage_loss(unet, images, embeds, mask, self.lowres_sizes[stage], self.objective, self.schedule,
                          self.cond_drop_prob, noise_aug, loss_weighting)

    def guided_model_fn(self, unet, embeds, mask, guidance_scale, lowres=None, aug_log_snr=None):
        """model_fn(x_t, log_snr) for the sampler: the conditional and unconditional predictions in
        ONE batched call (text, then the learned null text), combined by classifier-free guidance."""
        B = embeds.shape[0]
        if guidance_scale == 1.0:
            return lambda x, log_snr: unet(x, log_snr, embeds, mask, lowres, aug_log_snr, None)
        two = lambda t: None if t is None else torch.cat([t, t])
        drop = torch.arange(2 * B, device=embeds.device) >= B  # [False]*B + [True]*B

        def model_fn(x, log_snr):
            cond, uncond = unet(two(x), two(log_snr), two(embeds), two(mask), two(lowres), two(aug_log_snr), drop).chunk(2)
            return D.classifier_free_guidance(cond.float(), uncond.float(), guidance_scale)
        return model_fn

    @torch.no_grad()
    def sample(self, captions, guidance_scale=3.0, thresholding=D.DEFAULT_THRESHOLDING, steps=50, sampler="ddim",
               seed=0, stages=None, lowres_images=None, lowres_aug_level=0.0, return_all_stages=False, bf16=False,
               callback=None):
        """Caption(s) -> images in [-1, 1]: the base stage from noise, then each SR stage from the
        stage before, its input noise-augmented at lowres_aug_level (0 = clean, the default: best for
        the shipped SR stages in benchmarks/archive/sr_stages.py and noise_aug.py; 1 = pure noise).
        guidance_scale: one w for every stage, or a list with one per stage (base first).
        stages: how many stages to run (default all). lowres_images: the input of an SR-only cascade.
        steps / sampler / thresholding apply to every stage (thresholding: a diffusion.Thresholding such as
        Thresholding("dynamic", 0.995, None), a method name, or a function x0 -> x0). Returns the last stage's
        [B, 3, H, W], or the list of every stage's images with return_all_stages."""
        rule, scales, stages, images = check_sample_args(self, guidance_scale, thresholding, steps, sampler, seed, stages,
                                                         lowres_images, lowres_aug_level)
        self.eval()
        dev, g = self.device, torch.Generator().manual_seed(int(seed))
        use_bf16 = resolve_bf16(dev, bf16)  # True on a CPU without bf16: one error naming the fix
        embeds, mask = (t.to(dev) for t in self.text_encoder.encode(captions))  # a string is one caption
        B, outputs = embeds.shape[0], []
        if images is not None and images.shape[0] != B:
            raise MinimagenError(f"got {images.shape[0]} lowres_images but {B} caption(s): pass one caption per image.")
        for k in range(stages):
            size, lowres, aug_log_snr = self.image_sizes[k], None, None
            if self.lowres_sizes[k] is not None:  # noise-conditioning augmentation, as in training
                aug = torch.full((B,), float(lowres_aug_level), device=dev)
                lowres, aug_log_snr = upsample_and_augment(images.to(dev), size, aug, self.schedule, g)
            model_fn = self.guided_model_fn(self.unets[k], embeds, mask, scales[k], lowres, aug_log_snr)
            with autocast(dev, use_bf16):
                images = D.sample_loop(model_fn, (B, 3, size, size), steps, sampler, self.objective, rule, self.schedule,
                                       generator=g, device=dev, callback=callback)
            images = check_finite(images.float()).clamp(-1, 1)  # once per stage, not at every step
            outputs.append(images)
        return outputs if return_all_stages else outputs[-1]


def load_cascade(paths, device=None, use_ema=True, text_encoder=None) -> Imagen:
    """Build a cascade from stage checkpoints (base first, then SR stages in order, or SR stages
    alone). The text encoder is the one the checkpoints were trained with."""
    from .checkpoint import check_text_encoder, load_checkpoint
    from .device import pick_device
    from .text import TextEncoder
    from .unet import Unet, UnetConfig

    paths = [paths] if isinstance(paths, (str, bytes)) or not hasattr(paths, "__iter__") else list(paths)
    if not paths:
        raise MinimagenError("load_cascade got no checkpoint paths: pass e.g. ['data/checkpoints/base32.pt'].")
    device = pick_device(device)
    states = [load_checkpoint(p, device) for p in paths]
    encoders = {s["text_encoder"] for s in states}
    if len(encoders) > 1:
        raise MinimagenError(f"these checkpoints were trained with different text encoders {sorted(encoders)}: "
                             "a cascade shares one encoder, so retrain a stage with the other's.")
    for prev, (path, s) in zip(states, list(zip(paths, states))[1:]):
        if s["lowres_size"] != prev["image_size"]:
            what = "is a base stage" if s["lowres_size"] is None else f"upsamples from {s['lowres_size']} px"
            raise MinimagenError(f"{shown_path(path)} {what} but the stage before it makes {prev['image_size']} px: "
                                 "pass the stages in cascade order (base, 32->64, 64->128).")
    if text_encoder is None:
        text_encoder = TextEncoder(states[0]["text_encoder"], device=device)
    for path, s in zip(paths, states):
        check_text_encoder(s, text_encoder, path)  # same name is not enough: same weights?
    unets = []
    for path, s in zip(paths, states):
        if not use_ema and "model" not in s:
            raise MinimagenError(f"{path} holds only the EMA weights (an exported ema.pt): pass use_ema=True or the run's last.pt.")
        try:
            unet = Unet(UnetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in s["unet_config"].items()}))
            unet.load_state_dict(s["ema" if use_ema else "model"])
        except (TypeError, RuntimeError) as exc:  # unknown config fields, or weights of another shape
            raise MinimagenError(f"{path}'s weights do not fit its U-Net config ({str(exc).splitlines()[0][:120]}): it was "
                                 "written by another minimagen version or edited; use a checkpoint from this version.") from None
        unets.append(unet.to(device))
    return Imagen(unets, text_encoder, states[0]["objective"], states[0]["schedule"], lowres_size=states[0]["lowres_size"])
