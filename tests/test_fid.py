"""The benchmarks' Fréchet distance (benchmarks/fid.py): FID's formula on the shipped feature net's features."""
import pytest
import torch

from benchmarks.fid import FeatureNet, frechet_distance, frechet_to_real, load_feature_net
from minimagen.data import DATA_DIR, ShapesDataset, from_uint8

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


def real(size, n, seed):
    return from_uint8(ShapesDataset(size, "all", n=n, seed=seed).images)


def test_frechet_distance_orders_real_saturated_noise():
    a = real(32, 300, seed=100)
    b = real(32, 300, seed=200)
    saturated = (b * 2).clamp(-1, 1)  # what static clipping at high guidance does to colours
    noise = torch.rand_like(b) * 2 - 1
    same, vs_real, vs_sat, vs_noise = (frechet_distance(a, x) for x in (a, b, saturated, noise))
    assert abs(same) < 1e-3
    assert vs_real * 5 < vs_sat < vs_noise


def test_shipped_feature_net_and_distance_to_real():
    path = DATA_DIR / "feature_net.pt"
    assert path.stat().st_size < 200_000
    FeatureNet().load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True).items()})
    net = load_feature_net()
    assert net.features(torch.zeros(2, 3, 64, 64)).shape == (2, 64)  # other sizes are resized to 32 px
    b = real(32, 200, seed=400)
    assert frechet_to_real(b) < frechet_to_real((b * 2).clamp(-1, 1))
