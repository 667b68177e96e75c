"""Every exercise check fails on the stub and on a plausible wrong answer, and passes on the reference
(minimagen.exercises); `attempt` runs the reference in place of a stub and says so."""
import pytest
import torch

from minimagen import diffusion as D
from minimagen.exercises import ExerciseError, attempt, check_dynamic_threshold


def stub(x0, p, cap):
    raise NotImplementedError


def no_floor(x0, p, cap):  # forgets s >= 1: in-range samples get stretched
    s = torch.quantile(x0.abs().flatten(1), p, dim=1)
    s = (s if cap is None else s.clamp(max=cap)).view(-1, 1, 1, 1)
    return x0.clamp(-s, s) / s


def no_cap(x0, p, cap):  # ignores the cap
    return D.dynamic_threshold(x0, p, None)


def static(x0, p, cap):
    return x0.clamp(-1, 1)


def test_dynamic_threshold_check():
    check_dynamic_threshold(D.dynamic_threshold)
    with pytest.raises(NotImplementedError):
        check_dynamic_threshold(stub)
    for wrong, hint in ((no_floor, "at least 1"), (no_cap, "at most the cap"), (static, "divide by s")):
        with pytest.raises(ExerciseError, match=hint):
            check_dynamic_threshold(wrong)


def test_attempt_runs_the_reference_for_a_stub_and_fails_a_wrong_answer(capsys):
    attempt("1", stub, check_dynamic_threshold, D.dynamic_threshold)
    assert "not written yet" in capsys.readouterr().out
    attempt("1", D.dynamic_threshold, check_dynamic_threshold, D.dynamic_threshold)
    assert "passes" in capsys.readouterr().out
    with pytest.raises(ExerciseError):
        attempt("1", static, check_dynamic_threshold, D.dynamic_threshold)
