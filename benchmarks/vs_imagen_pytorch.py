"""minimagen vs imagen-pytorch (the PyPI package, lucidrains): training step and sampling speed on the CPU,
at the same parameter count, resolution and batch, measured alternately in one process.

Setup (once). imagen-pytorch goes into its own virtual environment outside the repository, never into
minimagen's: `--system-site-packages` reuses the installed torch (and minimagen), the constraint keeps
pip from replacing that torch.

    python -m venv --system-site-packages /work/peer-venv
    /work/peer-venv/bin/pip install imagen-pytorch -c <(echo torch==2.13.0)

Run (from the repository root, with the venv's python):

    /work/peer-venv/bin/python benchmarks/vs_imagen_pytorch.py --threads 1
    /work/peer-venv/bin/python benchmarks/vs_imagen_pytorch.py --threads 2 --repeats 9 --profile

prints a table (ms per training step and images per second when sampling, ours and the peer's, min /
median / max over rounds, and the ratio peer/ours per round) and writes benchmarks/vs_imagen_pytorch.png.

What is compared
  ours   Unet(unet_preset("base32", 512)) (text dim 512, as t5-small), one training step = zero_grad,
         minimagen.imagen.stage_loss (v objective, uniform weighting, 10% caption dropout), backward, AdamW.
  peer   imagen_pytorch.Unet inside imagen_pytorch.Imagen, trained through Imagen.forward (its p_losses),
         set to the same loss: pred_objectives="v", min-SNR weighting off, cond_drop_prob 0.1, images
         already in [-1, 1] (auto_normalize_img=False); AdamW on the same settings. PEER_UNET gives the
         shape: the same three levels at 32 px with the same ResNet blocks per level (imagen-pytorch's
         num_resnet_blocks counts the blocks AFTER each level's first, cross-attending, block, hence
         (0, 1, 2) for our (1, 2, 3)), its memory-efficient ordering (= our Efficient U-Net ordering),
         cross-attention at the two lower levels, self-attention at the lowest; its width (dim) is the one
         whose parameter count falls within 10% of ours. Everything else is imagen-pytorch's default
         (8 heads of 64, Perceiver text resampler, text padded to max_text_len 256, global-context attention).
  Both get the same images, the same random text embeddings [32, 12, 512] and the same masks (captions of
  6-12 tokens, padding zeroed as a T5 encoder leaves it), passed in directly: neither runs a T5.
  Sampling: a batch of 8 at 32 px, classifier-free guidance scale 3, 25 ancestral (DDPM) steps, dynamic
  thresholding, for both: ours through Imagen.sample (a stub text encoder hands it the embeddings; the
  conditional and unconditional passes go in one batch of 16), the peer through its Imagen.sample with
  timesteps=25 (two passes of 8 per step; cfg_remove_parallel_component=False, so it is plain CFG too).
  Precisions: fp32, and bf16 under torch.autocast("cpu", torch.bfloat16) for both.
  Timing: after warm-up, `--repeats` rounds; each round runs k steps of each model back to back, the order
  alternating ours-peer / peer-ours, so slow drifts of a shared machine's load hit both alike. The ratio
  is taken within each round (peer ms / ours ms: > 1 means ours is faster).

Running imagen-pytorch offline (what this script does before importing it)
  1. imagen-pytorch calls t5.get_encoded_dim("google/t5-v1_1-base") at IMPORT time (default arguments of
     Unet and Unet3D, and configs.py), i.e. T5Config.from_pretrained from the Hugging Face hub. We create a
     throwaway hub cache in a temporary directory holding only that model's config.json (d_model 768 and
     the other fields of google/t5-v1_1-base), point HF_HUB_CACHE at it and set HF_HUB_OFFLINE=1 before
     transformers is imported: the lookup is then answered locally and nothing is downloaded. The value
     is only a default: we pass text_embed_dim=512 to the Unet and to Imagen, so no T5 is ever built.
  2. pip's torchvision for torch 2.13 is a CUDA build; on a CPU-only torch its C++ ops library cannot load
     and `import torchvision` (which imagen-pytorch does) fails registering a fake kernel for
     torchvision::nms. When that library does not load, we declare the two op schemas it registers fakes
     for (nms, qnms): torchvision's Python parts then import. imagen-pytorch uses none of its C++ ops.
"""
import argparse
import atexit
import datetime
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's minimagen, whichever python runs the script

