"""What the benchmark scripts share and the package does not need: the machine a timing ran on, the timing
precisions a machine can measure fairly, the guidance x thresholding sweep, its rows' CSV and text table, and the trainer of the Fréchet distance's feature net.

Scripts in benchmarks/ import it as `from common import ...` (Python puts a script's folder first on
sys.path); tests as `from benchmarks.common import ...`. Retrain data/feature_net.pt with

    python benchmarks/common.py train-feature-net
"""
import argparse
import csv
import os
import sys
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from minimagen.data import ShapesDataset, load_spec
from minimagen.device import cpu_has_bf16
from minimagen.diffusion import as_thresholding
from minimagen.evaluate import _mean_se, rule_fields, score_images
from minimagen.metrics import FEATURE_NET_PATH, FeatureNet, fidelity, load_feature_net


@lru_cache(maxsize=None)
def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."): every timing should say it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def describe_machine(device: torch.device | None = None) -> str:
    """One line for a timing: the chip, the threads and the load it ran under."""
    if device is not None and device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), host CPU {cpu_name()}"
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return f"{cpu_name()}, {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads{load}"


def usable_precisions(requested, device: torch.device | None = None) -> tuple[list[str], str | None]:
    """The precisions ("fp32", "bf16") among `requested` that a benchmark can time fairly here, and the one
    line saying why bf16 was dropped (None if nothing was). A CPU without native bf16 (e.g. AMD Zen 3)
    emulates it about 20x slower than fp32: timing it would time the emulation, not the models."""
    device = torch.device("cpu") if device is None else torch.device(device)
    native = device.type == "cuda" and torch.cuda.is_bf16_supported() or device.type == "cpu" and cpu_has_bf16()
    if native or "bf16" not in requested:
        return list(requested), None
    return [p for p in requested if p != "bf16"], (f"skipping the bf16 rounds: this {device.type} has no native bf16 "
                                                   "(avx512_bf16 or AMX on a CPU), so only fp32 is measured")


