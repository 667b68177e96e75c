"""Shared test fixtures. The offline / quick settings live in the repository's root conftest.py, which
every pytest invocation loads (`pytest`, `pytest tests/`, `pytest notebooks/`)."""
import pytest
import torch


@pytest.fixture(scope="session")
def encoder():
    """The offline tiny T5, loaded once for every test that asks for it."""
    from minimagen.text import TextEncoder
    return TextEncoder("tiny")


@pytest.fixture(scope="module")
def one_thread():
    """Many small tensor ops: on a CPU shared with other jobs, torch's 2-thread barriers make them 3-10x slower
    than one thread (measured: tests/test_unet.py took 98 s instead of 7 s while another process held one of the
    2 cores). A module that is mostly such ops runs single-threaded with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
