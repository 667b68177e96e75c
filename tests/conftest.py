"""Shared test fixtures. The offline / quick settings live in the repository's root conftest.py, which
every pytest invocation loads (`pytest`, `pytest tests/`, `pytest notebooks/`)."""
import pytest


@pytest.fixture(scope="session")
def encoder():
    """The offline tiny T5, loaded once for every test that asks for it."""
    from minimagen.text import TextEncoder
    return TextEncoder("tiny")
