"""Test-session settings: offline, headless, quick.

These are explicit settings, not fallbacks: the test suite (and the notebooks nbval runs) use the
tiny offline T5 in data/tiny-t5 and the notebooks' quick mode unless you set otherwise."""
import os

import pytest

os.environ.setdefault("MINIMAGEN_TEXT_ENCODER", "tiny")
os.environ.setdefault("MINIMAGEN_QUICK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "agg")


@pytest.fixture(scope="session")
def encoder():
    """The offline tiny T5, loaded once for every test that asks for it."""
    from minimagen.text import TextEncoder
    return TextEncoder("tiny")
