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


@pytest.fixture(scope="session")
def train_config():
    """train_config(tmp_path, **fields): the TrainConfig of a small offline run in tmp_path / "run" (tiny32, tiny T5,
    6 steps of batch 4 from 32 shapes images, a checkpoint every 3 steps, no previews, no bf16); fields given override.
    A function, not a config: one test may build several, in several folders (a session fixture, so module fixtures
    can use it)."""
    from minimagen.train import TrainConfig

    def make(tmp_path, **fields):
        base = dict(preset="tiny32", steps=6, batch_size=4, dataset_size=32, text_encoder="tiny", out_dir=str(tmp_path / "run"),
                    sample_every=0, checkpoint_every=3, log_every=1, warmup_steps=2, bf16=False)
        return TrainConfig(**{**base, **fields})
    return make


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
