"""Exercises that cannot be spoiled: the learner's cell holds their function, a check runs it, and the
solution is never executed over it.

    def my_dynamic_threshold(x0, p, cap):
        raise NotImplementedError  # your code here
    attempt("1", my_dynamic_threshold, check_dynamic_threshold, reference=diffusion.dynamic_threshold)

`attempt` runs the check on the learner's function. While it is still the stub (it raises
NotImplementedError), it says so and checks the reference instead, so "Run All" completes and the
learner sees what a passing run prints. A wrong answer fails loudly, with a hint. Each check is a plain
function of the candidate, so tests/test_exercises.py can show that it fails on the stub and on a
plausible wrong answer and passes on the reference.
"""
import torch

from . import diffusion as D


class ExerciseError(AssertionError):
    """A check found a wrong answer; the message says what differs and what to look at."""


def attempt(name: str, fn, check, reference):
    """Check the learner's `fn`; on the stub, say so and check `reference` in its place."""
    try:
        result = check(fn)
    except NotImplementedError:
        print(f"exercise {name}: not written yet, so the reference ran in its place; write yours in the cell above "
              "and rerun this one")
        return check(reference)
    print(f"exercise {name}: your answer passes")
    return result


def check_dynamic_threshold(fn) -> None:
    """fn(x0 [B, ...], p, cap) must equal dynamic thresholding with a cap [Imagen Sec. 2.3; diffusers'
    sample_max_value] on samples that are in range, a little out and far out."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g) * torch.tensor([0.3, 2.0, 8.0, 40.0]).view(4, 1, 1, 1)
    for p, cap in [(0.995, None), (0.95, 1.5), (0.9, 3.0)]:
        got, want = fn(x, p, cap), D.dynamic_threshold(x, p, cap)
        if got.shape != want.shape:
            raise ExerciseError(f"p={p}, cap={cap}: shape {tuple(got.shape)}, expected {tuple(want.shape)}; "
                                "keep the input's shape (take the percentile over each sample's flattened values).")
        if torch.allclose(got, want, atol=1e-5):
            continue
        s = torch.quantile(x.abs().flatten(1), p, dim=1)
        hint = ("the first sample is nearly in range: s must be at least 1, so it is only clipped, never stretched"
                if not torch.allclose(got[0], want[0], atol=1e-5) else
                "s must be at most the cap (when cap is not None)" if cap is not None and (s > cap).any() else
                "clip to [-s, s], then divide by s, with s per sample")
        raise ExerciseError(f"p={p}, cap={cap}: your result differs from dynamic thresholding by up to "
                            f"{(got - want).abs().max().item():.3g}; {hint}.")
