"""The cascade [Imagen Sec. 2.4, Fig. A.4]: a frozen text encoder, a base U-Net at low resolution,
and super-resolution U-Nets, each conditioned on the text and on the previous stage's image.

Noise-conditioning augmentation [Imagen Sec. 2.4, Algorithms 1-2 of Ho et al. 2021 "Cascaded
Diffusion Models"]: an SR stage is trained on low-res images corrupted by the forward process at a
random level, and is told that level; at sampling the previous stage's output is corrupted at a
chosen level (default 0.2). The SR stage thereby learns to fix the base stage's artefacts instead
of copying them. Training and sampling call the same `noise_augment`, on images in [-1, 1].
"""
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from . import diffusion as D
from .checks import check_choice, check_finite, check_sampling_args
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


def check_images(images, size: int, name: str = "images"):
    """Images a stage takes in (training images, or an SR stage's lowres_images) must be float [B, 3, size, size]
    in [-1, 1]: one clear error otherwise, naming the argument."""
    if not torch.is_tensor(images):
        raise MinimagenError(f"{name} must be a torch tensor [B, 3, H, W], got {type(images).__name__}: convert it "
                             "with torch.as_tensor(images).")
    if images.ndim != 4:
        raise MinimagenError(f"{name} must be a tensor [B, 3, H, W], got {getattr(images, 'shape', type(images))}: "
                             "stack single images [3, H, W] with torch.stack(list_of_images).")
    if images.shape[0] == 0:
        raise MinimagenError(f"{name} is an empty batch [0, 3, H, W]: pass at least one image.")
    if images.shape[1] != 3:
        raise MinimagenError(f"{name} must have 3 (RGB) channels, got {images.shape[1]}: convert with .convert('RGB') or repeat grey channels.")
    if tuple(images.shape[-2:]) != (size, size):
        raise MinimagenError(f"this stage takes {size}x{size} {name} but got {tuple(images.shape[-2:])}: resize with minimagen.imagen.resize(images, {size}).")
    if not images.is_floating_point():
        raise MinimagenError(f"{name} are {images.dtype} (0..255?): convert them to float in [-1, 1] with images.float() / 127.5 - 1.")
    if not torch.isfinite(images).all():
        raise MinimagenError(f"{name} contain NaN or inf pixels: check the data loading.")
    if images.min() < -1.01 or images.max() > 1.01:
        raise MinimagenError(f"{name} must be in [-1, 1], got [{images.min():.2f}, {images.max():.2f}]: for [0, 1] data use images * 2 - 1, for 0..255 images / 127.5 - 1.")
    return images.float()  # the U-Net's weights are float32: float64 or float16 input would fail inside its first conv


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

    def _check_sample_args(self, guidance_scale, seed, stages, lowres_images, lowres_aug_level):
        """Imagen.sample's arguments, checked once before any work -> (one guidance scale per stage, the number
        of stages to run, the checked lowres_images or None)."""
        # one guidance scale per stage, as DeepFloyd IF samples (7 for its base, 4 for its SR stages): an SR
        # stage also has its input image to follow, and benchmarks/archive/sr_stages.py measures what w does there
        n = len(self.unets)
        scales = list(guidance_scale) if isinstance(guidance_scale, (list, tuple)) else [guidance_scale] * n
        # `0 <= x` is False for NaN and a TypeError for a string: check the type first
        if len(scales) != n or not all(isinstance(w, numbers.Real) and 0 <= w < math.inf for w in scales):
            raise MinimagenError(f"guidance_scale must be a number >= 0 (1 = no guidance, 3-7.5 typical) or a list of "
                                 f"{n} of them, one per stage; got {guidance_scale!r}.")
        if not (isinstance(lowres_aug_level, numbers.Real) and 0 <= lowres_aug_level <= 1):
            raise MinimagenError(f"lowres_aug_level must be in [0, 1] (0 = clean, 1 = pure noise), got {lowres_aug_level!r}.")
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not -2**63 <= seed < 2**64:
            raise MinimagenError(f"seed must be an integer (a 64-bit one), got {seed!r}.")
        stages = n if stages is None else stages
        if not isinstance(stages, numbers.Integral) or isinstance(stages, bool) or not 1 <= stages <= n:
            raise MinimagenError(f"stages={stages!r} is out of range: this cascade has {n} stage(s), so pass 1..{n} "
                                 "(or None for all).")
        if self.lowres_sizes[0] is not None:
            if lowres_images is None:
                raise MinimagenError(f"this cascade starts with a super-resolution stage: pass lowres_images "
                                     f"[B, 3, {self.lowres_sizes[0]}, {self.lowres_sizes[0]}] in [-1, 1] to upsample.")
            return scales, stages, check_images(lowres_images, self.lowres_sizes[0], "lowres_images")
        if lowres_images is not None:  # it would be silently ignored
            raise MinimagenError("this cascade starts with a base stage that samples from noise, so lowres_images would "
                                 "be ignored: drop it, or load the SR checkpoints alone to upsample your images.")
        return scales, stages, None

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
        rule = check_sampling_args(steps, sampler, thresholding)
        scales, stages, images = self._check_sample_args(guidance_scale, seed, stages, lowres_images, lowres_aug_level)
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
