"""Every notebook is stored with outputs, opens in Colab, installs itself only there, and teaches by
calling the package (no model classes pasted into cells)."""
import json
import re
from pathlib import Path

import pytest

from minimagen.notebook import INSTALL_CELL, REPO_URL

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_numbered_notebooks():
    assert NOTEBOOKS, "notebooks/ holds the course"
    assert all(re.match(r"\d\d[a-z]?_", p.name) for p in NOTEBOOKS)  # 07b: an appendix to 07


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_format(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    code = [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    first = "".join(cells[0]["source"])
    assert first.startswith(f"# {path.name[:2]} · "), "the title's number is the file's (renumbered notebooks keep their titles in step)"
    assert "colab-badge.svg" in first and f"blob/main/notebooks/{path.name}" in first, "Colab badge in the first cell"
    assert nb["metadata"].get("accelerator") == "GPU", "ask Colab for a GPU runtime"
    assert "".join(code[0]["source"]) == INSTALL_CELL, "the first code cell is minimagen.notebook.INSTALL_CELL (Colab only)"
    assert f"colab.research.google.com/github/{REPO_URL.split('github.com/')[1]}/blob/main/" in first, "badge: REPO_URL"
    assert all(c.get("execution_count") for c in code), "stored with outputs: every code cell was run"
    assert sum(bool(c.get("outputs")) for c in code) >= len(code) // 2, "stored with outputs"
    for c in code:
        src = "".join(c["source"])
        assert not re.search(r"^\s*class \w+", src, flags=re.M), f"a class is defined in a cell: put it in the package\n{src}"
    assert path.stat().st_size < 1_500_000, ("keep figures at modest DPI and call minimagen.notebook.setup() first (it "
                                             "stores them as palette PNGs); the explorers' saved widget state repeats the "
                                             "figure above each one: if still too big, empty metadata['widgets']")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_run_all_keeps_the_learners_code(path):
    """An exercise's stub (a function whose body raises NotImplementedError) is defined in one cell only: no other
    code cell defines or assigns that name, so "Run All" never replaces the learner's answer with a solution.
    Solutions live in markdown (<details>), never in an executed cell."""
    code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    for i, src in enumerate(code):
        assert not src.lstrip().lower().startswith("# solution"), f"a solution is executed over the learner's code:\n{src}"
        if "raise NotImplementedError" not in src:
            continue
        for name in re.findall(r"^def (\w+)\(", src, flags=re.M):
            later = [j for j, other in enumerate(code) if j != i and re.search(rf"^(def {name}\(|{name}\s*=[^=])", other, re.M)]
            assert not later, f"{name}, the learner's function, is redefined in code cell(s) {later}: put the solution in <details>"


def test_figures_are_stored_as_small_palette_pngs_that_look_the_same():
    """notebook.compact_png (what setup() makes Jupyter store): a 256-colour PNG, much smaller than matplotlib's own
    for a plot, whose pixels match the full-colour render to within a few levels; nothing for an empty figure."""
    import io

    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from minimagen.data import ShapesDataset, from_uint8
    from minimagen.notebook import compact_png
    from minimagen.plot import image_grid
    fig, (a, b) = plt.subplots(1, 2, figsize=(6, 2.5), dpi=100)
    a.plot(np.sin(np.linspace(0, 6, 200)), label="sin")
    a.legend()
    toys = ShapesDataset(32, n=24, seed=3, world="contrast")  # a grid of toy images, as the notebooks show: many hues
    b.imshow(image_grid(from_uint8(toys.images), 8), interpolation="nearest")
    full = io.BytesIO()
    fig.canvas.print_figure(full, format="png", bbox_inches="tight", facecolor="white", dpi=fig.dpi)
    small = compact_png(fig)
    assert Image.open(io.BytesIO(small)).mode == "P" and len(small) < 0.6 * len(full.getvalue())
    x = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"), dtype=float)
    y = np.asarray(Image.open(full).convert("RGB"), dtype=float)
    assert x.shape == y.shape and np.abs(x - y).mean() < 5 and np.abs(x - y).max() < 32  # median cut: off by 64
    chroma = lambda rgb: rgb.max(-1) - rgb.min(-1)
    grey = chroma(y) <= 6
    assert (chroma(x) - chroma(y))[grey].max() <= 4  # greys stay grey (a coverage palette alone tinted them by 16)
    plt.close(fig)
    empty = plt.figure()
    assert compact_png(empty) is None
    plt.close(empty)


MACHINE_WORDS = r"EPYC|Zen ?[345]\b|Xeon|\bAMX\b|\bAVX|load average|TFLOP|getloadavg|/proc/cpuinfo|describe_machine"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_read_as_lessons(path):
    """At most 2,500 words in the markdown cells (solutions included), and no machine models, FLOP budgets or load
    averages outside the provenance footnote, the last cell: those belong in benchmarks/README.md."""
    cells = json.loads(path.read_text())["cells"]
    words = sum(len("".join(c["source"]).split()) for c in cells if c["cell_type"] == "markdown")
    assert words <= 2500, f"{words} words of markdown: cut to 2,500"
    for i, c in enumerate(cells[:-1]):
        hit = re.search(MACHINE_WORDS, "".join(c["source"]))
        assert not hit, f"cell {i} says {hit.group(0)!r}: move it to the footnote (the last cell) or benchmarks/README.md"
