"""Caption alignment over training: how long until a stage is good?

Trains one stage with the project's own command (`python -m minimagen train ...`) in chunks
(training resumes exactly, so the chunks give the same model as one straight run) and, after each
chunk, samples fixed training and held-out captions with the EMA weights and scores them with the
shapes detector (minimagen.metrics). Writes <out>/curve.csv and <out>/curve.png.

    python benchmarks/train_curve.py --stage 0 --out data/checkpoints/runs/base32 --targets 500 1000 2000 3000 4000

For an SR stage (--stage 1) the alignment is of the SR output upsampled from real low-res images.
"""
import argparse
import csv
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minimagen.data import all_captions, render, from_uint8
from minimagen.imagen import load_cascade
from minimagen.metrics import alignment_accuracy, off_palette_fraction


def fixed_captions(n: int, draw: int = 0) -> dict[str, list[str]]:
    """n training and n held-out captions. Draw 0 is the evaluation set every benchmark scores; other
    draws exclude draw 0's captions, so a setting chosen on them is not chosen on the evaluation set."""
    exclude = set() if draw == 0 else {c for caps in fixed_captions(n).values() for c in caps}
    rng = random.Random(draw)
    return {split: rng.sample([c for c in all_captions(split) if c not in exclude], n) for split in ("train", "held_out")}


def evaluate(checkpoint, captions, guidance, n_seeds=1, lowres_size=None):
    model = load_cascade([checkpoint])
    kwargs = {}
    if lowres_size:  # SR stage: upsample real low-res renders of the same captions
        kwargs["lowres_images"] = torch.stack([from_uint8(render(c, lowres_size, seed=i)) for i, c in enumerate(captions)])
    scores, off = [], []
    for seed in range(n_seeds):
        images = model.sample(captions, guidance_scale=guidance, thresholding="dynamic", steps=50, seed=seed, **kwargs)
        scores.append(alignment_accuracy(images, captions))
        off.append(off_palette_fraction(images).mean().item())
    return sum(scores) / len(scores), sum(off) / len(off)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", type=int, default=0)
    p.add_argument("--out", default="runs/curve")
    p.add_argument("--targets", type=int, nargs="+", default=[500, 1000, 2000, 3000])
    p.add_argument("--n-captions", type=int, default=48)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="passed on to minimagen train")
    args = p.parse_args()
    out = Path(args.out)
    captions = fixed_captions(args.n_captions)
    lowres_size = {0: None, 1: 32, 2: 64}[args.stage]
    rows, train_seconds = [], 0.0
    if (out / "curve.csv").exists():  # continue an interrupted curve (training itself resumes exactly)
        with open(out / "curve.csv") as f:
            rows = [{k: float(v) if "." in v else int(v) for k, v in r.items()} for r in csv.DictReader(f)]
        train_seconds = rows[-1]["train_seconds"] if rows else 0.0
    for target in args.targets:
        if rows and target <= rows[-1]["step"]:
            continue
        cmd = [sys.executable, "-m", "minimagen", "train", "--stage", str(args.stage), "--steps", str(target),
               "--out", str(out), "--sample-every", "1000", *args.train_args]
        start = time.time()
        subprocess.run(cmd, check=True)
        train_seconds += time.time() - start
        row = {"step": target, "train_seconds": round(train_seconds)}
        for split, caps in captions.items():
            row[f"{split}_alignment"], row[f"{split}_off_palette"] = evaluate(out / "last.pt", caps, args.guidance,
                                                                               lowres_size=lowres_size)
        rows.append(row)
        print(row, flush=True)
        with open(out / "curve.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(rows)
    fig, ax = plt.subplots(figsize=(5, 3))
    for split in captions:
        ax.plot([r["train_seconds"] / 60 for r in rows], [r[f"{split}_alignment"] for r in rows], "o-", label=split)
    ax.set(xlabel="training time (min, this machine)", ylabel="caption alignment",
           title=f"stage {args.stage}: w={args.guidance}, dynamic thresholding", ylim=(0, 1.02))
    ax.axhline(0.9, color="grey", lw=0.5, ls="--")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=100)
    print(f"wrote {out / 'curve.csv'} and {out / 'curve.png'}; host: {os.uname().nodename}, {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
