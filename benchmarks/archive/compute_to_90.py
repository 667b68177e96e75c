"""Compute to a good model: training steps and TFLOP until the base reaches 90% caption alignment.

Wall-clock depends on the CPU (bf16 or not, AVX-512 or not, how busy it is); floating-point operations do
not. So each lever is scored by the compute it needs: the base stage trains from scratch with the same
`Trainer.train_step` as `python -m minimagen train --stage 0`, with one setting changed from the base32 recipe
(minimagen.train.STAGE_RECIPES[0] with the base32 U-Net: the stage-0 recipe until 2026-12-04, when the lever that
needed the least compute, width 32 with one ResNet block per level, became its U-Net, quick32), and at fixed compute marks its EMA weights (and its raw weights:
the "raw vs EMA" lever comes free) sample 48 training captions at the course's default settings (w = 3,
dynamic thresholding, DDIM 50, seed 0), scored with the shapes detector. The FLOPs of one training step
(forward and backward, counted by torch's FlopCounterMode) times the steps taken is the compute; evaluation
is not counted. A run stops at the second mark at or above 90% or at --max-tflop.

    python benchmarks/archive/compute_to_90.py run --lever "base32 recipe" --seed 0 --draw 1     # one lever, one seed
    python benchmarks/archive/compute_to_90.py table                                    # every run so far -> csv + png
    python benchmarks/archive/compute_to_90.py speed --levers "base32 recipe" "width 32, depth 1-1-1"  # steps/s, idle machine

`speed` times training steps of each lever's setup in fp32 and, where the CPU has native bf16, in bf16
(device.usable_precisions says why bf16 is skipped elsewhere), alternating the levers within each round, and
turns the table's steps to 90% into minutes: compute is what a lever saves, wall-clock is what a learner waits.

Levers are chosen on caption draw 1 (disjoint from draw 0, the evaluation captions of every benchmark);
the chosen recipe is then reported on draw 0. Writes runs/compute_to_90/<lever>_s<seed>_d<draw>.csv per
run, benchmarks/archive/results/compute_to_90.csv and benchmarks/archive/compute_to_90.png.
"""
import argparse
import csv
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the scripts kept there
from train_curve import fixed_captions  # noqa: E402  (the evaluation captions every benchmark uses)

from minimagen import unet as U  # noqa: E402
from common import cpu_name  # noqa: E402

RUNS = HERE.parents[1] / "runs" / "compute_to_90"
BASE = U.PRESETS["base32"]
# U-Net shapes not in the package: registered under these names for this process only
SHAPES = {
    "width48": dataclasses.replace(BASE, dim=48),
    "small32": U.PRESETS["small32"],
    "shallow": dataclasses.replace(BASE, num_resnet_blocks=(1, 1, 1)),
    "attn8": dataclasses.replace(BASE, cross_attn=(False, True, False)),     # attention only at 8 px
    "attn4": dataclasses.replace(BASE, cross_attn=(False, False, True)),     # only at the 4 px bottleneck
}
# one setting changed from the base32 recipe (TrainConfig fields; "preset" may name a SHAPES entry)
LEVERS = {
    "base32 recipe": {},
    "width 48": {"preset": "width48"},
    "width 32 (small32)": {"preset": "small32"},
    "width 32, lr 2e-3": {"preset": "small32", "lr": 2e-3},
    "depth 1-1-1": {"preset": "shallow"},
    "width 32, depth 1-1-1": {"preset": "quick32"},  # the stage-0 recipe's U-Net since 2026-12-04
    "depth 1-1-1, lr 2e-3": {"preset": "shallow", "lr": 2e-3},
    "attention only at 8 px": {"preset": "attn8"},
    "attention only at 4 px": {"preset": "attn4"},
    "batch 16, lr 7e-4": {"batch_size": 16, "lr": 7e-4},
    "batch 64, lr 1.4e-3": {"batch_size": 64, "lr": 1.4e-3},
    "500 training images": {"dataset_size": 500},
    "8000 training images": {"dataset_size": 8000},
    "cosine lr decay to 1000 steps": {"lr_schedule": "cosine", "steps": 1000},
    "EMA 0.95": {"ema_decay": 0.95},
}
LEVERS = {name: {"preset": "base32", **change} for name, change in LEVERS.items()}  # all relative to base32


