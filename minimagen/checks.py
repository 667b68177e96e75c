"""Checks of the arguments a learner passes in, run once where they come in (Imagen.sample and .loss, inpaint,
TrainConfig, the CLI): a wrong setting ends in one sentence that names the fix, instead of a torch error from deep
inside the sampler or a silently NaN image. Kept apart so that diffusion.py, imagen.py and train.py read as the
method."""
import math
import numbers

import torch

from .errors import MinimagenError

NETWORK_NAN_FIX = ("the network's weights may hold NaN (a diverged run or a corrupt checkpoint) or the guidance "
                   "scale is extreme: load an earlier checkpoint or lower guidance_scale")


def check_choice(value, choices, what: str):
    """value must be one of the names in `choices` (a string: an unhashable value is just wrong too)."""
    if not isinstance(value, str) or value not in choices:
        raise MinimagenError(f"Unknown {what} {value!r}: use one of {list(choices)}.")
    return value


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_thresholding(rule):
    """A diffusion.Thresholding's fields, checked when it is made."""
    check_choice(rule.method, ("none", "static", "dynamic"), "thresholding")
    if not (_is_real(rule.percentile) and 0.0 < rule.percentile <= 1.0):
        raise MinimagenError(f"percentile must be in (0, 1], got {rule.percentile!r}: 0.9 is a good default.")
    if rule.cap is not None and not (_is_real(rule.cap) and 1.0 <= rule.cap < math.inf):
        raise MinimagenError(f"cap must be None (no cap) or a number >= 1, got {rule.cap!r}: 1.5 is a good default.")


def check_sampling_args(steps, sampler, thresholding):
    """The settings diffusion.sample_loop takes, checked once before sampling -> the thresholding rule."""
    from .diffusion import SAMPLERS, as_thresholding
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps <= 0:
        raise MinimagenError(f"steps must be a positive integer, got {steps!r}: try 50 for DDIM, 250 for DDPM.")
    check_choice(sampler, SAMPLERS, "sampler")
    return as_thresholding(thresholding)


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


def check_sample_args(model, guidance_scale, thresholding, steps, sampler, seed, stages, lowres_images, lowres_aug_level):
    """Imagen.sample's arguments, checked once before any work -> (the thresholding rule, one guidance scale per
    stage, the number of stages to run, the checked lowres_images or None)."""
    rule = check_sampling_args(steps, sampler, thresholding)
    # one guidance scale per stage, as DeepFloyd IF samples (7 for its base, 4 for its SR stages): an SR
    # stage also has its input image to follow, and benchmarks/archive/sr_stages.py measures what w does there
    n = len(model.unets)
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
    if model.lowres_sizes[0] is not None:
        if lowres_images is None:
            raise MinimagenError(f"this cascade starts with a super-resolution stage: pass lowres_images "
                                 f"[B, 3, {model.lowres_sizes[0]}, {model.lowres_sizes[0]}] in [-1, 1] to upsample.")
        return rule, scales, stages, check_images(lowres_images, model.lowres_sizes[0], "lowres_images")
    if lowres_images is not None:  # it would be silently ignored
        raise MinimagenError("this cascade starts with a base stage that samples from noise, so lowres_images would "
                             "be ignored: drop it, or load the SR checkpoints alone to upsample your images.")
    return rule, scales, stages, None


def check_train_config(c):
    """A TrainConfig's fields, checked once when it is made (after the stage's recipe filled the unset ones): caught
    here, not as a TypeError, a torch error, a ZeroDivisionError or silently odd training steps later."""
    from .diffusion import OBJECTIVES, SCHEDULES
    from .imagen import LOSS_WEIGHTINGS
    from .train import LR_SCHEDULES
    counts = ("steps", "batch_size", "warmup_steps", "log_every", "checkpoint_every", "sample_every", "dataset_size", "seed")
    wrong = [f"{k}={getattr(c, k)!r} (use a whole number)" for k in counts
             if not isinstance(getattr(c, k), numbers.Integral) or isinstance(getattr(c, k), bool)]
    wrong += [f"{k}={getattr(c, k)!r} (use a number)" for k in ("lr", "grad_clip", "ema_decay", "cond_drop_prob", "noise_aug")
              if not _is_real(getattr(c, k))]
    if wrong:  # a string from a config file
        raise MinimagenError(f"bad training settings: {'; '.join(wrong)}.")
    if c.steps <= 0 or c.batch_size <= 0:
        raise MinimagenError("steps and batch_size must be positive integers.")
    rules = [("lr", c.lr > 0, "> 0"), ("warmup_steps", c.warmup_steps >= 0, ">= 0"),
             ("grad_clip", c.grad_clip > 0, "> 0"), ("ema_decay", 0 <= c.ema_decay < 1, "in [0, 1)"),
             ("cond_drop_prob", 0 <= c.cond_drop_prob <= 1, "in [0, 1]"), ("noise_aug", 0 <= c.noise_aug <= 1, "in [0, 1]"),
             ("log_every", c.log_every >= 1, ">= 1"), ("checkpoint_every", c.checkpoint_every >= 1, ">= 1"),
             ("sample_every", c.sample_every >= 0, ">= 0 (0 = never)"),
             ("objective", c.objective in OBJECTIVES, f"one of {list(OBJECTIVES)}"),
             ("lr_schedule", c.lr_schedule in LR_SCHEDULES, f"one of {list(LR_SCHEDULES)}"),
             ("schedule", c.schedule in SCHEDULES, f"one of {sorted(SCHEDULES)}"),
             ("loss_weighting", c.loss_weighting in LOSS_WEIGHTINGS, f"one of {list(LOSS_WEIGHTINGS)}")]
    bad = [f"{name}={getattr(c, name)!r} (use {rule})" for name, ok, rule in rules if not ok]
    if bad:
        raise MinimagenError(f"bad training settings: {'; '.join(bad)}.")


def check_finite(images):
    """Sampled images must be finite: NaN would pass through clamp() silently."""
    if not torch.isfinite(images).all():
        raise MinimagenError(f"the sampled images hold NaN or inf values: {NETWORK_NAN_FIX}.")
    return images
