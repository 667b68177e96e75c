"""The generic exercise check, one table (minimagen.exercises.EXERCISES): every exercise passes on its reference, fails
on the stub, on each named mistake (with that mistake's hint) and on a slightly wrong answer; minimagen.learner's
`attempt` never raises, a passing answer is saved and `yours` brings it back in a later notebook. Then the notebooks: every exercise is
attempted where it is taught, its function is used afterwards, and no cell redefines a learner function."""
import json
import re
from pathlib import Path

import pytest
import torch

from minimagen import diffusion as D
from minimagen import exercises as X
from minimagen import learner as L

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]*.ipynb"))


def stub(*args, **kwargs):
    raise NotImplementedError


def nudged(reference):
    """The reference's answer, slightly off: a wrong answer that no named mistake describes."""
    def nudge(v):
        if torch.is_tensor(v):
            return v + 0.01 if v.dtype != torch.bool else ~v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v + 1 if isinstance(v, int) else v * 1.01 + 0.01
        if isinstance(v, dict):
            return {k: nudge(u) for k, u in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(nudge(u) for u in v)
        return "wrong" if v is None else None
    return lambda *args, **kwargs: nudge(reference(*args, **kwargs))


@pytest.mark.parametrize("name", sorted(X.EXERCISES))
def test_reference_passes_and_wrong_answers_fail(name):
    ex = X.EXERCISES[name]
    X.check(name, ex.reference)
    with pytest.raises(NotImplementedError):
        X.check(name, stub)
    for hint, wrong in ex.mistakes.items():
        with pytest.raises(X.ExerciseError, match=re.escape(hint)):
            X.check(name, wrong)
    with pytest.raises(X.ExerciseError):
        X.check(name, nudged(ex.reference))


def test_attempt_never_raises(capsys):
    assert L.attempt("q_sample", stub) is X.EXERCISES["q_sample"].reference
    assert "not written yet" in capsys.readouterr().out

    def crashes(x0, log_snr, noise):
        return x0 @ noise  # a shape error
    assert L.attempt("q_sample", crashes) is X.EXERCISES["q_sample"].reference
    assert "YOUR FUNCTION FAILED" in capsys.readouterr().out
    assert L.attempt("q_sample", lambda x0, log_snr, noise: x0) is X.EXERCISES["q_sample"].reference
    assert "differs" in capsys.readouterr().out


def my_q_sample(x0, log_snr, noise):  # a learner's passing answer, using a module and a constant of its file
    alpha, sigma = (torch.sigmoid(SIGN * log_snr).sqrt().view(-1, 1, 1, 1) for SIGN in SIGNS)
    return alpha * x0 + sigma * noise


SIGNS = (1, -1)


def test_a_passing_answer_is_saved_and_comes_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIMAGEN_LEARNER_DIR", str(tmp_path))
    assert L.yours("q_sample") is X.EXERCISES["q_sample"].reference  # nothing saved yet
    assert L.attempt("q_sample", my_q_sample) is my_q_sample
    assert "saved to" in capsys.readouterr().out
    mine = L.yours("q_sample")
    assert mine is not X.EXERCISES["q_sample"].reference and mine.__name__ == "my_q_sample"
    x0, lam, noise = torch.randn(2, 3, 4, 4), torch.tensor([1.0, -2.0]), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(mine(x0, lam, noise), my_q_sample(x0, lam, noise))
    (tmp_path / "q_sample.py").write_text("def my_q_sample(x0, log_snr, noise):\n    return x0\nANSWER = my_q_sample\n")
    assert L.yours("q_sample") is X.EXERCISES["q_sample"].reference  # a saved answer that no longer passes
    assert "FAILED" in capsys.readouterr().out


def _code_cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_every_exercise_is_attempted_once_in_its_notebook():
    attempted = {}
    for path in NOTEBOOKS:
        for cell in _code_cells(path):
            for name in re.findall(r'attempt\("(\w+)"', cell):
                assert name in X.EXERCISES, f"{path.name}: unknown exercise {name!r}"
                assert name not in attempted, f"{name} is attempted in {attempted.get(name)} and {path.name}"
                assert path.name.startswith(X.EXERCISES[name].notebook), (name, path.name)
                attempted[name] = path.name
    assert set(attempted) == set(X.EXERCISES)


def test_every_exercise_function_is_used_after_it_is_written():
    """Its result is used by a later cell of the notebook, or a later notebook brings it back with yours()."""
    later = {}
    for k, path in enumerate(NOTEBOOKS):
        for cell in _code_cells(path):
            for name in re.findall(r'yours\("(\w+)"\)', cell):
                later.setdefault(name, []).append(k)
    for k, path in enumerate(NOTEBOOKS):
        cells = _code_cells(path)
        for i, cell in enumerate(cells):
            for m in re.finditer(r'(\w+) = attempt\("(\w+)", \w+\)', cell):
                var, name = m.groups()
                used_here = any(re.search(rf"\b{var}\b", c) for c in [cell[m.end():]] + cells[i + 1:])
                assert used_here or any(j > k for j in later.get(name, [])), \
                    f"{path.name}: nothing after the exercise uses {var} ({name})"
            assert not re.search(r"^\s*attempt\(", cell, re.M), f"{path.name}: an attempt whose result is dropped"


def test_no_cell_redefines_a_learner_function():
    defined = {}
    for path in NOTEBOOKS:
        for cell in _code_cells(path):
            for fn in re.findall(r"^def (my_\w+)", cell, re.M):
                assert fn not in defined, f"{fn} is defined in {defined[fn]} and again in {path.name}"
                defined[fn] = path.name


def test_the_written_out_references_are_the_package():
    """The references written out for a notebook compute what the package's own code does."""
    model = X._nets()["cascade"]
    for w, aug in ((3.0, 0.0), (1.0, 0.3)):
        torch.testing.assert_close(X.cascade(model, ["a red circle", "a blue square"], w, 3, 0, aug),
                                   model.sample(["a red circle", "a blue square"], w, steps=3, seed=0, lowres_aug_level=aug,
                                                return_all_stages=True))
    for step, sampler in ((X.ddim_step, "ddim"), (X.ddpm_step, "ddpm")):  # notebook 04's step signature, in the loop
        torch.testing.assert_close(X.reference_sample(X.toy_network, (2, 3, 4, 4), 4, step, seed=0),
                                   D.sample_loop(X.toy_network, (2, 3, 4, 4), 4, sampler, "v",
                                                 generator=torch.Generator().manual_seed(0)), rtol=0, atol=0)
    layer, x, tokens, mask = X.EXERCISES["cross_attention"].cases()[0]
    torch.testing.assert_close(X.cross_attention_by_hand(layer, x, tokens, mask), layer(x, tokens, mask))


def test_a_notebook_with_wrong_answers_runs_to_the_end(tmp_path, monkeypatch):
    """Notebook 03 with every stub replaced by a wrong answer (half of them crash) runs to its last cell, each
    exercise behind the banner. (The stored notebooks, stubs and all, run to the end under nbval.)"""
    nbformat, nbclient = pytest.importorskip("nbformat"), pytest.importorskip("nbclient")
    path = next(p for p in NOTEBOOKS if p.name.startswith("03_"))
    nb = nbformat.read(path, as_version=4)
    wrong = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and re.search(r"^def my_\w+", cell.source, re.M) and "NotImplementedError" in cell.source:
            answer = "return 0.5" if wrong % 2 else "raise ValueError('a bug')"
            cell.source = re.sub(r"raise NotImplementedError.*", answer, cell.source)
            wrong += 1
    assert wrong >= 5
    monkeypatch.setenv("MINIMAGEN_LEARNER_DIR", str(tmp_path / "learner"))
    nbclient.NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert outputs.count("YOUR FUNCTION FAILED") == wrong
    assert not (tmp_path / "learner").exists() or not any((tmp_path / "learner").iterdir())