def step_flops(trainer) -> int:
    """FLOPs of one training step's forward and backward at this batch size (the optimizer's few are left out)."""
    from minimagen.imagen import stage_loss
    from minimagen.device import autocast
    c = trainer.config
    images, captions = trainer.batch(0)
    embeds, mask = trainer.text_encoder.encode(captions)
    with FlopCounterMode(display=False) as counter:
        with autocast(trainer.device, trainer.bf16):
            loss = stage_loss(trainer.unet, images, embeds, mask, None, c.objective, c.schedule, c.cond_drop_prob, 0.0,
                              c.loss_weighting)
        loss.backward()
    trainer.unet.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run(lever: str, seed: int, draw: int, max_tflop: float, every: float, threads: int, n: int, bf16: bool | None,
        device: str | None = None):
    from minimagen.metrics import caption_alignment
    from minimagen.imagen import Imagen
    from minimagen.train import Trainer, TrainConfig

    torch.set_num_threads(threads)
    U.PRESETS.update(SHAPES)
    out = RUNS / f"{lever.replace(' ', '_').replace(',', '').replace('(', '').replace(')', '')}_s{seed}_d{draw}"
    config = TrainConfig(stage=0, seed=seed, out_dir=str(out), sample_every=0, bf16=bf16, device=device,
                         **LEVERS[lever])
    trainer = Trainer(config)
    # steps and TFLOP do not depend on the machine; the row says where they were counted all the same
    where = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu"
    out = out.with_name(out.name + ("_cuda" if trainer.device.type == "cuda" else ""))
    flops = step_flops(trainer)
    captions = fixed_captions(n, draw)["train"]
    marks = [every * k for k in range(1, int(max_tflop / every) + 1)]
    print(f"{lever}: {flops / 1e9:.1f} GFLOP per step, {U.count_parameters(trainer.unet) / 1e6:.2f} M parameters; "
          f"{where}, {cpu_name()}, {threads} threads, bf16={trainer.bf16}", flush=True)
    rows, above, clock = [], 0, 0.0
    for mark in marks:
        while trainer.step * flops < mark * 1e12:
            t0 = time.perf_counter()
            trainer.train_step(trainer.step)
            trainer.step += 1
            clock += time.perf_counter() - t0
        row = dict(lever=lever, seed=seed, draw=draw, step=trainer.step, tflop=round(trainer.step * flops / 1e12, 2),
                   gflop_per_step=round(flops / 1e9, 2), params_m=round(U.count_parameters(trainer.unet) / 1e6, 3))
        for name, net in (("ema", trainer.ema.module), ("raw", trainer.unet)):
            model = Imagen([net], trainer.text_encoder, config.objective, config.schedule)
            per_image = caption_alignment(model.sample(captions, guidance_scale=3.0, seed=0), captions)
            row[f"{name}_alignment"] = round(per_image.mean().item(), 4)
            row[f"{name}_alignment_se"] = round((per_image.std() / len(per_image) ** 0.5).item(), 4)
        row.update(train_s=round(clock, 1), steps_per_s=round(trainer.step / clock, 2), threads=threads,
                   load_avg=round(os.getloadavg()[0], 2), cpu=cpu_name(), bf16=trainer.bf16, device=where)
        rows.append(row)
        print(row, flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{out}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(rows)
        above = above + 1 if row["ema_alignment"] >= 0.9 else 0
        if above == 2:
            break
    return rows


def alignment_se(row: dict, n: int = 48) -> tuple[float, bool]:
    """(s.e. of the EMA alignment, exact?): the run's own per-image s.e. where it stored one; for runs made before
    it did, the bound sqrt(a (1 - a) / n), the largest s.e. a mean a of n per-image scores in [0, 1] can have."""
    if row.get("ema_alignment_se") not in (None, ""):
        return float(row["ema_alignment_se"]), True
    a = row["ema_alignment"]
    return (a * (1 - a) / n) ** 0.5, False


def to_90(rows: list[dict], key: str = "ema_alignment"):
    """The first mark at or above 0.9 (steps, TFLOP), or None."""
    return next(((r["step"], r["tflop"]) for r in rows if r[key] >= 0.9), None)


def table():
    import matplotlib.pyplot as plt
    runs: dict[tuple, list[dict]] = {}
    for path in sorted(RUNS.glob("*.csv")):
        with open(path) as f:
            rows = [{k: (float(v) if k.endswith(("alignment", "tflop", "per_step")) else v) for k, v in r.items()}
                    for r in csv.DictReader(f)]
        for r in rows:
            r["step"] = int(r["step"])
        runs[(rows[0]["lever"], rows[0]["seed"], rows[0]["draw"], rows[0].get("device", "cpu"))] = rows
    summary = []
    for (lever, seed, draw, device), rows in runs.items():
        ema, raw = to_90(rows), to_90(rows, "raw_alignment")
        last = rows[-1]
        se, exact = alignment_se(last)
        summary.append(dict(lever=lever, seed=seed, draw=draw, gflop_per_step=last["gflop_per_step"],
                            params_m=last["params_m"], steps_to_90=ema[0] if ema else "",
                            tflop_to_90=ema[1] if ema else "", raw_tflop_to_90=raw[1] if raw else "",
                            last_step=last["step"], last_tflop=last["tflop"], last_alignment=last["ema_alignment"],
                            last_alignment_se=round(se, 4), se_is_bound=not exact,
                            bf16=last["bf16"], device=last.get("device", "cpu"), cpu=last["cpu"],
                            threads=last["threads"]))  # speed: `speed`, idle
        print(f"{lever:32s} seed {seed} draw {draw} ({device}): {last['gflop_per_step']:5.1f} GFLOP/step, 90% at "
              f"{ema[1] if ema else '>' + str(last['tflop'])} TFLOP (step {ema[0] if ema else '-'}), raw weights "
              f"{raw[1] if raw else '-'}; last {last['ema_alignment']:.3f} ± {'' if exact else '<= '}{se:.3f} "
              f"at {last['tflop']} TFLOP")
    (HERE / "results").mkdir(exist_ok=True)
    with open(HERE / "results" / "compute_to_90.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    # one panel per device (finished CPU runs; GPU runs, some cut short), one colour per lever, the recipe's U-Net bold
    devices = sorted({k[3] for k in runs}, key=lambda d: d != "cpu")
    fig, axes = plt.subplots(1, len(devices), figsize=(7 * len(devices), 5.2), sharey=True, squeeze=False)
    levers = list(dict.fromkeys(k[0] for k in runs))
    colour = {lever: plt.cm.tab20(i % 20) for i, lever in enumerate(levers)}
    for ax, device in zip(axes[0], devices):
        for (lever, seed, draw, dev), rows in runs.items():
            if dev != device:
                continue
            ours = LEVERS[lever].get("preset") == "quick32"
            ax.plot([r["tflop"] for r in rows], [r["ema_alignment"] for r in rows], "o-" if draw == "1" else "s--",
                    color="black" if ours else colour[lever], lw=2.2 if ours else 1, ms=3.5,
                    label=f"{lever}, seed {seed}" + (", draw 0" if draw == "0" else ""))
        ax.axhline(0.9, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="training compute (TFLOP, forward + backward)", ylim=(0, 1.02),
               title="CPU runs (to 90%)" if device == "cpu" else f"{device} runs (bf16; some cut short by the lease)")
        ax.legend(fontsize=7, loc="lower right", ncol=1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("EMA alignment, 48 training captions (w = 3)")
    fig.suptitle("compute to 90%: one setting changed from the base32 recipe (black: quick32, the recipe's U-Net now)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(HERE / "compute_to_90.png", dpi=110)
    print(f"wrote {HERE / 'results' / 'compute_to_90.csv'} and {HERE / 'compute_to_90.png'}")


def speed(levers: list[str], steps: int, rounds: int, threads: int):
    """Median steps/s of each lever's training step per precision, measured alternately in one process."""
    from common import usable_precisions
    from minimagen.train import Trainer, TrainConfig

    torch.set_num_threads(threads)
    U.PRESETS.update(SHAPES)
    precisions, why = usable_precisions(["fp32", "bf16"])
    if why:
        print(why)
    summary = {}
    if (HERE / "results" / "compute_to_90.csv").exists():
        with open(HERE / "results" / "compute_to_90.csv") as f:
            summary = {r["lever"]: r for r in csv.DictReader(f)
                       if r["draw"] == "1" and r["seed"] == "0" and r["steps_to_90"]}  # runs that got there
    trainers = {}
    for lever in levers:
        for precision in precisions:
            config = TrainConfig(stage=0, out_dir=f"/tmp/speed_{len(trainers)}", sample_every=0,
                                 bf16=precision == "bf16", **LEVERS[lever])
            trainers[lever, precision] = Trainer(config)
    times = {key: [] for key in trainers}
    for r in range(rounds + 1):  # round 0 warms up
        for key in (trainers if r % 2 else reversed(list(trainers))):
            t = trainers[key]
            t0 = time.perf_counter()
            for _ in range(steps):
                t.train_step(t.step)
                t.step += 1
            if r:
                times[key].append((time.perf_counter() - t0) / steps)
    rows = []
    for (lever, precision), ts in times.items():
        per_step = sorted(ts)[len(ts) // 2]
        to_90 = summary.get(lever, {}).get("steps_to_90")
        rows.append(dict(lever=lever, precision=precision, steps_per_s=round(1 / per_step, 2),
                         minutes_to_90=round(int(to_90) * per_step / 60, 1) if to_90 else "",
                         cpu=cpu_name(), threads=threads, load_avg=round(os.getloadavg()[0], 2)))
        print(rows[-1], flush=True)
    with open(HERE / "results" / "compute_to_90_speed.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--lever", required=True, choices=list(LEVERS))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--draw", type=int, default=1, help="caption draw (1 = choosing, 0 = reporting)")
    r.add_argument("--max-tflop", type=float, default=60.0)
    r.add_argument("--every", type=float, default=4.0, help="TFLOP between evaluations")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--n-captions", type=int, default=48)
    r.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="default: where native")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    sub.add_parser("table")
    sp = sub.add_parser("speed")
    sp.add_argument("--levers", nargs="+", default=["base32 recipe", "width 32, depth 1-1-1"], choices=list(LEVERS))
    sp.add_argument("--steps", type=int, default=10, help="steps per lever per round")
    sp.add_argument("--rounds", type=int, default=5)
    sp.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.cmd == "run":
        run(a.lever, a.seed, a.draw, a.max_tflop, a.every, a.threads, a.n_captions, a.bf16, a.device)
    elif a.cmd == "speed":
        speed(a.levers, a.steps, a.rounds, a.threads)
    else:
        table()
