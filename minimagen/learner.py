"""The learner's library: the notebooks build it, as fastai's miniai notebooks build theirs.

    def my_q_sample(x0, log_snr, noise):
        raise NotImplementedError  # your code here
    q_sample = attempt("q_sample", my_q_sample)      # yours if it passes, else the reference (with a banner)
    ...
    loss = yours("loss")                             # a later notebook: your notebook-03 answer, or the reference

`attempt` runs minimagen.exercises.check and never raises, so a stub or a wrong answer never stops Run All. A passing
answer is saved, as source, to learner/<name>.py next to the notebook (MINIMAGEN_LEARNER_DIR moves it, e.g. to a Google
Drive folder on Colab, where each notebook runs on its own machine); `yours` loads it and checks it again.
"""
import inspect
import os
import types
from pathlib import Path

from .exercises import EXERCISES, ExerciseError, check


def learner_dir() -> Path:
    return Path(os.environ.get("MINIMAGEN_LEARNER_DIR", "learner"))


def _source(fn, seen=None) -> str:
    """fn's source, after the imports and helper functions of the notebook that it uses: a file that runs alone."""
    seen = set() if seen is None else seen
    head, body = [], []
    code = [fn.__code__] + [c for c in fn.__code__.co_consts if isinstance(c, types.CodeType)]
    for n in dict.fromkeys(n for c in code for n in c.co_names):
        v = fn.__globals__.get(n)
        if n in seen or v is None:
            continue
        seen.add(n)
        if isinstance(v, types.ModuleType):
            head.append(f"import {v.__name__} as {n}")
        elif getattr(v, "_exercise", None):  # a function that yours() gave this notebook
            head.append(f"{n} = __import__('minimagen.learner', fromlist=['yours']).yours({v._exercise!r}, quiet=True)")
        elif inspect.isfunction(v) and v.__module__ == "__main__":
            body.append(_source(v, seen))
        elif callable(v) and getattr(v, "__module__", "__main__") != "__main__":
            head.append(f"from {v.__module__} import {v.__qualname__} as {n}")
        elif isinstance(v, (int, float, str, bool, tuple)):
            head.append(f"{n} = {v!r}")
    return "\n".join(head + body + [inspect.getsource(fn)])


def _load(name: str, path: Path):
    module = types.ModuleType(f"learner_{name}")
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    fn = module.__dict__["ANSWER"]
    fn._exercise = name
    return fn


def _save(name: str, fn) -> str:
    """Save fn for later notebooks if the saved file passes alone; say what happened."""
    path = learner_dir() / f"{name}.py"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# your answer to exercise {name!r}, saved by minimagen.exercises.attempt\n"
                        f"{_source(fn)}\nANSWER = {fn.__name__}\n")
        check(name, _load(name, path))
        return f"saved to {path} for the later notebooks"
    except Exception as e:
        path.unlink(missing_ok=True)
        return f"not saved for later notebooks ({type(e).__name__}: {str(e)[:80]}): make it self-contained"


def _banner(text: str) -> None:
    print(f"{'=' * 80}\n{text}\n{'=' * 80}")


def attempt(name: str, fn):
    """Check the learner's fn; return what the notebook runs from here on: fn if it passes, else the reference.
    Never raises: a stub says so in one line, a wrong or crashing answer gets a banner with the diagnosis."""
    try:
        check(name, fn)
        print(f"exercise {name}: your answer passes and runs from here on; {_save(name, fn)}")
        fn._exercise = name
        return fn
    except NotImplementedError:
        print(f"exercise {name}: not written yet, so the reference runs in its place; write yours and rerun this cell")
    except Exception as e:  # a wrong answer (ExerciseError) or a crash inside it (a shape error, a typo)
        why = str(e) if isinstance(e, ExerciseError) else f"your function raised {type(e).__name__}: {e}"
        _banner(f"exercise {name}: YOUR FUNCTION FAILED, so the reference runs in its place from here on.\n  {why}")
    return EXERCISES[name].reference


def yours(name: str, quiet: bool = False):
    """Your passing answer to exercise `name` from an earlier notebook (learner/<name>.py), checked again here;
    otherwise the package's reference."""
    path, ex = learner_dir() / f"{name}.py", EXERCISES[name]
    if not path.exists():
        quiet or print(f"{name}: no answer of yours saved in {path.parent}/ (notebook {ex.notebook}), so the reference runs")
        return ex.reference
    try:
        fn = _load(name, path)
        check(name, fn)
    except Exception as e:
        _banner(f"{name}: YOUR SAVED ANSWER ({path}) FAILED here, so the reference runs.\n  {type(e).__name__}: {e}")
        return ex.reference
    quiet or print(f"{name}: your answer from notebook {ex.notebook} runs here")
    return fn
