"""When does dynamic thresholding matter? The two toy regimes side by side (issue 22).

Regime A, the shaded shapes (data/checkpoints/base32.pt): the caption settles colour, shape and place early,
and the shading depends on geometry alone. Regime B, the textured world (textured32.pt, and its
ε-objective twin textured32_eps.pt, the paper's parameterisation): one huge object whose caption decides
its fine detail (stripes, checks or plain) at the pixel limits. Four phases:

  diagnose  per sampling step, static clipping at w = 15 (regimes.guidance_diagnostics): the caption's pull
            |x0_cond - x0_uncond| split into parts coarser and finer than the texture period, the
            fraction of the guided raw x0 beyond +-1 inside and outside the objects, and s under each
            dynamic rule (p in {0.9, 0.95, 0.995}, cap 1.5 or none). Both regimes, 16 captions each.
  select    regime B, v model: choose p and cap on SELECTION captions (training captions disjoint from the
            evaluation ones), p in {0.9, 0.95, 0.995} x cap in {1.5, none} at w = 10 and 15, by
            guidance_thresholding.py's rule (the most detail kept among settings within 1 s.e. of static's
            alignment at both w).
  evaluate  regime B, both objectives: w in {1, 2, 3, 5, 7.5, 10, 15} x {none, static, the chosen setting,
            IF's p = 0.95 cap 1.5, the paper's p = 0.995 uncapped} on the EVALUATION captions, paired per image,
            and issue 22's verdict. Detail kept = metrics.detail_scores' "shading", which for a textured caption
            compares the object's texture with the real one (pattern x contrast; 'plain' captions have none).
  samplers  regime B, v model, w = 10 and 15: static vs the chosen setting with DDIM 10 / 25 / 50 and DDPM 50
            (ancestral).

    export MINIMAGEN_TEXT_ENCODER=tiny
    python benchmarks/archive/thresholding_regimes.py diagnose
    python benchmarks/archive/thresholding_regimes.py select
    python benchmarks/archive/thresholding_regimes.py evaluate --percentile P --cap C    # the selected setting
    python benchmarks/archive/thresholding_regimes.py samplers --percentile P --cap C

Each phase writes benchmarks/archive/results/thresholding_regimes_<phase>.csv; diagnose and evaluate also write
benchmarks/archive/thresholding_regimes_<phase>.png.
"""
import argparse
import random
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minimagen import diffusion as D
from minimagen.evaluate import SCORES, paired_difference, score_images
from minimagen.imagen import load_cascade
from regimes import guidance_diagnostics, regime_diagnostics_figure  # noqa: E402  (benchmarks/archive/regimes.py)
import textured  # noqa: E402  (benchmarks/archive/textured.py: regimes B and C)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the scripts kept there
from common import guidance_sweep, save_rows, tradeoff_plot  # noqa: E402
from guidance_thresholding import fmt, machine, select, verdict  # noqa: E402  (one selection rule, one verdict)
from train_curve import fixed_captions  # noqa: E402

CHECKPOINTS = {"A": "data/checkpoints/base32.pt", "B": "data/checkpoints/textured32.pt",
               "B-eps": "data/checkpoints/textured32_eps.pt", "C": "data/checkpoints/toned32.pt",
               "C-eps": "data/checkpoints/toned32_eps.pt"}
WORLD = {"A": "shaded shapes", "B": "textured", "C": "toned"}  # regime C: regime B in a shade the caption doesn't name
SATURATED = 0.95  # vividness above this: the dimmest channel near 0 (5% of real regime-C objects; vivid_range is 0..1)
WS = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0)
COLUMNS = (["phase", "model", "method", "thresholding", "percentile", "cap", "sampler", "steps", "guidance_scale",
            "n_images"] + [f"{k}{e}" for k in SCORES + ("texture",) for e in ("", "_se")]
           + ["alignment_train", "alignment_held_out", "raw_x0_max", "x0_max", "raw_x0_outside",
              "tone", "tone_se", "vivid", "vivid_se", "saturated", "saturated_se"])


def textured_captions(draw: int) -> tuple[list[str], int]:
    """Draw 0 (evaluation): 24 training captions and every held-out one (17); draw 1 (selection): 24 other
    training captions. Returns (captions, number of training captions first)."""
    train = textured.captions("train")
    evaluation = random.Random(0).sample(train, 24)
    if draw == 0:
        return evaluation + textured.captions("held_out"), 24
    return random.Random(1).sample([c for c in train if c not in evaluation], 24), 24


def texture_scores(row) -> torch.Tensor:
    """[seeds, B]: 1 where the object carries the caption's texture, 0 where not."""
    flat = row["images"].flatten(0, 1)
    caps = row["captions"] * row["images"].shape[0]
    hits = [textured.caption_attributes(found, c)["texture"] for found, c in zip(textured.detect(flat), caps)]
    return torch.tensor(hits, dtype=torch.float).view(row["images"].shape[:2])


