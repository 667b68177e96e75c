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


GREYS = 64  # palette entries kept for exact greys: the figures' white, text and axes, and the toys' grey grounds


def compact_png(fig) -> bytes | None:
    """A figure as a 256-colour PNG: a third of the bytes of matplotlib's own, so notebooks stored with their outputs
    stay small. GREYS of the colours are exact greys and the rest are chosen for coverage of the pixels with a hue
    (median cut over all pixels merged a grid's rarer hues, so an orange object was stored red, and without reserved
    greys the grey grounds came out tinted). None for an empty figure."""
    import numpy as np
    from PIL import Image
    if not fig.axes and not fig.lines:  # as matplotlib's inline backend: an empty figure shows nothing
        return None
    raw, out = io.BytesIO(), io.BytesIO()
    fig.canvas.print_figure(raw, format="png", bbox_inches="tight", facecolor="white", dpi=fig.dpi)
    rgb = Image.open(raw).convert("RGB")
    a = np.asarray(rgb, np.int16)
    hued = a[(a.max(-1) - a.min(-1)) > 6].astype(np.uint8)  # a pixel within 6 levels of grey takes a palette grey
    colours = Image.fromarray(hued[None]).quantize(256 - GREYS, method=Image.Quantize.MAXCOVERAGE).getpalette()[
        :3 * (256 - GREYS)] if len(hued) else []
    palette = Image.new("P", (1, 1))
    greys = [round(v) for v in np.linspace(0, 255, GREYS) for _ in range(3)]
    palette.putpalette(greys + colours + [0] * (768 - len(greys) - len(colours)))
    rgb.quantize(palette=palette, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
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
