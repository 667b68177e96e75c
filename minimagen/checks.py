"""Input checks for the diffusion core's public functions: a wrong dtype or shape, or a NaN, ends in
one sentence that names the fix, instead of a torch error from deep inside or a silently NaN image.
Kept apart so that diffusion.py reads as the maths."""
import numbers

import torch

from .errors import MinimagenError


def check_tensor(x, name: str, min_dim: int = 0, nonfinite_fix: str = "find where they first appear"):
    """x must be a finite floating-point tensor with at least min_dim dimensions."""
    if not torch.is_tensor(x):
        raise MinimagenError(f"{name} must be a torch tensor, got {type(x).__name__}: convert it with torch.as_tensor(...).")
    if not x.is_floating_point():
        raise MinimagenError(f"{name} is {x.dtype}, not floating point: convert it with .float() "
                             "(uint8 images: x.float() / 127.5 - 1).")
    if x.ndim < min_dim:
        raise MinimagenError(f"{name} has shape {tuple(x.shape)} but needs a batch dimension [B, ...]: "
                             f"add one with {name}[None].")
    if not torch.isfinite(x).all():
        raise MinimagenError(f"{name} holds NaN or inf values: {nonfinite_fix}.")
    return x


NETWORK_NAN_FIX = ("the network's weights may hold NaN (a diverged run or a corrupt checkpoint) or the guidance "
                   "scale is extreme: load an earlier checkpoint or lower guidance_scale")


def at_least_float32(x):
    """float16/bfloat16 -> float32 for sampler arithmetic: x_t / alpha reaches ~1e5 at the noisy end,
    past float16's largest value (65504)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def check_per_sample(v, x, name: str):
    """A number, or a tensor of 1 or B (= x.shape[0]) finite values, as a float tensor."""
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        v = torch.tensor(float(v), dtype=x.dtype)
    if not torch.is_tensor(v) or v.dtype == torch.bool:
        raise MinimagenError(f"{name} must be a number or a float tensor [B], got {type(v).__name__}.")
    v = v if v.is_floating_point() else v.float()
    if v.numel() not in (1, x.shape[0]):
        raise MinimagenError(f"{name} has {v.numel()} values for a batch of {x.shape[0]}: pass one per sample "
                             "(shape [B]) or a single number.")
    return check_tensor(v, name)


def check_time(t):
    """t: a number or a tensor in [0, 1] -> a float tensor (float32, or float64 if given)."""
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        t = torch.tensor(float(t))
    if not torch.is_tensor(t):
        raise MinimagenError(f"t must be a number or a tensor in [0, 1], got {type(t).__name__}.")
    t = t if t.dtype == torch.float64 else t.float()
    if ((t < 0) | (t > 1) | t.isnan()).any():
        raise MinimagenError("t must lie in [0, 1] (0 = data, 1 = pure noise): sample it with torch.rand(B) "
                             "or torch.linspace(1, 0, steps + 1).")
    return t


def check_choice(value, choices, what: str):
    """value must be one of the names in `choices` (a string: an unhashable value is just wrong too)."""
    if not isinstance(value, str) or value not in choices:
        raise MinimagenError(f"Unknown {what} {value!r}: use one of {list(choices)}.")
    return value
