"""Checks of the arguments a learner passes in, run once where they come in (Imagen.sample, inpaint,
the CLI): a wrong setting ends in one sentence that names the fix, instead of a torch error from deep
inside the sampler or a silently NaN image. Kept apart so that diffusion.py reads as the maths."""
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


def check_finite(images):
    """Sampled images must be finite: NaN would pass through clamp() silently."""
    if not torch.isfinite(images).all():
        raise MinimagenError(f"the sampled images hold NaN or inf values: {NETWORK_NAN_FIX}.")
    return images
