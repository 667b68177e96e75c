"""Caption alignment against wall-clock training time: how good is the base after 1, 2, 3, 5, 10 minutes?

Trains the base stage from scratch in this process with the same `Trainer.train_step` as
`python -m minimagen train` (its flags are accepted after --train-args), stops the clock at each mark,
samples fixed captions with the EMA weights at the course's default settings (w = 3, dynamic
thresholding, DDIM 50, seed 0) and scores them with the shapes detector. The clock counts training
steps only: building the trainer (rendering the dataset, loading the text encoder) is reported
separately as setup, and evaluation is not counted.

    python benchmarks/archive/wall_clock_curve.py --out runs/recipe_eval --n-captions 48 --minutes 1 2 3 5 10  # the recipe
    python benchmarks/archive/wall_clock_curve.py --out runs/lr3e-4 --train-args --lr 3e-4                  # one lever changed
    python benchmarks/archive/wall_clock_curve.py --levers --out runs/levers --draw 1 --n-captions 32 --minutes 3 5  # the table

The levers are chosen on caption draw 1 and the recipe's curve is scored on draw 0 (the evaluation
captions of every benchmark), so the choice is not made on the captions that report it.

Writes <out>/wall_clock.csv (one row per mark, with the CPU model, threads and load average) and, with
--levers, benchmarks/archive/results/<table>.csv and benchmarks/archive/<table>.png (--table, default recipe_levers). Run it on an idle machine:
another process on a 2-core CPU halves the steps per minute.
"""
import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the scripts kept there
from train_curve import fixed_captions  # noqa: E402  (the evaluation captions every benchmark uses)

from common import cpu_name  # noqa: E402

# One lever changed at a time from the first recipe, which had EMA decay 0.995; the EMA lever then
# changed the recipe (minimagen.train.STAGE_RECIPES[0]) to 0.98, and "recipe" is that one. All with the base32
# U-Net, the recipe's until 2026-12-04 (compute_to_90.py then chose quick32); a later --preset overrides it.
FIRST = ["--preset", "base32", "--ema-decay", "0.995"]
LEVERS = {
    "recipe": ["--preset", "base32"],
    "first recipe (EMA 0.995)": FIRST,
    "lr 3e-4": FIRST + ["--lr", "3e-4"],
    "lr 2e-3": FIRST + ["--lr", "2e-3"],
    "cosine lr decay": FIRST + ["--lr-schedule", "cosine"],  # to 0 at the recipe's steps (about 5 minutes here)
    "EMA 0.999": ["--preset", "base32", "--ema-decay", "0.999"],
    "batch 16": FIRST + ["--batch-size", "16"],
    "batch 64": FIRST + ["--batch-size", "64"],
    "eps objective": FIRST + ["--objective", "eps"],
    "min-SNR-5 weighting": FIRST + ["--loss-weighting", "min_snr"],
    "warm-up 0": FIRST + ["--warmup-steps", "0"],
    "warm-up 400": FIRST + ["--warmup-steps", "400"],
    "dataset 10000": FIRST + ["--dataset-size", "10000"],
    "captions uniform (95% two-object)": FIRST + ["@uniform_captions"],  # the data's default: half one-object
    "small32 preset": FIRST + ["--preset", "small32"],
    "tiny32 preset": FIRST + ["--preset", "tiny32"],
    # levers of speed only (the same arithmetic, or nearly): one minute shows their steps per second
    "fp32 (no bf16)": FIRST + ["--no-bf16"],
    "channels_last": FIRST + ["@channels_last"],  # '@' marks a benchmark-only switch, not a train flag
    "torch.compile": FIRST + ["@compile"],
}
BASELINE = "first recipe (EMA 0.995)"  # what every other lever changed one setting of
SPEED_ONLY = {"fp32 (no bf16)": [1], "channels_last": [1], "torch.compile": [1, 3]}  # their marks (compiling takes a while)


def run(out: Path, minutes: list[float], n_captions: int, train_args: list[str], threads: int, draw: int):
    from minimagen.cli import add_train_args, config_from_args
    from minimagen.data import ShapesDataset
    from minimagen.metrics import alignment_accuracy
    from minimagen.train import Trainer

    torch.set_num_threads(threads)
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    switches = {a for a in train_args if a.startswith("@")}
    args = parser.parse_args(["--stage", "0", "--out", str(out), "--sample-every", "0",
                              *[a for a in train_args if a not in switches]])
    config = config_from_args(args)
    if (out / "last.pt").exists():
        raise SystemExit(f"{out} already holds a run: this benchmark trains from scratch; pass a new --out.")
    start = time.perf_counter()
    trainer = Trainer(config)
    if "@channels_last" in switches:  # NHWC activations: oneDNN's preferred layout for convolutions
        trainer.unet.to(memory_format=torch.channels_last)
    if "@uniform_captions" in switches:  # every caption equally often, as the evaluation draws them
        trainer.data = ShapesDataset(size=trainer.image_size, split="train", n=config.dataset_size, seed=config.seed,
                                     balanced=False)
    if "@compile" in switches:  # compiled on the first steps, which the clock counts
        trainer.model = torch.compile(trainer.unet)
    setup = time.perf_counter() - start
    captions = fixed_captions(n_captions, draw)
    rows, clock, marks = [], 0.0, sorted(minutes)
    print(f"{cpu_name()}, {threads} threads, setup {setup:.1f} s, config {train_args or 'default'}", flush=True)
    while marks:
        t0 = time.perf_counter()
        trainer.train_step(trainer.step)
        trainer.step += 1
        clock += time.perf_counter() - t0
        if clock < marks[0] * 60:
            continue
        marks.pop(0)
        model = trainer.imagen()
        row = {"minutes": round(clock / 60, 2), "step": trainer.step, "steps_per_s": round(trainer.step / clock, 2)}
        for split, caps in captions.items():
            images = model.sample(caps, guidance_scale=3.0, steps=50, seed=0)
            row[f"{split}_alignment"] = round(alignment_accuracy(images, caps), 4)
        row.update(draw=draw, setup_s=round(setup, 1), load_avg=round(os.getloadavg()[0], 2), threads=threads, cpu=cpu_name(),
                   bf16=trainer.bf16, config=" ".join(train_args) or "default")
        rows.append(row)
        print(row, flush=True)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "wall_clock.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(rows)
    trainer.save()
    trainer.export()
    plot_curve(rows, out / "wall_clock.png")
    return rows


