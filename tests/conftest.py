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
def cascade(encoder):
    """A two-stage cascade (tiny32 base, tiny-sr64) with small random weights: fast, and not all-zero predictions
    (zero-initialised output convs would make every prediction 0). One per test module."""
    from minimagen.imagen import Imagen
    from minimagen.unet import Unet, unet_preset
    torch.manual_seed(0)
    base, sr = Unet(unet_preset("tiny32", encoder.dim)), Unet(unet_preset("tiny-sr64", encoder.dim))
    for unet in (base, sr):
        for p in unet.parameters():
            p.data.add_(torch.randn_like(p) * 0.02)
    return Imagen([base, sr], encoder)


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
