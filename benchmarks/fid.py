"""The Fréchet distance of the benchmarks (Imagen's FID, in miniature): FID's formula on the features of `FeatureNet`,
a tiny CNN trained on the shapes data instead of Inception (which cannot judge 32 px toys). A set statistic: it needs
hundreds of images to mean much, so the lessons use the per-image measures of minimagen.metrics instead.

Scripts in benchmarks/ import it as `from fid import ...`, tests as `from benchmarks.fid import ...`. Retrain
data/feature_net.pt (about a minute on a CPU) with

    python benchmarks/fid.py
"""
import argparse
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from minimagen.data import DATA_DIR, ShapesDataset, load_spec
from minimagen.errors import MinimagenError
from minimagen.evaluate import _mean_se

FEATURE_NET_PATH = DATA_DIR / "feature_net.pt"


class FeatureNet(nn.Module):
    """Tiny CNN (four convs -> 64-d feature) trained to name the colour-shape pairs in a 32 px image.

    Its 64-d features respond to exactly what matters here (colours, shapes, clean edges). Three stride-2 convs then
    one more 3x3 give every output a view of the whole 32 px image, and global max-pooling answers "is there a red
    triangle anywhere". Inputs [B, 3, H, W] in [-1, 1] of other sizes are area-resized to 32 px first.
    """

    def __init__(self):
        super().__init__()
        spec = load_spec()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 48, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(48, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, len(spec["colors"]) * len(spec["shapes"]))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = (torch.as_tensor(images).detach().float().cpu().clamp(-1, 1) + 1) * 127.5 / 127.5 - 1  # via 0..255, as the
        # shipped weights were trained (the round trip rounds; skipping it would change them in the last bits)
        if x.shape[-1] != 32 or x.shape[-2] != 32:
            x = F.interpolate(x, size=(32, 32), mode="area")
        return self.body(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@lru_cache(maxsize=1)
def load_feature_net(path=FEATURE_NET_PATH) -> FeatureNet:
    if not Path(path).is_file():
        raise MinimagenError(f"Feature-net weights {path} are missing; run `python benchmarks/fid.py`.")
    net = FeatureNet()
    net.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True).items()})
    return net.eval()


def _stats(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    net = load_feature_net()
    with torch.no_grad():
        f = torch.cat([net.features(chunk) for chunk in torch.as_tensor(images).split(256)]).double().numpy()
    if len(f) < 2:
        raise MinimagenError("The Fréchet distance needs at least 2 images per set (hundreds for a stable "
                             "value); pass more images.")
    return f.mean(0), np.cov(f, rowvar=False)


def _frechet(mu1, s1, mu2, s2) -> float:
    """||mu1-mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2); the trace of the root from the eigenvalues of the
    symmetric PSD matrix S1^1/2 S2 S1^1/2, which has the same eigenvalues as S1 S2 (numpy only)."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(w.clip(0))) @ v.T
    cross = np.sqrt(np.linalg.eigvalsh(r1 @ s2 @ r1).clip(0)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def frechet_distance(images_a: torch.Tensor, images_b: torch.Tensor) -> float:
    """FID's formula on FeatureNet features of two image sets [N,3,H,W] (use hundreds each)."""
    return _frechet(*_stats(images_a), *_stats(images_b))


@lru_cache(maxsize=8)
def reference_stats(size: int, n: int = 1000, seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """Feature mean/covariance of n real images (all captions) at `size` px; cached in memory."""
    data = ShapesDataset(size, "all", n, seed)
    return _stats(data.images.movedim(-1, 1).float() / 127.5 - 1)


def frechet_to_real(images: torch.Tensor) -> float:
    """The Fréchet distance of images [N, 3, H, W] to real images at the same resolution (lower is better)."""
    return _frechet(*_stats(images), *reference_stats(int(images.shape[-1])))


def frechet_per_seed(images: torch.Tensor) -> tuple[float, float]:
    """images [seeds, B, 3, H, W] -> the Fréchet distance to real images of each seed's set: mean, standard error."""
    return _mean_se(torch.tensor([frechet_to_real(x) for x in images]))


def _targets(dataset: ShapesDataset) -> torch.Tensor:
    """Multi-hot [n, colours*shapes]: which colour-shape pairs each scene contains."""
    colors, shapes = list(load_spec()["colors"]), load_spec()["shapes"]
    y = torch.zeros(len(dataset), len(colors) * len(shapes))
    for i, o in ((i, o) for i, scene in enumerate(dataset.scenes) for o in scene["objects"]):
        y[i, colors.index(o["color"]) * len(shapes) + shapes.index(o["shape"])] = 1
    return y


def train_feature_net(out_path=FEATURE_NET_PATH, seed: int = 0, steps: int = 5000, n: int = 20000) -> FeatureNet:
    """Train FeatureNet on `n` 32 px images of every caption (the metric must know held-out pairs too), report
    held-out-seed accuracy, and save a float16 state_dict (~100 KB) to out_path."""
    torch.manual_seed(seed)
    data, test = ShapesDataset(32, "all", n, seed), ShapesDataset(32, "all", 1000, seed + 1)
    x, y, net = data.images.movedim(-1, 1), _targets(data), FeatureNet()  # x: uint8 [n,3,32,32]
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, n, (64,), generator=gen)
        loss = F.binary_cross_entropy_with_logits(net(x[idx].float() / 127.5 - 1), y[idx])
        opt.zero_grad(), loss.backward(), opt.step(), sched.step()
        if step % 1000 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
    with torch.no_grad():
        pred = net.eval()(test.images.movedim(-1, 1).float() / 127.5 - 1) > 0
    print(f"exact-match accuracy on 1000 unseen images: {(pred == _targets(test).bool()).all(1).float().mean():.3f}")
    torch.save({k: v.half() for k, v in net.state_dict().items()}, out_path)
    load_feature_net.cache_clear()
    return net


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/fid.py", description="retrain data/feature_net.pt "
                                     "(the features of the benchmarks' Fréchet distance)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train_feature_net(FEATURE_NET_PATH, seed=args.seed)
    print(f"wrote {FEATURE_NET_PATH}")


if __name__ == "__main__":
    sys.exit(main())