PEER_T5_NAME = "google/t5-v1_1-base"  # imagen_pytorch.t5.DEFAULT_T5_NAME
PEER_T5_CONFIG = {  # the fields of the hub's config.json for google/t5-v1_1-base
    "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "d_model": 768, "d_ff": 2048,
    "d_kv": 64, "num_heads": 12, "num_layers": 12, "num_decoder_layers": 12, "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32, "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-06, "initializer_factor": 1.0, "is_encoder_decoder": True,
    "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}


def offline_hub_cache():
    """A temporary Hugging Face cache that answers T5Config.from_pretrained(PEER_T5_NAME) with no network.
    Must run before transformers / huggingface_hub are imported (they read HF_HUB_CACHE at import)."""
    cache = tempfile.mkdtemp(prefix="vs_imagen_pytorch_hf_")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    repo = Path(cache) / ("models--" + PEER_T5_NAME.replace("/", "--"))
    revision = "0" * 40  # any commit hash: refs/main points the lookup to snapshots/<it>
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision / "config.json").write_text(json.dumps(PEER_T5_CONFIG, indent=1))
    os.environ["HF_HUB_CACHE"] = cache
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def torchvision_without_ops():
    """If torchvision's C++ ops library cannot load (a CUDA build next to a CPU torch), declare the op
    schemas its import registers fake kernels for, so that its Python parts still import."""
    import torch
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return
    libs = sorted(Path(spec.origin).parent.glob("_C*.so")) + sorted(Path(spec.origin).parent.glob("_C*.pyd"))
    try:
        torch.ops.load_library(str(libs[0]))
        return  # it loads: nothing to do
    except (IndexError, OSError):
        pass
    global _TORCHVISION_STUB  # the Library must outlive this call
    _TORCHVISION_STUB = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _TORCHVISION_STUB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


offline_hub_cache()
import torch  # noqa: E402  (after the environment above is set)
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

torchvision_without_ops()
try:
    import imagen_pytorch  # noqa: E402
except ImportError:
    sys.exit(__doc__.split("Run (")[0] + "\nimagen_pytorch is not importable from " + sys.executable +
             ": run this script with the peer environment's python (see Setup above).")

from common import cpu_name  # noqa: E402
from minimagen.imagen import Imagen, stage_loss  # noqa: E402
from minimagen.unet import Unet, count_parameters, unet_preset  # noqa: E402

from common import usable_precisions  # noqa: E402

IMAGE_SIZE, TEXT_DIM, TEXT_LEN = 32, 512, 12
PEER_UNET = dict(dim=48, dim_mults=(1, 2, 2), num_resnet_blocks=(0, 1, 2), layer_attns=(False, False, True),
                 layer_cross_attns=(False, True, True), memory_efficient=True)
SAMPLE_BATCH, SAMPLE_STEPS, GUIDANCE = 8, 25, 3.0


