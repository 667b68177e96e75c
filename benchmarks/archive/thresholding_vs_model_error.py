"""Does the thresholding rule matter more when the model is worse? (issue 22)

`exact_pull.py --guided` showed that with a perfect denoiser every thresholding rule gives the same final
images: the last steps' posterior mean is a real render, where no threshold acts. So whatever separates static
clipping from dynamic thresholding must come from the model's own errors, which Imagen's models of natural images
have in abundance and our converged toy models hardly at all. This benchmark varies the error directly: one
training run per world, with the EMA weights saved at doubling budgets (a constant learning rate after the
warm-up, so a short budget is exactly the start of the long run), and every snapshot sampled under each rule.

  train     the stage-0 recipe's U-Net (quick32) on regime B (textured) and regime C (toned), each objective
            named, saving runs/model_error/<model>_<step>.pt at MILESTONES.
  evaluate  for every snapshot: the caption's late pull (its fine part at t < 0.4, static, w = 15,
            16 captions; a perfect model's is 0, exact_pull.py) and thresholding_regimes.py's evaluation sweep
            (41 evaluation captions, seed 0, DDIM 25) at w in {1, 3, 10, 15} under none, static and the chosen
            dynamic rule (p = 0.9, cap 1.5: chosen on selection captions in thresholding_regimes.py select).
            Paired differences (dynamic minus static, none minus static) per snapshot and a figure.

    export MINIMAGEN_TEXT_ENCODER=tiny
    python benchmarks/archive/thresholding_vs_model_error.py train      # ~17 min on 2 CPU cores (quick32, fp32)
    python benchmarks/archive/thresholding_vs_model_error.py evaluate

Writes benchmarks/archive/results/thresholding_vs_model_error.csv (one row per snapshot x method x w), _diff.csv (the paired
differences) and benchmarks/archive/thresholding_vs_model_error.png (`figure` redraws it from those two files).
"""
import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minimagen.evaluate import paired_difference
from regimes import guidance_diagnostics  # noqa: E402  (benchmarks/archive/regimes.py)
from minimagen.imagen import load_cascade
from minimagen.train import Trainer, TrainConfig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # thresholding_regimes, beside this script
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the scripts kept there
from common import save_rows  # noqa: E402
from guidance_thresholding import fmt, machine  # noqa: E402
from thresholding_regimes import COLUMNS, run_sweep, textured_captions  # noqa: E402  (one sweep, one caption draw)
from textured import training_data  # noqa: E402  (benchmarks/archive/textured.py: the textured worlds)

MILESTONES = (150, 300, 600, 1200, 2400, 4800)
MODELS = {"B-eps": ("textured", "eps"), "C-eps": ("toned", "eps"), "B": ("textured", "v"), "C": ("toned", "v")}
RUNS = Path("runs/model_error")
WS = (1.0, 3.0, 10.0, 15.0)
CHOSEN = ("dynamic", 0.9, 1.5)


def snapshot(name: str, step: int) -> Path:
    return RUNS / f"{name}_{step}.pt"


def train(args):
    for name in args.models:
        dataset, objective = MODELS[name]
        config = TrainConfig(stage=0, dataset=dataset, objective=objective, text_encoder="tiny", seed=0,
                             out_dir=str(RUNS / name), sample_every=0, checkpoint_every=10**9,
                             bf16=False)  # fp32: the same numbers on any CPU
        trainer = Trainer(config, data=training_data(config, dataset))
        for step in args.milestones:
            if snapshot(name, step).exists():
                continue
            start = time.time()
            trainer.train(step)
            shutil.copy(trainer.out / "ema.pt", snapshot(name, step))
            print(f"{name}: step {step} ({time.time() - start:.0f} s for this stretch)", flush=True)


def late_fine_pull(model, captions) -> float:
    d = guidance_diagnostics(model, captions, 15.0, "static", steps=25, seed=0)
    return d["delta_high"][d["t"] < 0.4].mean().item()


