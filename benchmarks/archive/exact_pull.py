"""When does the caption stop deciding detail, for a PERFECT model? Issue 22's design tool: no training needed.

Thresholding can only change what guidance pushes out of range, and guidance pushes by the caption's pull
x0_cond - x0_uncond. For a model that has learned its world exactly, that pull is a property of the world.
In the textured worlds the caption decides the texture, so take one scene (its geometry and colour known,
which the huge object gives away early) and let the texture T (and, in a phased world, its phase phi) be
unknown. The exact denoiser is then a posterior mean over the renders x0(T, phi) of that scene:

    w(T, phi)  ∝  exp(-|x_t - alpha_t x0(T, phi)|^2 / (2 sigma_t^2))        uniform prior over T and phi
    x0_cond   = sum_phi w(T_caption, phi) x0(T_caption, phi) / sum_phi w(T_caption, phi)
    x0_uncond = sum_T,phi w(T, phi) x0(T, phi) / sum w,        p(T_caption | x_t) = sum_phi w(T_caption, phi) / sum w

The pull is sum_T p(T | x_t) (x0_cond - x0(T)): it vanishes once x_t tells the texture. That happens when the
difference the caption makes outweighs the noise, |x0(T) - x0(T')| alpha_t / sigma_t ~ 1: for a texture of
amplitude a over n pixel values, at sigma_t / alpha_t ~ a sqrt(n). Half a 32 px frame is n ~ 1500 values,
so a full-contrast texture (a ~ 0.65) is told at sigma/alpha ~ 25, t ~ 0.97 on the cosine schedule, long
before detail is drawn (t < 0.4, sigma/alpha < 0.73), and staying untold until t < 0.4 needs a < 0.02.

Worlds (textured captions, each with its geometry, colour and texture from the grammar):
  B                regime B: the texture on the image grid (phase 0 in every image)
  D                B with the texture at a random phase per image (textured.make_scene(phased=True))
  D, dark 0.8      D with a fainter texture (dark tone 0.8 of the bright one instead of 0.35)
  D, dark 0.95     fainter still
  D, dark 0.99     nearly invisible

    python benchmarks/archive/exact_pull.py [--n 24] [--phases 16]

Writes benchmarks/archive/results/exact_pull.csv (per world and step: t, the pull coarser and finer than the texture
period, p(caption's texture | x_t)) and benchmarks/archive/exact_pull.png, with the trained models' pull from
thresholding_regimes.py's diagnose tables beside the exact one.
"""
import argparse
import csv
import math
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from minimagen import diffusion as D
from minimagen import metrics
from minimagen.data import from_uint8, load_spec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the scripts kept there
from common import save_rows  # noqa: E402
from regimes import _low_pass  # noqa: E402  (benchmarks/archive/regimes.py)
from textured import captions as textured_captions, make_scene, parse, render_scene  # noqa: E402
WORLDS = {"B": dict(phased=False), "D": dict(phased=True), "D, dark 0.8": dict(phased=True, dark=0.8),
          "D, dark 0.95": dict(phased=True, dark=0.95), "D, dark 0.99": dict(phased=True, dark=0.99)}
TRAINED = {"B (trained v model)": "thresholding_regimes_diagnose.csv", "C (trained v model)": "thresholding_regimes_diagnose_C.csv"}