def save_rows(rows, path, columns) -> Path:
    """Write sweep rows to a CSV with these columns (tensors and images left out, floats rounded)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items() if k in columns}
                          for r in rows])
    return path


# ---------------------------------------------------------------- the guidance x thresholding sweep
def guidance_sweep(model, captions, guidance_scales, methods=("none", "static", "dynamic"), seeds=(0,), steps=25,
                   sampler="ddim", frechet=False, progress=None) -> list[dict]:
    """One row per (method, w) [Imagen Sec. 2.2-2.3, Fig. 4c / A.31]: the base stage sampled once per seed for all
    captions (every (method, w) from the same noise for a given seed), then
      method, thresholding, percentile, cap   the rule (a diffusion.Thresholding or a method name) and its label
      alignment, alignment_se   mean caption alignment over the seeds x captions images, its standard error
      off_palette, off_palette_se   mean fraction of pixels no real image has (over-saturation, noise)
      shading, pinned (+ _se)   the detail measures: shading kept inside the objects (1 = as real), and
                                the fraction of object pixels pinned at +-1 (metrics.detail_scores)
      fidelity = 1 - off_palette   (higher is better)
      raw_x0_max, raw_x0_outside   largest |predicted x0| over all steps, mean fraction of its pixels outside
                                   [-1, 1] (the train/test mismatch); x0_max: largest |x0| after thresholding
      frechet, frechet_se       (frechet=True) Fréchet distance to real images per seed: mean, s.e. over seeds
      scores                    {'alignment', 'off_palette', 'shading', 'pinned'}: per image [seeds, captions]
      images, captions          [seeds, captions, 3, H, W] on the CPU (for grids), and the captions.
    progress: optional callable(done, total, row) to report each row (sweeps are slow on a CPU)."""
    captions, seeds = list(captions), list(seeds)
    total, rows = len(methods) * len(guidance_scales), []
    for method in methods:
        rule = as_thresholding(method)
        for w in guidance_scales:
            seen = {"raw_max": 0.0, "max": 0.0, "outside": []}

            def callback(i, log_snr, x_t, x0_raw, x0):  # how far guidance pushes x0 out of the data range
                seen["raw_max"] = max(seen["raw_max"], x0_raw.abs().max().item())
                seen["max"] = max(seen["max"], x0.abs().max().item())
                seen["outside"].append((x0_raw.abs() > 1).float().mean().item())

            images = torch.stack([model.sample(captions, guidance_scale=float(w), thresholding=rule, steps=steps,
                                               sampler=sampler, seed=seed, stages=1, callback=callback).cpu()
                                  for seed in seeds])  # [S, B, 3, H, W]
            row = dict(**rule_fields(rule), guidance_scale=float(w), **score_images(images, captions),
                       raw_x0_max=seen["raw_max"], x0_max=seen["max"],
                       raw_x0_outside=sum(seen["outside"]) / len(seen["outside"]), images=images, captions=captions)
            if frechet:  # a set statistic: one value per seed (needs many captions to mean much)
                row["frechet"], row["frechet_se"] = _mean_se(torch.tensor([fidelity(x)["frechet"] for x in images]))
            rows.append(row)
            if progress is not None:
                progress(len(rows), total, row)
    return rows


def find_row(rows, method, guidance_scale) -> dict:
    """The sweep row with this method (a label, a name, or a Thresholding) and guidance scale."""
    label = method if isinstance(method, str) and method in {r["method"] for r in rows} else as_thresholding(method).label
    for r in rows:
        if r["method"] == label and r["guidance_scale"] == float(guidance_scale):
            return r
    raise KeyError(f"no sweep row for method {label!r} at w = {guidance_scale}")


def sweep_table(rows, frechet=None) -> str:
    """A guidance sweep (guidance_sweep) as a text table: one line per (method, w);
    x0 out = raw_x0_outside."""
    frechet = any("frechet" in r for r in rows) if frechet is None else frechet
    lines = [f"{'method':<27}{'w':>5}{'alignment':>16}{'shading kept':>16}{'pinned':>16}{'x0 out':>8}"
             + (f"{'Fréchet':>15}" if frechet else "")]
    for r in rows:
        line = (f"{r['method']:<27}{r['guidance_scale']:>5g}{r['alignment']:>9.3f} ± {r['alignment_se']:.3f}"
                f"{r['shading']:>9.3f} ± {r['shading_se']:.3f}{r['pinned']:>9.3f} ± {r['pinned_se']:.3f}"
                f"{r['raw_x0_outside']:>8.3f}")
        if frechet:
            line += f"{r['frechet']:>8.0f} ± {r['frechet_se']:<4.0f}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def _targets(dataset: ShapesDataset) -> torch.Tensor:
    """Multi-hot [n, colours*shapes]: which colour-shape pairs each scene contains."""
    colors, shapes = list(load_spec()["colors"]), load_spec()["shapes"]
    y = torch.zeros(len(dataset), len(colors) * len(shapes))
    for i, o in ((i, o) for i, scene in enumerate(dataset.scenes) for o in scene["objects"]):
        y[i, colors.index(o["color"]) * len(shapes) + shapes.index(o["shape"])] = 1
    return y


def train_feature_net(out_path=FEATURE_NET_PATH, seed: int = 0, steps: int = 5000, n: int = 20000) -> FeatureNet:
    """Train minimagen.metrics.FeatureNet on `n` 32 px images of every caption (the metric must know held-out
    pairs too), report held-out-seed accuracy, and save a float16 state_dict (~100 KB) to out_path."""
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
    parser = argparse.ArgumentParser(prog="python benchmarks/common.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train-feature-net", help="retrain data/feature_net.pt (features for the Fréchet distance)")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train_feature_net(FEATURE_NET_PATH, seed=args.seed)
    print(f"wrote {FEATURE_NET_PATH}")


if __name__ == "__main__":
    sys.exit(main())
