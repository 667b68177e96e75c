"""Settings for every pytest invocation from this repository, `pytest notebooks/` included: offline,
headless, quick. Explicit settings, not fallbacks: the test suite and the notebooks nbval runs use the
tiny offline T5 in data/tiny-t5 and the notebooks' quick mode unless you set otherwise."""
import os

os.environ.setdefault("MINIMAGEN_TEXT_ENCODER", "tiny")
os.environ.setdefault("MINIMAGEN_QUICK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "agg")