def hypotheses(caption: str, seed, world: dict, phases: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every render of this caption's scene under each texture (and phase): ([H, 3, 32, 32], texture index
    [H], the index of the real image among them). The real image has the caption's texture at the scene's phase."""
    spec = load_spec()["textured"]
    scene = make_scene(caption, seed, phased=world["phased"])
    obj = scene["objects"][0]
    if "dark" in world:
        obj["dark"] = world["dark"]
    grid = [(i / phases, j / phases) for i in range(phases) for j in range(phases)] if world["phased"] else [(0.0, 0.0)]
    true_phase = tuple(obj.get("phase", (0.0, 0.0)))
    renders, owner, real = [], [], None
    for k, texture in enumerate(spec["textures"]):
        for phase in grid + ([true_phase] if texture == obj["texture"] and world["phased"] else []):
            if texture == obj["texture"] and phase == true_phase:
                real = len(renders)
            renders.append(from_uint8(torch.from_numpy(render_scene(dict(scene, objects=[dict(
                obj, texture=texture, phase=list(phase))]), 32))))
            owner.append(k)
    return torch.stack(renders).double(), torch.tensor(owner), real


def posterior(xt, alpha, sigma, flat, mine):
    """(x0_uncond, x0_cond, p(caption's texture | x_t)): the exact posterior means over the renders `flat` [H, D],
    all of them and the caption's (`mine`), for x_t [D] at (alpha, sigma)."""
    w = torch.softmax(-((xt - alpha * flat) ** 2).sum(1) / (2 * sigma ** 2), 0)
    return w @ flat, (w[mine, None] * flat[mine]).sum(0) / w[mine].sum(), w[mine].sum().item()


def exact_pull(caption, seed, world, phases, steps, noise_seed) -> dict[str, torch.Tensor]:
    """Per sampling level t (the sampler's own grid): the exact pull's parts and p(caption's texture | x_t),
    on x_t = alpha x0 + sigma eps from the real image (one fixed eps)."""
    x0s, owner, real = hypotheses(caption, seed, world, phases)
    want = load_spec()["textured"]["textures"].index(parse(caption)["texture"])
    eps = torch.randn(x0s.shape[1:], generator=torch.Generator().manual_seed(noise_seed)).double()
    period = 32 // (2 * load_spec()["textured"]["period"]) * 2
    flat = x0s.flatten(1)
    out = {"delta_low": [], "delta_high": [], "p_caption": []}
    for log_snr in D.sampling_log_snrs(steps)[:steps]:
        alpha, sigma = (v.item() for v in D.alpha_sigma(log_snr.double()))
        uncond, cond, p = posterior((alpha * x0s[real] + sigma * eps).flatten(), alpha, sigma, flat, owner == want)
        delta = (cond - uncond).view(1, *x0s.shape[1:]).float()
        low = _low_pass(delta, period)
        out["delta_low"].append(low.abs().mean().item())
        out["delta_high"].append((delta - low).abs().mean().item())
        out["p_caption"].append(p)
    return {k: torch.tensor(v) for k, v in out.items()}


def exact_sample(caption, seed, world, phases, guidance_scale, method, steps, noise_seed, percentile=0.9, cap=1.5):
    """The guided DDIM sampler (25 steps, as everywhere) with this exact denoiser: x0 = x0_u + w (x0_c - x0_u),
    thresholded by `method`, from pure noise. -> (the sample [1, 3, 32, 32], the real image, the object mask)."""
    x0s, owner, real = hypotheses(caption, seed, world, phases)
    want = load_spec()["textured"]["textures"].index(parse(caption)["texture"])
    mine, flat = owner == want, x0s.flatten(1)
    log_snrs = D.sampling_log_snrs(steps).double()
    x = torch.randn(x0s.shape[1:], generator=torch.Generator().manual_seed(noise_seed)).double()[None]
    for i in range(steps):
        alpha, sigma = (v.item() for v in D.alpha_sigma(log_snrs[i]))
        uncond, cond, _ = posterior(x.flatten(), alpha, sigma, flat, mine)
        raw = (uncond + guidance_scale * (cond - uncond)).view_as(x)
        x0 = D.threshold(raw, D.Thresholding(method, percentile, cap))
        if i == steps - 1:
            break
        x = D.ddim_step(x, x0, log_snrs[i:i + 1], log_snrs[i + 1:i + 2], 0.0)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    for o in metrics.detect(x0s[real][None].float())[0]:
        mask |= o["mask"]
    return x0.float(), x0s[real].float(), mask


def texture_kept(sample, real, mask) -> tuple[float, float]:
    """(the sample's luminance spread inside the object over the real image's: 1 = as real, phase-free;
    the share of the object's values pinned at +-1)."""
    lum = lambda x: x.mean(-3)[..., mask]
    return (lum(sample).std() / lum(real).std()).item(), (sample[..., mask[None].expand(3, -1, -1)].abs() > 0.999).float().mean().item()


def trained_curves() -> dict[str, tuple[list[float], list[float]]]:
    """The trained v models' high-pass pull per step (thresholding_regimes.py diagnose, static, w = 15 / 10)."""
    out = {}
    for name, file in TRAINED.items():
        path = HERE / "results" / file
        if path.exists():
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if r["regime"] == name[0]]
            out[f"{name}, w = {float(rows[0]['guidance_scale']):g}"] = ([float(r["t"]) for r in rows],
                                                                         [float(r["delta_high"]) for r in rows])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=24, help="textured training captions, one scene each")
    ap.add_argument("--phases", type=int, default=16, help="phase grid per axis in a phased world")
    ap.add_argument("--steps", type=int, default=25, help="the sampler's levels (DDIM 25 in every other table)")
    ap.add_argument("--guided", action="store_true", help="also sample with the exact denoiser under guidance and "
                    "each thresholding method (dynamic: p 0.9, cap 1.5): results/exact_pull_guided.csv")
    args = ap.parse_args()
    start = time.time()
    captions = textured_captions("train")
    probe = [captions[i] for i in np.random.default_rng(0).choice(len(captions), args.n, replace=False)]
    probe = [c for c in probe if "plain" not in c]  # 'plain' has no detail to decide (its pull is the others')
    t = torch.linspace(1.0, 0.0, args.steps + 1)[:args.steps]
    rows, curves = [], {}
    for name, world in WORLDS.items():
        runs = [exact_pull(c, (7, i), world, args.phases, args.steps, noise_seed=i) for i, c in enumerate(probe)]
        mean = {k: torch.stack([r[k] for r in runs]).mean(0) for k in runs[0]}
        curves[name] = mean
        for i in range(args.steps):
            rows.append(dict(world=name, step=i, t=round(t[i].item(), 4), n_scenes=len(probe),
                             **{k: round(v[i].item(), 6) for k, v in mean.items()}))
        told = (mean["p_caption"] >= 0.9).nonzero()
        late = t < 0.4
        print(f"{name:14s}: p(caption's texture | x_t) reaches 0.9 at t = {t[told.min()].item() if len(told) else math.nan:.2f}; "
              f"at t < 0.4 the pull is {mean['delta_high'][late].mean():.5f} finer than the texture, "
              f"{mean['delta_low'][late].mean():.5f} coarser ({time.time() - start:.0f} s)", flush=True)
    save_rows(rows, HERE / "results" / "exact_pull.csv", list(rows[0]))
    if args.guided:  # what a perfect model's guided samples keep, per thresholding method
        guided_rows = []
        for name, world in WORLDS.items():
            for w in (1.0, 3.0, 10.0):
                for method in ("none", "static", "dynamic"):
                    kept = [texture_kept(*exact_sample(c, (7, i), world, args.phases, w, method, args.steps, 100 + i))
                            for i, c in enumerate(probe)]
                    spread, pinned = torch.tensor(kept).T
                    guided_rows.append(dict(world=name, guidance_scale=w, method=method, n_scenes=len(probe),
                                            texture_spread=round(spread.mean().item(), 4),
                                            texture_spread_se=round((spread.std() / len(probe) ** 0.5).item(), 4),
                                            pinned=round(pinned.mean().item(), 4)))
                    print(f"{name:14s} w {w:4g} {method:8s}: texture spread {spread.mean():.3f} ± "
                          f"{spread.std() / len(probe) ** 0.5:.3f} (1 = as real), pinned at ±1 {pinned.mean():.3f} "
                          f"({time.time() - start:.0f} s)", flush=True)
        save_rows(guided_rows, HERE / "results" / "exact_pull_guided.csv", list(guided_rows[0]))
    fig, (ax_p, ax_d) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110)
    for i, (name, m) in enumerate(curves.items()):
        ax_p.plot(t, m["p_caption"], "o-", ms=3, color=plt.cm.viridis(i / len(curves)), label=name)
        ax_d.semilogy(t, m["delta_high"].clamp(min=1e-7), "o-", ms=3, color=plt.cm.viridis(i / len(curves)),
                      label=f"{name} (exact)")
    for j, (name, (tt, dh)) in enumerate(trained_curves().items()):
        ax_d.semilogy(tt, dh, "--", color=("tab:red", "tab:orange")[j], label=name)
    for ax in (ax_p, ax_d):
        ax.axvspan(0, 0.4, color="grey", alpha=0.12)
        ax.invert_xaxis()
        ax.set_xlabel("t (1 = noise, 0 = data; sampling runs left to right)")
        ax.legend(fontsize=7)
    ax_p.set(ylabel="p(caption's texture | x_t)", ylim=(0, 1.03),
             title="when the noisy image tells the caption's texture (exact)")
    ax_d.set(ylabel="mean |x0_cond - x0_uncond|, finer than the texture",
             title="the caption's pull on detail (w = 1; shaded: t < 0.4)")
    fig.tight_layout()
    fig.savefig(HERE / "exact_pull.png")
    print(f"wrote {HERE / 'results' / 'exact_pull.csv'} and {HERE / 'exact_pull.png'}")


if __name__ == "__main__":
    main()
