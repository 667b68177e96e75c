"""Command line: python -m minimagen {demo, train, sample}.

    python -m minimagen demo                                       # the README's main job
    python -m minimagen train --stage 0 --out runs/base      # the base recipe: about 5 minutes on 2 CPU cores
    python -m minimagen sample --checkpoints runs/base/last.pt --captions "a large red circle" --out grid.png
"""
import argparse
import dataclasses
import shutil
import sys
import time
import typing
from pathlib import Path

from .diffusion import DEFAULT_THRESHOLDING, Thresholding
from .errors import MinimagenError

# the contrast world's demo captions: random.Random(0).sample(all_captions("train", world="contrast"), 6), drawn once
# (not chosen by how they look; tests/test_contrast.py checks the draw); the first six of the benchmark's captions
DEMO_CONTRAST = ["a pink square to the left of an orange square", "a pink square above a red triangle",
                 "a red circle above a yellow triangle", "a large pink triangle",
                 "a teal square to the left of an orange triangle", "an orange triangle above a green triangle"]
DEMO_CAPTIONS = ["a large red circle", "a small teal square", "a large orange triangle", "a green circle above a pink square",
                 "a purple circle to the left of a yellow triangle", "a blue triangle to the left of a red square"]


SWITCHES = {"bf16": "bf16 autocast (default: where the hardware supports it)"}


def add_train_args(p):
    """One flag per TrainConfig field (--batch-size for batch_size), typed by its annotation."""
    from .train import STAGE_RECIPES, TrainConfig
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in SWITCHES:  # --bf16 / --no-bf16; None (unset) keeps TrainConfig's default
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=SWITCHES[f.name])
        else:
            kind = next((t for t in typing.get_args(f.type) if t is not type(None)), f.type)  # int | None -> int
            recipe = any(f.name in r for r in STAGE_RECIPES.values())  # unset = the stage's recipe, not a fixed value
            p.add_argument(flag, type=kind, default=f.default, dest=f.name,
                           help="default: the stage's recipe (minimagen.train.STAGE_RECIPES)" if recipe else f"default: {f.default}")
    p.add_argument("--no-noise-aug", dest="noise_aug", action="store_const", const=0.0,
                   help="SR stages: train without noise-conditioning augmentation (the same as --noise-aug 0)")
    p.add_argument("--out", dest="out_dir", help="alias of --out-dir")


def config_from_args(args):
    """The TrainConfig that `train`'s flags describe; flags left unset keep the stage's recipe."""
    from .train import TrainConfig
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def cmd_train(args):
    from .train import Trainer
    config = config_from_args(args)
    Trainer(config).train()
    print(f"checkpoint: {Path(config.out_dir) / 'last.pt'}  loss log: {Path(config.out_dir) / 'loss.csv'}")


def cmd_sample(args):
    from .imagen import load_cascade
    from .plot import save_grid
    if 0 < args.cap < 1:  # Thresholding's own message would say None, which the command line spells 0
        raise MinimagenError(f"--cap must be 0 (no cap) or a number >= 1, got {args.cap:g}: 1.5 is a good default.")
    rule = Thresholding(args.thresholding, args.percentile, None if args.cap <= 0 else args.cap)  # checked before loading
    model = load_cascade(args.checkpoints, device=args.device)
    images = model.sample(args.captions, guidance_scale=args.guidance, thresholding=rule, steps=args.steps,
                          sampler=args.sampler, seed=args.seed, lowres_aug_level=args.aug_level)
    print(f"wrote {save_grid(images, args.out, captions=args.captions)}")