def score_shades(row):
    """Regime C: detail against a real render of the shade each object has (textured.detail_scores' toned=True),
    the mean shade read back (tone, vivid), and the share of objects at full saturation (vivid > SATURATED)."""
    flat = row["images"].flatten(0, 1)
    d = textured.detail_scores(flat, row["captions"] * row["images"].shape[0], toned=True)
    shape = row["images"].shape[:2]
    saturated = (d["vivid"] > SATURATED).float().where(~d["vivid"].isnan(), d["vivid"])
    for key, values in (("shading", d["shading"]), ("pinned", d["pinned"]), ("tone", d["tone"]), ("vivid", d["vivid"]),
                        ("saturated", saturated)):
        row["scores"][key] = values.view(shape)
        ok = values[~values.isnan()]
        row[key], row[f"{key}_se"] = ok.mean().item(), (ok.std() / len(ok) ** 0.5).item()


def run_sweep(model, name, captions, n_train, ws, methods, seeds, phase, start, **kw):
    def progress(done, total, row):
        if name.startswith("C"):
            score_shades(row)
        print(f"[{name} {done}/{total}] {row['method']} w={row['guidance_scale']:g}: alignment {row['alignment']:.3f}, "
              f"detail {row['shading']:.3f}, pinned {row['pinned']:.3f} ({time.time() - start:.0f} s)", flush=True)
    score = score_images if name.startswith("A") else textured.score_images
    rows = guidance_sweep(model, captions, ws, methods=methods, seeds=seeds, progress=progress, score=score, **kw)
    for r in rows:
        tex = texture_scores(r)
        r["scores"]["texture"] = tex
        r.update(phase=phase, model=name, n_images=tex.numel(), sampler=kw.get("sampler", "ddim"), steps=kw.get("steps", 25),
                 texture=tex.mean().item(), texture_se=(tex.std() / tex.numel() ** 0.5).item(),
                 alignment_train=r["scores"]["alignment"][:, :n_train].mean().item(),
                 alignment_held_out=r["scores"]["alignment"][:, n_train:].mean().item())
    return rows