# ---------------------------------------------------------------- inputs and models
def make_inputs(batch: int, seed: int = 0):
    """Images in [-1, 1], text embeddings [B, L, 512] and masks: caption lengths 6..L, padding zeroed."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g) * 2 - 1
    embeds = torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=g)
    lengths = torch.randint(6, TEXT_LEN + 1, (batch,), generator=g)
    mask = torch.arange(TEXT_LEN)[None] < lengths[:, None]
    return images, embeds * mask[..., None], mask


class FixedEmbeddings:
    """A stand-in text encoder for minimagen's Imagen.sample: returns the given embeddings, runs no T5."""
    name, dim = "fixed-random-embeddings", TEXT_DIM

    def __init__(self, embeds, mask):
        self.embeds, self.mask = embeds, mask

    def encode(self, captions):
        return self.embeds[:len(captions)], self.mask[:len(captions)]


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def build_ours(seed: int = 0):
    torch.manual_seed(seed)
    unet = Unet(unet_preset("base32", TEXT_DIM))
    return unet, torch.optim.AdamW(unet.parameters(), lr=1e-4)


def build_peer(seed: int = 0):
    torch.manual_seed(seed)
    unet = imagen_pytorch.Unet(text_embed_dim=TEXT_DIM, **PEER_UNET)
    imagen = imagen_pytorch.Imagen(unets=(unet,), image_sizes=(IMAGE_SIZE,), text_embed_dim=TEXT_DIM,
                                   timesteps=SAMPLE_STEPS, cond_drop_prob=0.1, pred_objectives="v",
                                   min_snr_loss_weight=False, auto_normalize_img=False, dynamic_thresholding=True)
    unet = imagen.unets[0]  # Imagen re-instantiates the U-Net (cast_model_parameters): count and train this one
    return imagen, unet, torch.optim.AdamW(unet.parameters(), lr=1e-4)


def train_steps(batch: int, seed: int = 0):
    """{"ours": step, "peer": step} and the two U-Nets; step(bf16) runs one full training step."""
    images, embeds, mask = make_inputs(batch, seed)
    ours, ours_opt = build_ours(seed)
    imagen, peer, peer_opt = build_peer(seed)

    def ours_step(bf16):
        ours.train()
        ours_opt.zero_grad(set_to_none=True)
        with autocast(bf16):
            loss = stage_loss(ours, images, embeds, mask)
        loss.backward()
        ours_opt.step()
        return loss

    def peer_step(bf16):
        imagen.train()
        peer_opt.zero_grad(set_to_none=True)
        with autocast(bf16):
            loss = imagen(images, text_embeds=embeds, text_masks=mask, unet_number=1)
        loss.backward()
        peer_opt.step()
        return loss
    return {"ours": ours_step, "peer": peer_step}, {"ours": ours, "peer": peer}, imagen


def sample_fns(ours_unet, peer_imagen, seed: int = 0):
    """{"ours": f, "peer": f}; f(bf16) samples SAMPLE_BATCH images with guidance, SAMPLE_STEPS steps."""
    _, embeds, mask = make_inputs(SAMPLE_BATCH, seed + 1)
    ours_imagen = Imagen([ours_unet], FixedEmbeddings(embeds, mask), objective="v", schedule="cosine")
    captions = ["a caption"] * SAMPLE_BATCH  # only their number matters: FixedEmbeddings supplies the embeddings

    def ours(bf16):
        return ours_imagen.sample(captions, guidance_scale=GUIDANCE, thresholding="dynamic", steps=SAMPLE_STEPS,
                                  sampler="ddpm", seed=seed, bf16=bf16)

    def peer(bf16):
        with autocast(bf16):
            return peer_imagen.sample(text_embeds=embeds, text_masks=mask, cond_scale=GUIDANCE,
                                      cfg_remove_parallel_component=False, use_tqdm=False)
    return {"ours": ours, "peer": peer}


# ---------------------------------------------------------------- measuring
def alternate(fns, bf16: bool, k: int, repeats: int, warmup: int):
    """Rounds of (k calls of one, k calls of the other), order alternating; seconds per call per round."""
    for _ in range(warmup):
        for name in fns:
            fns[name](bf16)
    secs = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            for _ in range(k):
                fns[name](bf16)
            secs[name].append((time.perf_counter() - start) / k)
    return secs


