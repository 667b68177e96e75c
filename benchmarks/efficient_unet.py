"""Efficient vs classic U-Net ordering [Imagen, Appendix B.1]: time per training step, peak memory, FLOPs.

One training step = forward (minimagen.imagen.stage_loss, the loss the Trainer uses) + backward +
AdamW, on random images and random text embeddings (the frozen T5 is not part of the step: its
outputs are cached in training). `efficient=False` builds the classic DDPM ordering with nearly the
same parameters, so the comparison is at (almost) equal parameter count.

    python benchmarks/efficient_unet.py                     # base32 and sr64, batch 32, fp32 (+ bf16 where fast)
    python benchmarks/efficient_unet.py --presets base32 --batch 32 --repeats 10

prints a table and writes benchmarks/efficient_unet.png. Importable (notebooks/05_efficient_unet.ipynb):

    from efficient_unet import measure_step
    measure_step(config, batch=32, bf16=False, repeats=5)
    -> {"ms_median", "ms_min", "ms_max", "peak_mb", "saved_mb", "gflops", "params"}

Timings on a shared CPU are noisy: every figure is the median (and range) of `repeats` steps after one
warm-up step. Peak memory is the largest total size of the model's tensors alive during one step (weights,
gradients and AdamW moments included): what the step allocates on top of the resting state (on CUDA from
torch.cuda.max_memory_allocated, on the CPU by replaying the allocation events torch.profiler records with
profile_memory=True) plus the resting state itself, counted from the tensors.
"""
import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from minimagen.device import autocast, pick_device, resolve_bf16
from minimagen.imagen import stage_loss
from minimagen.unet import Unet, count_parameters, unet_preset

TEXT_LEN = 12  # tokens per caption (the shapes captions are 6-12 tokens long)


def make_inputs(config, batch: int, device, seed: int = 0):
    """Random training inputs for one stage: images in [-1, 1], text embeddings and a full mask."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, config.image_size, config.image_size, generator=g) * 2 - 1
    embeds = torch.randn(batch, TEXT_LEN, config.text_embed_dim, generator=g)
    mask = torch.ones(batch, TEXT_LEN, dtype=torch.bool)
    return images.to(device), embeds.to(device), mask.to(device)


def make_step(config, batch: int, bf16: bool, device, seed: int = 0):
    """(unet, step): step() runs one training step: zero_grad, loss (as the Trainer computes it), backward, AdamW."""
    torch.manual_seed(seed)
    unet = Unet(config).to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    images, embeds, mask = make_inputs(config, batch, device, seed)
    lowres_size = config.image_size // 2 if config.lowres_cond else None  # SR: a 2x stage

    def step():
        opt.zero_grad(set_to_none=True)  # first: the last step's gradients are freed before the forward pass
        with autocast(device, bf16):
            loss = stage_loss(unet, images, embeds, mask, lowres_size)
        loss.backward()
        opt.step()
        return loss
    return unet, step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, repeats: int, device, warmup: int = 1) -> list[float]:
    """Milliseconds of each of `repeats` steps, after `warmup` untimed steps."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(1000 * (time.perf_counter() - start))
    return times


def instrumented_step(unet, step, device, memory: bool = True) -> dict:
    """Run one more step (after a warm-up step, so AdamW's state exists) and count, at the same time:
    gflops    FLOPs of forward + backward (FlopCounterMode: convolutions and matmuls);
    saved_mb  tensors the forward pass keeps for backward (autograd's saved-tensor hooks, once per
              storage, parameters excluded): the part of memory that grows with batch and resolution;
    peak_mb   the largest total size of this model's tensors alive during the step, weights, gradients and
              AdamW moments included (CUDA: max_memory_allocated; CPU: torch.profiler's allocation events)."""
    params = {p.untyped_storage().data_ptr() for p in unet.parameters()}
    saved = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            saved[s.data_ptr()] = s.nbytes()
        return t
    flops = FlopCounterMode(display=False)
    if not memory:
        with flops:
            step()
        return {"gflops": flops.get_total_flops() / 1e9}
    unet.zero_grad(set_to_none=True)  # free them now: the profiler cannot see frees of older blocks
    resting = _resting_bytes(unet)
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)  # this model's resting state and whatever else is on the GPU
        else:
            from torch.profiler import ProfilerActivity, profile
            stack.enter_context(_quiet_stderr())  # the profiler's C++ start/stop lines would land in notebook cells
            prof = stack.enter_context(profile(activities=[ProfilerActivity.CPU], profile_memory=True))
        stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
        stack.enter_context(flops)
        step()
    if device.type == "cuda":
        _sync(device)
        peak = resting + torch.cuda.max_memory_allocated(device) - before  # not counting other models on the GPU
    else:
        peak = resting + _cpu_peak_bytes(prof)
    return {"gflops": flops.get_total_flops() / 1e9, "peak_mb": peak / 2**20, "saved_mb": sum(saved.values()) / 2**20}


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 (where C++ code logs) to /dev/null for a while; Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _resting_bytes(unet) -> int:
    """Bytes held between steps: weights, gradients (if any) and AdamW's two moments (one step has run)."""
    return sum(p.numel() * p.element_size() * (1 + (p.grad is not None) + 2) for p in unet.parameters())


