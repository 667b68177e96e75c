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
    assert all(re.match(r"\d\d_", p.name) for p in NOTEBOOKS)


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
    assert path.stat().st_size < 1_500_000, "keep figures at modest DPI"
