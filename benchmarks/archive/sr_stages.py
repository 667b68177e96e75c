"""Does each super-resolution stage earn its place? Per SR checkpoint, guidance scale and sampling-time
augmentation level: caption alignment against its input's (paired), and fine detail against bilinear.

Inputs, for n training and n held-out captions (train_curve.fixed_captions, the evaluation draw):
  cascade   what the stage gets in the cascade: the shipped base's samples (w = 3, dynamic, DDIM 25,
            seed 0), or for a 64 -> 128 stage those samples upsampled by --input-sr
  real      real renders of the same captions and seeds (minimagen.data.render) at the input size:
            the stage's job with a perfect input, where the truth at the output size is known
Scores, each paired with its input (same caption, same image, same noise):
  alignment change   caption alignment at the output size minus the input's at its size (>= -0.01: kept)
  detail error       real inputs only: the fine detail (metrics.lost_detail, the band above the input's
                     resolution) against the real render of the same scene, in units of its energy;
                     bilinear upsampling scores ~0.6, no detail at all 1, the right edges in place 0
  input error        how strongly the input reaches the output: the RMS difference between the output
                     shrunk back to the input size and the input itself (bilinear ~0.04, as that round trip
                     is not exact; a stage that ignores its input, large)
  detail energy      that band's energy against real renders of the same captions and seeds (1 = as
                     sharp as real; bilinear ~0; above 1 = noisier than real)
Writes benchmarks/archive/results/sr_stages_<size>.csv and prints the table. Committed figures:

    export MINIMAGEN_TEXT_ENCODER=tiny OMP_NUM_THREADS=1
    python benchmarks/archive/sr_stages.py --sr aug1=data/checkpoints/sr64_aug1.pt aug03=data/checkpoints/sr64_aug03.pt \
        noaug=data/checkpoints/sr64.pt
    python benchmarks/archive/sr_stages.py --sr noaug=data/checkpoints/sr128.pt --input-sr data/checkpoints/sr64.pt --levels 0
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from minimagen import metrics
from minimagen.data import from_uint8, render
from minimagen.evaluate import _mean_se
from minimagen.imagen import load_cascade, resize

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the scripts kept there
from common import describe_machine  # noqa: E402
from common import save_rows  # noqa: E402
from train_curve import fixed_captions  # noqa: E402

COLUMNS = ["input", "model", "guidance", "aug_level", "n_images", "alignment", "alignment_change", "alignment_change_se",
           "alignment_change_train", "alignment_change_held_out", "detail_error", "detail_error_se",
           "detail_energy", "detail_energy_se", "input_error", "input_error_se", "seconds"]


def real_renders(captions, size):
    return torch.stack([from_uint8(render(c, size, seed=i)) for i, c in enumerate(captions)])


def score(images, inputs, captions, n_train, real_high, low_size, real_input) -> dict:
    """The paired scores of one row (see the module docstring)."""
    change = metrics.caption_alignment(images, captions) - metrics.caption_alignment(inputs, captions)
    row = {"alignment": metrics.alignment_accuracy(images, captions)}
    row["alignment_change"], row["alignment_change_se"] = _mean_se(change)
    row["alignment_change_train"], row["alignment_change_held_out"] = change[:n_train].mean().item(), change[n_train:].mean().item()
    row["input_error"], row["input_error_se"] = _mean_se((resize(images, low_size) - inputs).pow(2).mean(dim=(1, 2, 3)).sqrt())
    energy = metrics.detail_energy(images, low_size) / metrics.detail_energy(real_high, low_size).mean()
    row["detail_energy"], row["detail_energy_se"] = _mean_se(energy)
    if real_input:
        row["detail_error"], row["detail_error_se"] = _mean_se(metrics.detail_error(images, real_high, low_size))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sr", nargs="+", required=True, help="label=path of SR checkpoints of one size (e.g. 32->64)")
    p.add_argument("--base", default="data/checkpoints/base32.pt")
    p.add_argument("--input-sr", default=None, help="for a 64->128 stage: the 32->64 checkpoint that makes its input")
    p.add_argument("--input-sr-guidance", type=float, default=1.0)
    p.add_argument("--n-captions", type=int, default=24, help="training captions, and as many held-out ones")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0], help="the SR stage's guidance scales")
    p.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.1, 0.2], help="sampling-time augmentation levels")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    start = time.time()
    caps = fixed_captions(args.n_captions)
    captions, n_train = caps["train"] + caps["held_out"], args.n_captions
    srs = {k: load_cascade([v]) for k, v in (s.split("=", 1) for s in args.sr)}
    low_size, size = next(iter(srs.values())).lowres_sizes[0], next(iter(srs.values())).image_sizes[0]
    print(f"{describe_machine()}; {len(captions)} captions; SR {low_size} -> {size} px", flush=True)

    stages = [args.base] + ([args.input_sr] if args.input_sr else [])
    base = load_cascade(stages)
    if base.image_sizes[-1] != low_size:
        raise SystemExit(f"the input cascade makes {base.image_sizes[-1]} px but the SR stages take {low_size} px: "
                         "pass --input-sr for a 64 -> 128 stage.")
    cascade_in = base.sample(captions, guidance_scale=[3.0] + [args.input_sr_guidance] * (len(stages) - 1), steps=args.steps,
                             seed=0, lowres_aug_level=0.0).cpu()
    inputs = {"cascade": cascade_in, "real": real_renders(captions, low_size)}
    real_high = real_renders(captions, size)
    for name, x in inputs.items():
        print(f"input {name}: alignment {metrics.alignment_accuracy(x, captions):.3f} at {low_size} px", flush=True)

    rows = []
    for name, x in inputs.items():
        up = resize(x, size)
        rows.append(dict(input=name, model="bilinear", guidance=float("nan"), aug_level=float("nan"), seconds=0.0,
                         **score(up, x, captions, n_train, real_high, low_size, name == "real")))
        for label, sr in srs.items():
            for w in args.guidance:
                for level in args.levels:
                    t = time.time()
                    out = sr.sample(captions, guidance_scale=w, steps=args.steps, seed=0, lowres_images=x,
                                    lowres_aug_level=level).cpu()
                    rows.append(dict(input=name, model=label, guidance=w, aug_level=level, seconds=round(time.time() - t, 1),
                                     **score(out, x, captions, n_train, real_high, low_size, name == "real")))
                    r = rows[-1]
                    print(f"{name:8} {label:10} w={w:<4g} aug={level:<4g} alignment {r['alignment']:.3f} "
                          f"(change {r['alignment_change']:+.3f} ± {r['alignment_change_se']:.3f}), detail energy "
                          f"{r['detail_energy']:.2f}, input error {r['input_error']:.3f}" + (f", detail error {r['detail_error']:.2f} ± {r['detail_error_se']:.2f}"
                                                         if name == "real" else "") + f"  ({time.time() - start:.0f} s)", flush=True)
    out = Path(args.out or HERE / "results" / f"sr_stages_{size}.csv")
    for r in rows:
        r["n_images"] = len(captions)
    save_rows(rows, out, COLUMNS)
    print(f"wrote {out} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
