"""Min-SNR-5 loss weighting vs uniform on the base recipe: two twin runs, paired caption by caption.

Trains the base stage twice with `python -m minimagen train` (through train_curve.py, which scores the
EMA weights at each target step on the evaluation captions): once as the recipe leaves it (uniform
weighting of the v loss) and once with `--loss-weighting min_snr`. Same seed, so the same initial
weights, batches, timesteps and noise: the runs differ only in how the loss weighs each timestep. Then
samples both final models on the same 48 training + 48 held-out captions (w = 3, dynamic thresholding,
DDIM 50, seed 0) and reports the paired difference per caption with its standard error.

    MINIMAGEN_TEXT_ENCODER=tiny OMP_NUM_THREADS=1 python benchmarks/archive/min_snr.py --out runs/minsnr_twin --targets 700 1400

The two trainings run at the same time, one thread each (steps, not seconds, are compared). A finished
run is not trained again. Writes benchmarks/archive/results/min_snr_curve.csv (both curves) and the plot
benchmarks/archive/min_snr.png, and prints the paired table.
"""
import argparse
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the scripts kept there
from train_curve import fixed_captions  # noqa: E402

from common import cpu_name  # noqa: E402
from minimagen.imagen import load_cascade  # noqa: E402
from minimagen.metrics import caption_alignment  # noqa: E402

# base32, the stage-0 recipe's U-Net when these were measured (before quick32, 2026-12-04)
WEIGHTINGS = {"uniform": ["--preset", "base32"], "min_snr": ["--preset", "base32", "--loss-weighting", "min_snr"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/minsnr_twin")
    p.add_argument("--targets", type=int, nargs="+", default=[700, 1400], help="steps at which train_curve scores")
    p.add_argument("--n-captions", type=int, default=48)
    args = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {w: Path(f"{args.out}_{w}") for w in WEIGHTINGS}
    jobs = [subprocess.Popen([sys.executable, str(HERE.parent / "train_curve.py"), "--stage", "0", "--out", str(runs[w]),
                              "--n-captions", str(args.n_captions), "--targets", *map(str, args.targets),
                              "--train-args", *flags], env=env) for w, flags in WEIGHTINGS.items()]
    if any(job.wait() for job in jobs):
        raise SystemExit("a training run failed: see its output above.")
    rows = []
    for w, run in runs.items():
        with open(run / "curve.csv") as f:
            rows += [{"loss_weighting": w, **r} for r in csv.DictReader(f)]
    with open(HERE / "results" / "min_snr_curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows)
    captions = fixed_captions(args.n_captions)
    scores = {}
    for w, run in runs.items():
        model = load_cascade([run / "last.pt"])  # the EMA weights at the last target
        scores[w] = {split: caption_alignment(model.sample(caps, guidance_scale=3.0, steps=50, seed=0), caps)
                     for split, caps in captions.items()}
    print(f"{cpu_name()}; final step {args.targets[-1]}; paired by caption (min-SNR-5 minus uniform):")
    for split in [*captions, "all"]:
        pick = list(captions) if split == "all" else [split]
        a, b = (torch.cat([scores[w][s] for s in pick]) for w in WEIGHTINGS)
        d = b - a
        print(f"| {split} | {a.mean():.3f} | {b.mean():.3f} | {d.mean():+.3f} ± {d.std().item() / math.sqrt(len(d)):.3f} |")


def plot(rows: list[dict]):
    import matplotlib.pyplot as plt
    fig, (ax_a, ax_o) = plt.subplots(1, 2, figsize=(9, 3.4))
    for w, colour in zip(WEIGHTINGS, ("tab:blue", "tab:orange")):
        mine = [r for r in rows if r["loss_weighting"] == w]
        steps = [int(r["step"]) for r in mine]
        for split, style in (("train", "o-"), ("held_out", "s--")):
            ax_a.plot(steps, [float(r[f"{split}_alignment"]) for r in mine], style, color=colour, label=f"{w}, {split} captions")
        ax_o.plot(steps, [100 * float(r["train_off_palette"]) for r in mine], "o-", color=colour, label=w)
    ax_a.set(xlabel="training step", ylabel="caption alignment (w = 3, DDIM 50)", ylim=(0, 1), title="composition")
    ax_o.set(xlabel="training step", ylabel="off-palette pixels (%), training captions", ylim=(0, None), title="colour fidelity")
    ax_a.legend(fontsize=7, loc="lower right")
    ax_o.legend(fontsize=7)
    fig.suptitle("base recipe, twin runs: uniform vs Min-SNR-5 loss weighting (one seed each)", fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "min_snr.png", dpi=100)


if __name__ == "__main__":
    main()