def diagnose(args, start):
    rows, curves = [], {}
    for regime in args.regimes:
        model = load_cascade([CHECKPOINTS[regime]])
        if regime == "A":
            picked = fixed_captions(8)
            captions = picked["train"] + picked["held_out"]
        else:
            caps, _ = textured_captions(0)
            captions = caps[:8] + caps[24:32]
        d = guidance_diagnostics(model, captions, args.w, "static", steps=args.steps, seed=0)
        curves[regime] = d
        for i in range(len(d["t"])):
            rows.append(dict(regime=regime, guidance_scale=args.w, step=i, t=round(d["t"][i].item(), 4),
                             delta=d["delta"][i].item(), delta_low=d["delta_low"][i].item(),
                             delta_high=d["delta_high"][i].item(), outside_in=d["outside_in"][i].item(),
                             outside_out=d["outside_out"][i].item(),
                             **{f"s_p{p:g}_{'cap' + format(c, 'g') if c else 'uncapped'}": v[i].item()
                                for (p, c), v in d["s"].items()}))
        late = d["t"] < 0.4
        print(f"regime {regime}: w = {args.w:g}, static; at t < 0.4: |Δ| low-pass {d['delta_low'][late].mean():.4f}, "
              f"high-pass {d['delta_high'][late].mean():.4f}; raw x0 beyond ±1 inside objects "
              f"{d['outside_in'][late].mean():.3f}, outside {d['outside_out'][late].mean():.3f}; "
              f"s at p = 0.995 uncapped {d['s'][(0.995, None)][late].mean():.2f} "
              f"({time.time() - start:.0f} s)", flush=True)
    save_rows(rows, Path(args.results) / f"thresholding_regimes_diagnose{args.tag}.csv", list(rows[0]))
    fig = regime_diagnostics_figure({f"{k} ({WORLD[k[0]]})": d for k, d in curves.items()},
                                    title=f"static clipping, w = {args.w:g}, DDIM {args.steps}: regimes "
                                          f"{', '.join(dict.fromkeys(k[0] for k in curves))}")
    fig.savefig(HERE / f"thresholding_regimes_diagnose{args.tag}.png")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("phase", choices=["diagnose", "select", "evaluate", "samplers"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--w", type=float, default=15.0, help="guidance scale (diagnose)")
    p.add_argument("--guidance", type=float, nargs="+", default=None, help="default: the phase's")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--percentile", type=float, default=0.995, help="the chosen p (evaluate, samplers)")
    p.add_argument("--cap", type=float, default=0.0, help="the chosen cap, 0 = none (evaluate, samplers)")
    p.add_argument("--models", nargs="+", default=["B", "B-eps"],
                   help="evaluate: which models (select and samplers: the first); regime C: C C-eps")
    p.add_argument("--regimes", nargs="+", default=["A", "B", "B-eps"], help="diagnose: which models")
    p.add_argument("--tag", default="", help="appended to every output file name, e.g. _C for regime C")
    p.add_argument("--results", default=str(HERE / "results"))
    args = p.parse_args()
    start = time.time()
    torch.manual_seed(0)
    print(f"{machine()}; phase {args.phase}", flush=True)
    if args.phase == "diagnose":
        return diagnose(args, start)
    captions, n_train = textured_captions(1 if args.phase == "select" else 0)
    cap = None if args.cap <= 0 else args.cap
    chosen = D.Thresholding("dynamic", args.percentile, cap)
    out = Path(args.results) / f"thresholding_regimes_{args.phase}{args.tag}.csv"
    first = args.models[0]
    print(f"{len(captions)} {'selection' if args.phase == 'select' else 'evaluation'} captions ({n_train} training) "
          f"x seeds {args.seeds}", flush=True)
    if args.phase == "select":
        ws = args.guidance or [10.0, 15.0]
        methods = ["static"] + [D.Thresholding("dynamic", q, c) for q in (0.9, 0.95, 0.995) for c in (1.5, None)]
        rows = run_sweep(load_cascade([CHECKPOINTS[first]]), first, captions, n_train, ws, methods, args.seeds, "select",
                         start, steps=args.steps)
        save_rows(rows, out, COLUMNS)
        choice, lines = select(rows, ws)
        print("\n".join(lines))
        return choice
    if args.phase == "samplers":
        model, rows = load_cascade([CHECKPOINTS[first]]), []
        for sampler, steps in (("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddpm", 50)):
            rows += run_sweep(model, first, captions, n_train, args.guidance or [10.0, 15.0], ["static", chosen],
                              args.seeds, "samplers", start, steps=steps, sampler=sampler)
        save_rows(rows, out, COLUMNS)
        for sampler, steps in dict.fromkeys((r["sampler"], r["steps"]) for r in rows):
            sub = [r for r in rows if (r["sampler"], r["steps"]) == (sampler, steps)]
            for w in sorted({r["guidance_scale"] for r in sub}):
                st, dy = (next(r for r in sub if r["guidance_scale"] == w and r["thresholding"] == m)
                          for m in ("static", "dynamic"))
                print(f"{sampler} {steps:>2} steps, w = {w:g}: {dy['method']} minus static: detail "
                      f"{fmt(paired_difference(dy, st, 'shading'))}, alignment {fmt(paired_difference(dy, st, 'alignment'))}"
                      f"; static detail {st['shading']:.3f}, alignment {st['alignment']:.3f}")
        return rows
    # evaluate
    rows, ws = [], args.guidance or list(WS)
    methods = ["none", "static", chosen, D.IF_THRESHOLDING, D.IMAGEN_THRESHOLDING]
    methods = list(dict.fromkeys(methods))
    for name in args.models:
        rows += run_sweep(load_cascade([CHECKPOINTS[name]]), name, captions, n_train, ws, methods, args.seeds,
                          "evaluate", start, steps=args.steps)
        save_rows(rows, out, COLUMNS)
    fig, axes = plt.subplots(1, len(args.models), figsize=(6.5 * len(args.models), 4.6), dpi=100, squeeze=False)
    label, verdict_rows = [r for r in rows if r["thresholding"] == "dynamic"][0]["method"], []
    for ax, name in zip(axes[0], args.models):
        sub = [r for r in rows if r["model"] == name]
        tradeoff_plot(sub, y="shading", ax=ax, title=f"regime {name[0]}, {'ε' if 'eps' in name else 'v'}-objective model")
        ax.set_ylabel("texture detail kept (1 = as real)")
        print(f"=== model {name} (chosen: {label})")
        print("\n".join(verdict(sub, label, [10.0, 15.0])))
        for method in dict.fromkeys(r["method"] for r in sub if r["thresholding"] != "static"):
            for w in ws:
                st, other = (next(r for r in sub if r["method"] == m and r["guidance_scale"] == w) for m in ("static", method))
                for key in ("shading", "alignment", "texture", "pinned") + (("tone", "vivid", "saturated") if name[0] == "C" else ()):
                    mean, se = paired_difference(other, st, key)
                    verdict_rows.append(dict(model=name, method=method, guidance_scale=w, score=key, minus_static=mean, se=se))
        for method in dict.fromkeys(r["method"] for r in sub):
            pts = sorted((r for r in sub if r["method"] == method), key=lambda r: r["guidance_scale"])
            best = max(pts, key=lambda r: r["alignment"])
            mean, se = paired_difference(best, pts[0], "alignment")
            verdict_rows.append(dict(model=name, method=method, guidance_scale=best["guidance_scale"],
                                     score="alignment gain from w = 1 to the best w", minus_static=mean, se=se))
    save_rows(verdict_rows, Path(args.results) / f"thresholding_regimes_verdict{args.tag}.csv", list(verdict_rows[0]))
    fig.tight_layout()
    fig.savefig(HERE / f"thresholding_regimes_evaluate{args.tag}.png")
    print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