def plot_curve(rows: list[dict], path: Path):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6))
    minutes = [r["minutes"] for r in rows]
    ax.plot(minutes, [r["train_alignment"] for r in rows], "o-", label="training captions")
    ax.plot(minutes, [r["held_out_alignment"] for r in rows], "s--", label="held-out captions")
    for r in rows:
        ax.annotate(f"step {r['step']}", (r["minutes"], r["train_alignment"]), textcoords="offset points",
                    xytext=(-14, 7), fontsize=7)
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="training time (minutes, clock excludes evaluation)", ylabel="caption alignment (w = 3, DDIM 50)",
           ylim=(0, 1.02), title=f"base stage from scratch, {rows[0]['config']}\n{rows[0]['cpu']}, {rows[0]['threads']} threads")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def levers(root: Path, minutes: list[float], n_captions: int, threads: int, only: list[str] | None, draw: int,
           table_name: str = "recipe_levers"):
    """Each lever in its own process (a fresh text-encoder cache and allocator), one after another."""
    import matplotlib.pyplot as plt

    table = []
    for name, extra in LEVERS.items():
        out = root / name.replace(" ", "_").replace("(", "").replace(")", "").replace(".", "")
        if (not only or name in only) and not (out / "wall_clock.csv").exists():
            subprocess.run([sys.executable, __file__, "--out", str(out), "--threads", str(threads), "--n-captions",
                            str(n_captions), "--draw", str(draw), "--minutes", *map(str, SPEED_ONLY.get(name, minutes)), "--train-args", *extra], check=True)
        if (out / "wall_clock.csv").exists():
            with open(out / "wall_clock.csv") as f:
                table += [{"lever": name, **r} for r in csv.DictReader(f)]
    results, plot = HERE / "results" / f"{table_name}.csv", HERE / f"{table_name}.png"
    with open(results, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    curves = [name for name in LEVERS if name not in SPEED_ONLY and any(r["lever"] == name for r in table)]
    colours = plt.get_cmap("tab20")  # one colour per drawn curve (speed-only levers: steps/s in the table)
    for k, name in enumerate(curves):
        rows = [r for r in table if r["lever"] == name]
        colour = "black" if name == "recipe" else colours((2 * k) % 20 + (2 * k) // 20)  # dark shades first
        ax.plot([float(r["minutes"]) for r in rows], [float(r["train_alignment"]) for r in rows],
                "o-" if name == "recipe" else "s--", color=colour, lw=2.5 if name == "recipe" else 1, ms=5, label=name)
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="training time (minutes, clock excludes evaluation)", ylabel="alignment, training captions",
           title=f"base stage from scratch: one lever changed at a time\n{table[0]['cpu']}, {threads} threads", ylim=(0, 1))
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(plot, dpi=100)
    print(f"wrote {results} and {plot}\n")
    print(markdown_table(table))


def markdown_table(table: list[dict]) -> str:
    """The lever table of benchmarks/README.md: each lever at each of its marks, against the recipe."""
    recipe = {round(float(r["minutes"])): r for r in table if r["lever"] == BASELINE}  # minute mark -> row
    lines = [f"| lever | steps/s | minutes | step | alignment, training captions | held-out | training minus {BASELINE} |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        ref = recipe.get(round(float(r["minutes"])))
        delta = f"{float(r['train_alignment']) - float(ref['train_alignment']):+.3f}" if ref and r["lever"] != BASELINE else ""
        lines.append(f"| {r['lever']} | {float(r['steps_per_s']):.2f} | {float(r['minutes']):.1f} | {r['step']} | "
                     f"{float(r['train_alignment']):.3f} | {float(r['held_out_alignment']):.3f} | {delta} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/wall_clock")
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 3, 5, 10])
    p.add_argument("--n-captions", type=int, default=48, help="training captions, and as many held-out ones")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--draw", type=int, default=0, help="caption draw: 0 = the evaluation set, 1 = the selection set "
                   "the levers are chosen on (train_curve.fixed_captions)")
    p.add_argument("--levers", action="store_true", help="run every lever in LEVERS into --out/<lever>")
    p.add_argument("--only", nargs="+", help="with --levers: run only these levers (the table reads every finished one)")
    p.add_argument("--table", default="recipe_levers", help="with --levers: the table's name under benchmarks/archive/results/ "
                   "(a session's levers are compared with that session's baseline: machines of one model differ in speed)")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="passed on as minimagen train flags")
    args = p.parse_args()
    if args.levers:
        levers(Path(args.out), args.minutes, args.n_captions, args.threads, args.only, args.draw, args.table)
    else:
        run(Path(args.out), args.minutes, args.n_captions, args.train_args, args.threads, args.draw)


if __name__ == "__main__":
    main()