def spread(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def step_gflops(step, bf16: bool) -> float:
    flops = FlopCounterMode(display=False)
    with flops:
        step(bf16)
    return flops.get_total_flops() / 1e9


def profile_steps(steps, bf16: bool, rows: int = 15):
    """torch.profiler over 2 training steps of each: the ops with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile
    for name, step in steps.items():
        step(bf16)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                step(bf16)
        print(f"\n--- torch.profiler, {name}, {'bf16' if bf16 else 'fp32'}, 2 training steps ---")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


# ---------------------------------------------------------------- reporting
def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"load average {os.getloadavg()}" if hasattr(os, "getloadavg") else "unknown"


def format_table(results) -> str:
    head = (f"{'what':<26} {'prec':<5} {'ours min/med/max':>22} {'peer min/med/max':>22} "
            f"{'peer/ours min/med/max':>22}")
    lines = [head, "-" * len(head)]
    for r in results:
        o, p, q = r["ours"], r["peer"], r["ratio"]
        fmt = "{:.0f}/{:.0f}/{:.0f}" if r["unit"] == "ms/step" else "{:.2f}/{:.2f}/{:.2f}"
        lines.append(f"{r['what'] + ' (' + r['unit'] + ')':<26} {r['precision']:<5} "
                     f"{fmt.format(o['min'], o['median'], o['max']):>22} {fmt.format(p['min'], p['median'], p['max']):>22} "
                     f"{'{:.2f}/{:.2f}/{:.2f}'.format(q['min'], q['median'], q['max']):>22}")
    return "\n".join(lines)


def markdown_table(results) -> str:
    lines = ["| measure | precision | ours (min / median / max) | imagen-pytorch (min / median / max) | "
             "ours faster by (peer/ours per round: min / median / max) |", "|---|---|---|---|---|"]
    for r in results:
        o, p, q = r["ours"], r["peer"], r["ratio"]
        fmt = "{:.0f} / {:.0f} / {:.0f}" if r["unit"] == "ms/step" else "{:.2f} / {:.2f} / {:.2f}"
        lines.append(f"| {r['what']} ({r['unit']}) | {r['precision']} | {fmt.format(o['min'], o['median'], o['max'])} | "
                     f"{fmt.format(p['min'], p['median'], p['max'])} | "
                     f"{q['min']:.2f}x / **{q['median']:.2f}x** / {q['max']:.2f}x |")
    return "\n".join(lines)


def plot(results, title: str, batch: int):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, unit, label in ((axes[0], "ms/step", f"training step, batch {batch} (ms, lower is better)"),
                            (axes[1], "images/s", f"sampling, batch {SAMPLE_BATCH}, {SAMPLE_STEPS} steps, "
                                                  f"w={GUIDANCE:g} (images/s, higher is better)")):
        rows = [r for r in results if r["unit"] == unit]
        for j, (who, colour) in enumerate((("ours", "tab:blue"), ("peer", "tab:orange"))):
            xs = [i + (j - 0.5) * 0.38 for i in range(len(rows))]
            med = [r[who]["median"] for r in rows]
            err = [[m - r[who]["min"] for m, r in zip(med, rows)], [r[who]["max"] - m for m, r in zip(med, rows)]]
            ax.bar(xs, med, width=0.38, color=colour, label="minimagen" if who == "ours" else "imagen-pytorch")
            ax.errorbar(xs, med, yerr=err, fmt="none", color="k", lw=0.8, capsize=3)
        for i, r in enumerate(rows):
            top = max(r["ours"]["max"], r["peer"]["max"])
            ax.text(i, top * 1.02, f"{r['ratio']['median']:.2f}x", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(rows)), [r["precision"] for r in rows])
        ax.set_title(label, fontsize=8)
        ax.margins(y=0.15)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7, help="rounds (each: k steps of ours and k of the peer)")
    p.add_argument("--k", type=int, default=3, help="training steps per model per round")
    p.add_argument("--sample-k", type=int, default=1, help="sampling calls per model per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--no-sampling", action="store_true")
    p.add_argument("--profile", action="store_true", help="also run torch.profiler on a training step of each")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".png")))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.k < 1:
        p.error("--repeats and --k must be >= 1")
    args.precisions, skipped = usable_precisions(args.precisions)
    if skipped:
        print(skipped)
    if not args.precisions:
        p.error("nothing to measure: this CPU has no native bf16; add --precisions fp32")

    steps, unets, peer_imagen = train_steps(args.batch)
    n_ours, n_peer = count_parameters(unets["ours"]), count_parameters(unets["peer"])
    where, started, load_before = machine(), datetime.datetime.now(), uptime()
    print(f"{started:%Y-%m-%d %H:%M} | {where}\nload before: {load_before}")
    print(f"parameters: ours {n_ours:,} (base32, text dim {TEXT_DIM}) | imagen-pytorch {n_peer:,} "
          f"({n_peer / n_ours - 1:+.1%}; Unet({', '.join(f'{k}={v}' for k, v in PEER_UNET.items())}))")
    if abs(n_peer / n_ours - 1) > 0.10:
        print("WARNING: parameter counts differ by more than 10%")
    print(f"training: batch {args.batch}, {IMAGE_SIZE} px, {args.warmup} warm-up steps each, then {args.repeats} "
          f"rounds of {args.k} steps each, alternating", flush=True)

    results = []
    for prec in args.precisions:
        bf16 = prec == "bf16"
        flops = {name: step_gflops(step, bf16) for name, step in steps.items()}
        print(f"  {prec}: GFLOP per training step (FlopCounterMode): ours {flops['ours']:.1f}, "
              f"peer {flops['peer']:.1f}", flush=True)
        secs = alternate(steps, bf16, args.k, args.repeats, args.warmup)
        ms = {n: [1000 * s for s in v] for n, v in secs.items()}
        ratio = [pe / ou for pe, ou in zip(ms["peer"], ms["ours"])]
        results.append({"what": "training step", "unit": "ms/step", "precision": prec, "ours": spread(ms["ours"]),
                        "peer": spread(ms["peer"]), "ratio": spread(ratio), "gflops": flops})
        print(f"  {prec}: ms/step ours {[round(v) for v in ms['ours']]} peer {[round(v) for v in ms['peer']]}", flush=True)
    if not args.no_sampling:
        samplers = sample_fns(unets["ours"], peer_imagen)
        for prec in args.precisions:
            bf16 = prec == "bf16"
            secs = alternate(samplers, bf16, args.sample_k, args.repeats, warmup=1)
            ips = {n: [SAMPLE_BATCH / s for s in v] for n, v in secs.items()}
            ratio = [o / pe for o, pe in zip(ips["ours"], ips["peer"])]  # = peer seconds / ours seconds
            results.append({"what": "sampling", "unit": "images/s", "precision": prec, "ours": spread(ips["ours"]),
                            "peer": spread(ips["peer"]), "ratio": spread(ratio)})
            print(f"  {prec}: sampling images/s ours {[round(v, 2) for v in ips['ours']]} "
                  f"peer {[round(v, 2) for v in ips['peer']]}", flush=True)
    load_after = uptime()
    print(f"load after: {load_after}\n")
    print(format_table(results))
    print("\nratio = peer time / our time per round (> 1: ours is faster)\n")
    print(markdown_table(results))
    title = (f"minimagen base32 ({n_ours / 1e6:.2f} M) vs imagen-pytorch ({n_peer / 1e6:.2f} M), {IMAGE_SIZE} px, "
             f"{started:%Y-%m-%d}, {where}; labels: median peer/ours")
    plot(results, title, args.batch).savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")
    if args.profile:
        for prec in args.precisions:
            profile_steps(steps, prec == "bf16")


if __name__ == "__main__":
    main()