def cmd_demo(args):
    """Load the shipped toy cascade, fine-tune its base briefly on this machine, sample a grid and
    compare none / static / dynamic thresholding at a high guidance scale."""
    import torch
    from .data import DATA_DIR, load_spec
    from .exact import contrast_set, guided_samples
    from .imagen import load_cascade
    from .metrics import alignment_accuracy, detail_scores
    from .plot import pinned_pixels, save_grid, thresholding_figure
    from .train import TrainConfig, Trainer

    out, ckpts = Path(args.out), DATA_DIR / "checkpoints"
    start = time.time()
    base = ckpts / "base32.pt"
    if args.finetune_steps > 0:
        from .checkpoint import load_checkpoint
        finetune = out / "finetune"
        if finetune.exists():  # a re-run (a second look, a re-run Colab cell) repeats the demo, not resumes it
            shutil.rmtree(finetune)
            print(f"re-run: the fine-tune starts afresh from the shipped base (replacing {finetune} from the last run)")
        state = load_checkpoint(base)  # fine-tune it as it was trained: its U-Net preset and text encoder
        config = TrainConfig(stage=0, steps=args.finetune_steps, out_dir=str(finetune), init_from=str(base),
                             preset=state["train_config"]["preset"], text_encoder=state["text_encoder"],
                             warmup_steps=1, lr=5e-5, sample_every=0, log_every=5, checkpoint_every=args.finetune_steps, dataset_size=512)
        losses = Trainer(config).train()
        print(f"fine-tuned the shipped base for {len(losses)} steps on this machine (mean loss {sum(losses) / len(losses):.4f})")
        base = out / "finetune" / "last.pt"
    stages = [base] + [p for p in (ckpts / "sr64.pt",) if p.exists()]
    model = load_cascade(stages)
    images = model.sample(DEMO_CAPTIONS, guidance_scale=3.0, steps=args.steps, seed=0, return_all_stages=True)
    print(f"wrote {save_grid(images[-1], out / 'samples.png', captions=DEMO_CAPTIONS, ncols=3)}")
    base_images = images[0]
    print(f"caption alignment of the {model.image_sizes[0]}px samples (w=3, dynamic): "
          f"{alignment_accuracy(base_images, DEMO_CAPTIONS):.0%}")
    # the thresholding comparison in the contrast world (data/README.md): each image's contrast is a continuum the
    # caption does not name, so guidance pushes toward the harshest images the data allows, and static clipping
    # turns that push into over-saturation; dynamic thresholding keeps w = 1's look (notebook 07)
    contrast = load_cascade([ckpts / "contrast32.pt"])
    rows = {"w = 1": contrast.sample(DEMO_CONTRAST, guidance_scale=1.0, steps=args.steps, seed=0)}
    rows.update({m: contrast.sample(DEMO_CONTRAST, guidance_scale=args.guidance, thresholding=m, steps=args.steps, seed=0)
                 for m in ("none", "static", "dynamic")})
    thresholding_figure(rows, DEMO_CONTRAST, args.guidance, out / "thresholding.png",
                        " in the contrast world\nthe shipped contrast32 (w = 1 on top: the same noise without guidance; "
                        "white under a row: pixels pinned at 0 or 255)", pinned=("static", "dynamic"))
    print(f"wrote {out / 'thresholding.png'}: the shipped contrast32 at w = {args.guidance:g} (compare each row with w = 1's)")
    for m, x in rows.items():
        detail = detail_scores(x, DEMO_CONTRAST, contrast_world=True)
        print(f"  {m:>8}: objects' contrast {detail['contrast'].nanmean().item():.2f}, background brightness "
              f"{x.mean().item():+.2f}, pixels pinned at 0 or 255 {pinned_pixels(x).float().mean().item():.1%}, alignment "
              f"{alignment_accuracy(x, DEMO_CONTRAST):.0%}")
    # the same comparison with a perfect denoiser (minimagen/exact.py: no model error), where the effect is plain
    perfect, contrast_of, exact_captions = contrast_set(torch.linspace(*load_spec()["contrast"]["range"], 16))
    run = lambda w, m: guided_samples(perfect, w, m, per_label=1)[0]  # one sample per caption, the same noise
    exact_rows = {"w = 1": run(1.0, "static"), **{m: run(args.guidance, m) for m in ("none", "static", "dynamic")}}
    thresholding_figure(exact_rows, exact_captions, args.guidance, out / "thresholding_exact.png",
                        " in the contrast world\nwith a perfect denoiser (no training): static over-saturates, dynamic keeps w = 1's look")
    print(f"wrote {out / 'thresholding_exact.png'}: the same with a perfect denoiser; contrast of the nearest data image: "
          + ", ".join(f"{m} {contrast_of[perfect.nearest(x)].mean().item():.2f}" for m, x in exact_rows.items()))
    print(f"demo done in {time.time() - start:.0f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minimagen", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="sample the shipped toy cascade and compare thresholding methods")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--finetune-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=50)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train one stage of the cascade")
    add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample captions from stage checkpoints into a PNG grid")
    p.add_argument("--checkpoints", nargs="+", required=True, help="base first, then SR stages")
    p.add_argument("--captions", nargs="+", required=True)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--thresholding", default="dynamic", help="none, static or dynamic")
    p.add_argument("--percentile", type=float, default=DEFAULT_THRESHOLDING.percentile, help="dynamic thresholding's percentile p")
    p.add_argument("--cap", type=float, default=DEFAULT_THRESHOLDING.cap, help="dynamic thresholding's ceiling on s (0 = no cap)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim", help="ddim or ddpm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aug-level", type=float, default=0.0, help="noise augmentation of SR inputs, 0 (clean) .. 1")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="outputs/samples.png")
    p.set_defaults(func=cmd_sample)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except MinimagenError as exc:  # a learner's mistake: one sentence, no stack trace
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