def evaluate(args, start):
    captions, n_train = textured_captions(0)
    methods = ["none", "static", CHOSEN]
    rows, diffs = [], []
    for name in args.models:
        for step in args.milestones:
            model = load_cascade([str(snapshot(name, step))])
            pull = late_fine_pull(model, captions[:8] + captions[24:32])
            sub = run_sweep(model, name, captions, n_train, list(WS), methods, (0,), "model_error", start, steps=25)
            for r in sub:
                r["train_steps"], r["late_fine_pull"] = step, pull
            rows += sub
            save_rows(rows, Path(args.results) / "thresholding_vs_model_error.csv",
                      ["train_steps", "late_fine_pull"] + list(COLUMNS))
            for w in WS:
                st = next(r for r in sub if r["method"] == "static" and r["guidance_scale"] == w)
                for other in (r for r in sub if r["method"] != "static" and r["guidance_scale"] == w):
                    for key in ("shading", "alignment", "pinned") + (("vivid", "saturated") if name[0] == "C" else ()):
                        mean, se = paired_difference(other, st, key)
                        diffs.append(dict(model=name, train_steps=step, late_fine_pull=pull, method=other["method"],
                                          guidance_scale=w, score=key, static=st[key], minus_static=mean, se=se))
            at = {d["guidance_scale"]: fmt((d["minus_static"], d["se"])) for d in diffs if d["model"] == name
                  and d["train_steps"] == step and d["method"] != "none" and d["score"] == "shading"}
            print(f"{name} step {step}: late fine pull {pull:.4f}; {CHOSEN} minus static, detail at w = 10: {at[10.0]}, "
                  f"w = 15: {at[15.0]} ({time.time() - start:.0f} s)", flush=True)
            save_rows(diffs, Path(args.results) / "thresholding_vs_model_error_diff.csv", list(diffs[0]))
    figure(diffs, rows)


def figure(diffs, rows):
    """Four panels against training steps: the model's quality (alignment, static, w = 1 and 3), the caption's late
    pull (its fine part at t < 0.4), and the chosen dynamic rule minus static clipping on detail at w = 10 and 15."""
    models = list(dict.fromkeys(d["model"] for d in diffs))
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.4), dpi=100)
    (quality, pull_ax), panels = axes[0], axes[1]
    for k, name in enumerate(models):
        colour = plt.cm.tab10(k)
        for w, style in ((1.0, "s:"), (3.0, "o-")):
            pts = sorted((r for r in rows if r["model"] == name and r["method"] == "static" and r["guidance_scale"] == w),
                         key=lambda r: r["train_steps"])
            quality.plot([r["train_steps"] for r in pts], [r["alignment"] for r in pts], style, color=colour,
                         label=f"{name}, w = {w:g}")
        pts = sorted({r["train_steps"]: r["late_fine_pull"] for r in rows if r["model"] == name}.items())
        pull_ax.plot(*zip(*pts), "o-", color=colour, label=name)
        for ax, w in zip(panels, (10.0, 15.0)):
            pts = sorted((d for d in diffs if d["model"] == name and d["guidance_scale"] == w and d["score"] == "shading"
                          and d["method"] != "none"), key=lambda d: d["train_steps"])
            ax.errorbar([d["train_steps"] * (1.04 if k else 1) for d in pts], [d["minus_static"] for d in pts],
                        yerr=[1.96 * d["se"] for d in pts], fmt="o-", color=colour, capsize=3, label=name)
    quality.set(ylabel="caption alignment (static clipping)", ylim=(0, 1.02), title="how good the model is")
    pull_ax.set(ylim=(0, None), ylabel="mean |x0_cond - x0_uncond|, fine part, t < 0.4",
              title="the caption's fine pull when detail is drawn\n(static, w = 15; a perfect model's: 0)")
    for ax, w in zip(panels, (10.0, 15.0)):
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(ylabel="texture detail kept: dynamic minus static", title=f"w = {w:g}: dynamic (p = {CHOSEN[1]}, "
               f"cap {CHOSEN[2]}) minus static clipping,\npaired over the same noise, 95% interval")
    steps = sorted({r["train_steps"] for r in rows})
    for ax in axes.flat:
        ax.set(xscale="log", xlabel="training steps (quick32, batch 32)")
        ax.set_xticks(steps, [str(int(s)) for s in steps])
        ax.minorticks_off()
        ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(HERE / "thresholding_vs_model_error.png")


def read(name: str) -> list[dict]:
    def value(v):
        try:
            return float(v)
        except ValueError:
            return v
    with open(HERE / "results" / name) as f:
        return [{k: value(v) for k, v in r.items()} for r in csv.DictReader(f)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("phase", choices=["train", "evaluate", "figure"], help="figure: redraw from the stored results")
    p.add_argument("--models", nargs="+", default=["B-eps", "C-eps"], choices=list(MODELS))
    p.add_argument("--milestones", type=int, nargs="+", default=list(MILESTONES))
    p.add_argument("--results", default=str(HERE / "results"))
    args = p.parse_args()
    start = time.time()
    torch.manual_seed(0)
    print(f"{machine()}; phase {args.phase}", flush=True)
    RUNS.mkdir(parents=True, exist_ok=True)
    if args.phase == "figure":
        figure(read("thresholding_vs_model_error_diff.csv"), read("thresholding_vs_model_error.csv"))
    else:
        train(args) if args.phase == "train" else evaluate(args, start)
    print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
