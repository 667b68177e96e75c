"""What the notebooks share: quick vs full mode, one line saying what runs where, the shipped toy
cascade, and widgets that degrade gracefully when nobody is watching (CI, nbval).

    from minimagen.notebook import setup, pick, explore
    run = setup()                    # prints device, mode and text encoder
    steps = pick(quick=200, full=5000)
"""
import io
import os

import torch

from .data import DATA_DIR
from .device import pick_device

CHECKPOINTS = DATA_DIR / "checkpoints"
# The repository the notebooks' Colab cell clones. Its one definition: every notebook's install cell must
# spell the same address (tests/test_notebooks_format.py checks), and so must the Colab badges.
REPO_URL = "https://github.com/minimagen/minimagen"
INSTALL_CELL = f'''import sys, subprocess
if "google.colab" in sys.modules:  # on Colab: clone minimagen (code + data/) and install it; Colab already has torch
    REPO = "{REPO_URL}"
    clone = subprocess.run(["git", "clone", "-q", "--depth", "1", REPO, "/content/minimagen"], capture_output=True, text=True)
    if clone.returncode != 0 and not __import__("os").path.isdir("/content/minimagen/minimagen"):
        raise SystemExit(f"Could not clone {{REPO}}: {{clone.stderr.strip()}}. Check Colab's internet access and rerun this cell.")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/minimagen"], check=True)
    sys.path.insert(0, "/content/minimagen")'''


def quick_mode() -> bool:
    """MINIMAGEN_QUICK=1 -> quick (CPU-sized runs, what CI uses), 0 -> full; unset: full on CUDA, quick on CPU."""
    value = os.environ.get("MINIMAGEN_QUICK")
    if value is None:
        return not torch.cuda.is_available()
    return value.strip().lower() not in ("0", "false", "no", "")


def pick(quick, full):
    """The quick-mode value or the full-mode value."""
    return quick if quick_mode() else full


def setup(seed: int = 0) -> torch.device:
    """Seed everything, choose the device, and say in one line what this notebook runs with."""
    import matplotlib
    matplotlib.rcParams["figure.dpi"] = 100  # legible labels in the stored outputs
    store_figures_compactly()
    torch.manual_seed(seed)
    device = pick_device()
    encoder = os.environ.get("MINIMAGEN_TEXT_ENCODER", "t5-small")
    mode = "quick (MINIMAGEN_QUICK=1: small steps, CPU-sized)" if quick_mode() else "full (MINIMAGEN_QUICK=0)"
    print(f"device: {device.type} | mode: {mode} | text encoder for new models: {encoder} (MINIMAGEN_TEXT_ENCODER)")
    return device


def compact_png(fig) -> bytes | None:
    """A figure as a 256-colour PNG: a third of the bytes of matplotlib's own for plots and toy-sized images, which
    use far fewer colours, so notebooks stored with their outputs stay small. The palette is chosen for coverage, not
    by median cut: median cut merges a grid's rarer hues (an orange object became red), coverage keeps every colour
    within a few levels. None for an empty figure."""
    from PIL import Image
    if not fig.axes and not fig.lines:  # as matplotlib's inline backend: an empty figure shows nothing
        return None
    raw, out = io.BytesIO(), io.BytesIO()
    fig.canvas.print_figure(raw, format="png", bbox_inches="tight", facecolor="white", dpi=fig.dpi)
    Image.open(raw).convert("RGB").quantize(256, method=Image.Quantize.MAXCOVERAGE).save(out, "PNG", optimize=True)
    return out.getvalue()


def store_figures_compactly():
    """In Jupyter, show (and so store) every matplotlib figure through compact_png; elsewhere nothing changes."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    plt.close(plt.figure())  # the inline backend loads with the first figure and registers its own PNG formatter; ours replaces it
    shell.display_formatter.formatters["image/png"].for_type(Figure, compact_png)


def load_toy_cascade(stages=("base32", "sr64"), device=None):
    """The toy cascade shipped in data/checkpoints (trained here with the tiny T5; see its README)."""
    from .imagen import load_cascade
    model = load_cascade([CHECKPOINTS / f"{name}.pt" for name in stages], device=device)
    print(f"loaded {', '.join(stages)} from data/checkpoints; sizes {model.image_sizes}")
    return model


def explore(fn, **controls):
    """ipywidgets.interactive(fn, **controls) with continuous_update off; without ipywidgets,
    call fn once with each control's first value, so the cell still shows something."""
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        defaults = {k: (v[0] if isinstance(v, (list, tuple)) else v) for k, v in controls.items()}
        print("ipywidgets is not installed: showing the default setting (pip install ipywidgets for sliders)")
        return fn(**defaults)
    for control in controls.values():
        if hasattr(control, "continuous_update"):
            control.continuous_update = False
    ui = widgets.interactive(fn, **controls)
    display(ui)
    return ui