def _cpu_peak_bytes(prof) -> int:
    """Most bytes allocated on top of what was alive when profiling began: every CPU allocation (+bytes)
    and free (-bytes), in time order, summed. (prof.profiler.kineto_results holds the raw events;
    prof.events() attributes allocations to ops and loses their order.)"""
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    running = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        running += e.nbytes()
        peak = max(peak, running)
    return peak


def measure_step(config, batch: int = 32, bf16: bool = False, repeats: int = 5, device=None,
                 memory: bool = True) -> dict:
    """One training step of Unet(config) (bf16=True: under bf16 autocast): ms per step (median, min, max
    of `repeats` steps after one warm-up), parameters, GFLOPs and, with memory=True, peak_mb and saved_mb."""
    device = pick_device(device)
    bf16 = resolve_bf16(device, bf16)
    unet, step = make_step(config, batch, bf16, device)
    times = time_step(step, repeats, device)
    return {"ms_median": statistics.median(times), "ms_min": min(times), "ms_max": max(times),
            "params": count_parameters(unet), **instrumented_step(unet, step, device, memory)}


def compare(preset: str, batch: int, precisions, repeats: int, text_embed_dim: int = 128, device=None) -> list[dict]:
    """Efficient vs classic ordering of one preset, for each precision (False = fp32, True = bf16)."""
    config = unet_preset(preset, text_embed_dim)
    rows = []
    for bf16 in precisions:
        for efficient in (True, False):
            r = measure_step(replace(config, efficient=efficient), batch, bf16, repeats, device)
            rows.append({"preset": preset, "ordering": "efficient" if efficient else "classic",
                         "precision": "bf16" if bf16 else "fp32", **r})
            print(f"  measured {preset} {rows[-1]['ordering']} {rows[-1]['precision']}: "
                  f"{r['ms_median']:.0f} ms", flush=True)
    return rows


def format_table(rows) -> str:
    head = f"{'preset':<8} {'ordering':<10} {'prec':<5} {'params':>7} {'GFLOP/step':>10} {'ms/step median':>14} " \
           f"{'(min-max)':>13} {'peak MB':>8} {'saved MB':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        spread = f"({r['ms_min']:.0f}-{r['ms_max']:.0f})"
        lines.append(f"{r['preset']:<8} {r['ordering']:<10} {r['precision']:<5} {r['params'] / 1e6:>6.2f}M "
                     f"{r['gflops']:>10.1f} {r['ms_median']:>14.0f} {spread:>13} {r['peak_mb']:>8.0f} {r['saved_mb']:>9.0f}")
    return "\n".join(lines)


def plot(rows):
    """Bar charts of ms per step (median, min-max bars) and peak MB, efficient vs classic; returns the figure."""
    import matplotlib.pyplot as plt
    labels = [f"{r['preset']}\n{r['precision']}" for r in rows if r["ordering"] == "efficient"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, key, title in ((axes[0], "ms_median", "ms per training step (median)"), (axes[1], "peak_mb", "peak MB")):
        for k, ordering in enumerate(("efficient", "classic")):
            vals = [r[key] for r in rows if r["ordering"] == ordering]
            xs = [i + (k - 0.5) * 0.38 for i in range(len(vals))]
            ax.bar(xs, vals, width=0.38, label=ordering)
            if key == "ms_median":
                lo = [r[key] - r["ms_min"] for r in rows if r["ordering"] == ordering]
                hi = [r["ms_max"] - r[key] for r in rows if r["ordering"] == ordering]
                ax.errorbar(xs, vals, yerr=[lo, hi], fmt="none", color="k", lw=0.8, capsize=2)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    batch = rows[0].get("batch", "")
    fig.suptitle(f"Efficient vs classic U-Net ordering, batch {batch}, {rows[0].get('machine', '')}", fontsize=9)
    fig.tight_layout()
    return fig


def machine() -> str:
    device = pick_device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["base32", "sr64"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--text-embed-dim", type=int, default=128, help="128: the tiny T5; 512: t5-small")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".png")))
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice); 1 is steadier on a CPU shared with other jobs")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device()
    precisions = [False, True] if resolve_bf16(device) else [False]
    where = machine()
    load = f" | load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M} | {where} | torch {torch.__version__} | batch {args.batch} | "
          f"median of {args.repeats} steps after 1 warm-up{load}", flush=True)
    rows = []
    for preset in args.presets:
        rows += compare(preset, args.batch, precisions, args.repeats, args.text_embed_dim, device)
    for r in rows:
        r["batch"], r["machine"] = args.batch, where
    print(format_table(rows))
    plot(rows).savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
