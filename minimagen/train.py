"""Training one stage of the cascade: AdamW with warmup, gradient clipping, EMA weights for sampling,
bf16 autocast where it is fast, cached text embeddings, tqdm progress, a loss log with its plot,
periodic sample grids, atomic checkpoints with exact resume, and multi-GPU through PyTorch's DDP.

    python -m minimagen train --stage 0 --out runs/base       # one process, the stage's recipe (STAGE_RECIPES)
    -> runs/base/last.pt (resumable), ema.pt (EMA weights in fp16, to sample and share), loss.csv/png, samples/
    torchrun --nproc_per_node 2 -m minimagen train --stage 0 --out runs/base  # DDP

Exact resume: every step's randomness (which images, which t, which noise, which captions are
dropped) is seeded by (seed, step, rank), so a run resumed from step k replays the same steps
k+1, k+2, ... as the run that never stopped (tests/test_train.py checks the loss sequence).
"""
import csv
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from .checks import check_train_config
from .checkpoint import check_text_encoder, config_differences, load_checkpoint, save_checkpoint
from .data import WORLDS, ImageCaptionFolder, ShapesDataset
from .device import autocast, pick_device, resolve_bf16
from .errors import MinimagenError
from .imagen import Imagen, resize, stage_loss
from .text import TextEncoder
from .unet import Unet, unet_preset

# Each stage's recipe: what a flag left unset means. The base's is the fast recipe of
# benchmarks/archive/README.md ("time to a good model"): chosen one lever at a time by
# benchmarks/archive/wall_clock_curve.py --levers and compute_to_90.py, on captions disjoint from the ones it is
# scored on. Its U-Net, quick32, needs ~20 TFLOP of training to 90% caption alignment where base32 needs 48-52;
# 2900 steps is 18 TFLOP (6.2 GFLOP per step), the first mark at 90% on two seeds of the selection captions.
# The shipped base32.pt is the larger model, trained longer.
# The SR stages' are the shipped stages' (benchmarks/archive/README.md, "super-resolution"): noise-conditioning
# augmentation off, since at this budget it costs detail and, over the paper's U(0, 1) range, the caption,
# on this toy's near-clean base samples; --noise-aug 0.3 trains the twin that repairs corrupted inputs.
STAGE_RECIPES = {
    0: dict(preset="quick32", steps=2900, batch_size=32, lr=1e-3, warmup_steps=100, lr_schedule="constant",
            ema_decay=0.98, dataset_size=2000),
    1: dict(preset="sr64", steps=3500, batch_size=16, lr=3e-4, warmup_steps=200, lr_schedule="constant",
            ema_decay=0.999, dataset_size=4000, noise_aug=0.0),
    2: dict(preset="sr128", steps=2500, batch_size=16, lr=3e-4, warmup_steps=200, lr_schedule="constant",
            ema_decay=0.999, dataset_size=4000, noise_aug=0.0),
}
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_PRESETS = {stage: recipe["preset"] for stage, recipe in STAGE_RECIPES.items()}  # 32 -> 64 -> 128
STAGE_SIZES = {0: None, 1: 32, 2: 64}                    # each SR stage's low-res input size


@dataclass
class TrainConfig:
    stage: int = 0                 # 0 = base, 1 = SR 32->64, 2 = SR 64->128
    # None = the stage's recipe (STAGE_RECIPES above)
    preset: str | None = None      # U-Net preset (minimagen.unet.PRESETS)
    steps: int | None = None       # optimizer steps (per process)
    batch_size: int | None = None  # per process
    lr: float | None = None
    warmup_steps: int | None = None  # linear LR warmup: Adam's early steps are noisy without it
    lr_schedule: str | None = None  # after the warm-up: "constant", or "cosine" (decays to 0 at `steps`)
    grad_clip: float = 1.0
    ema_decay: float | None = None   # EMA weights are what sampling uses (smoother than the raw weights)
    cond_drop_prob: float = 0.1    # classifier-free guidance: fraction of captions replaced by the null text
    objective: str = "v"           # eps (the paper), v (stable at both ends of the schedule), or x0
    schedule: str = "cosine"
    text_encoder: str | None = None  # None -> $MINIMAGEN_TEXT_ENCODER, else t5-small
    dataset: str = "shapes"        # a world of data.WORLDS ("shapes", "contrast") or a folder of images + captions.csv / .jsonl
    dataset_size: int | None = None  # procedural shapes images to render
    seed: int = 0
    out_dir: str = "runs/base"
    log_every: int = 25
    sample_every: int = 1000       # 0 = never
    checkpoint_every: int = 500
    bf16: bool | None = None       # None = where the hardware supports it
    device: str | None = None      # None = cuda if available else cpu
    init_from: str | None = None   # start from these weights (fine-tuning), not a resume
    noise_aug: float | None = None  # SR stages: training aug levels ~ U(0, noise_aug) (0 = none; the paper: 1)
    loss_weighting: str = "uniform"  # or "min_snr": Min-SNR-5 weighting [Hang et al. 2023]

    def __post_init__(self):
        if isinstance(self.stage, bool) or self.stage not in DEFAULT_PRESETS:
            raise MinimagenError(f"stage must be 0 (base), 1 (32->64) or 2 (64->128), got {self.stage!r}.")
        for name, value in STAGE_RECIPES[self.stage].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.noise_aug is None:  # the base stage has no low-res input to augment
            self.noise_aug = 0.0
        check_train_config(self)  # every field once, here: a bad one is one sentence, not a torch error later


# fields that must match to resume a run (the rest, like steps or out_dir, may change)
RESUME_FIELDS = ("stage", "preset", "batch_size", "objective", "schedule", "text_encoder", "dataset",
                 "dataset_size", "seed", "cond_drop_prob", "lr", "warmup_steps", "lr_schedule", "ema_decay", "noise_aug",
                 "loss_weighting")


def lr_factor(step: int, c: "TrainConfig") -> float:
    """The learning rate at `step` as a fraction of c.lr: a linear warm-up, then constant, or (cosine)
    decaying to 0 at c.steps, which lets a fixed, short budget end on small, careful steps."""
    warm = min(1.0, (step + 1) / max(1, c.warmup_steps))
    if c.lr_schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, c.steps) / c.steps))
    return warm


def ema_avg(decay: float):
    """EMA update for torch's AveragedModel, with warmup: decay_n = min(decay, (1 + n) / (10 + n)),
    so a short run's EMA is not stuck near the random initial weights."""
    def avg(ema_param, param, n):
        d = min(decay, (1 + n.item()) / (10 + n.item()))
        return d * ema_param + (1 - d) * param
    return avg


class Trainer:
    def __init__(self, config: TrainConfig, data=None):
        """data: a dataset of (image [3, size, size] in [-1, 1], caption) items to train on instead of the one
        config.dataset names (then only a label; benchmarks/archive/textured.py passes its worlds this way)."""
        self.config = c = config
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        if self.world > 1:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.device = pick_device(c.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        self.bf16 = resolve_bf16(self.device, c.bf16)
        self.text_encoder = TextEncoder(c.text_encoder, device=self.device)
        c.text_encoder = self.text_encoder.name
        self.unet_config = unet_preset(c.preset, self.text_encoder.dim)
        self.image_size, self.lowres_size = self.unet_config.image_size, STAGE_SIZES[c.stage]
        if self.unet_config.lowres_cond != (c.stage > 0):
            raise MinimagenError(f"preset {c.preset!r} is for stage {1 - int(c.stage > 0)}, not stage {c.stage}: "
                                 f"use --preset {DEFAULT_PRESETS[c.stage]}.")
        torch.manual_seed(c.seed)
        self.unet = Unet(self.unet_config).to(self.device)
        self.ema = AveragedModel(self.unet, avg_fn=ema_avg(c.ema_decay), use_buffers=True)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=c.lr, weight_decay=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, c))
        self.model = self.unet if self.world == 1 else torch.nn.parallel.DistributedDataParallel(self.unet)
        self.step, self.out = 0, Path(c.out_dir)
        self.data = data if data is not None else (
            ShapesDataset(size=self.image_size, split="train", n=c.dataset_size, seed=c.seed, world=c.dataset)
            if c.dataset in WORLDS else ImageCaptionFolder(c.dataset, size=self.image_size))
        if (self.out / "last.pt").exists():
            self.load(self.out / "last.pt", resume=True)
        elif c.init_from:
            self.load(c.init_from, resume=False)

    # ------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {"stage": self.config.stage, "image_size": self.image_size, "lowres_size": self.lowres_size,
                "text_encoder": self.text_encoder.name, "text_embed_dim": self.text_encoder.dim,
                "text_encoder_fingerprint": self.text_encoder.fingerprint,  # which exact weights (load_cascade checks)
                "objective": self.config.objective, "schedule": self.config.schedule,
                "unet_config": dataclasses.asdict(self.unet_config), "train_config": dataclasses.asdict(self.config),
                "step": self.step, "model": self.unet.state_dict(), "ema": self.ema.module.state_dict(),
                "ema_n": self.ema.n_averaged, "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()}

    def load(self, path, resume: bool):
        state = load_checkpoint(path, self.device)
        check_text_encoder(state, self.text_encoder, path)
        diff = config_differences(state["unet_config"], dataclasses.asdict(self.unet_config), state["unet_config"])
        if state["stage"] != self.config.stage or diff:
            raise MinimagenError(f"{path} holds a stage-{state['stage']} U-Net that differs from this run's "
                                 f"({'; '.join(diff) or 'stage'}): pass the matching --stage/--preset or another --out.")
        if resume:
            # fields newer than the run: their default, or the stage's recipe (SR runs from before noise_aug
            # existed augmented over U(0, 1))
            defaults = {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **STAGE_RECIPES[self.config.stage],
                        "noise_aug": 1.0 if self.config.stage > 0 else 0.0}
            diff = config_differences({**defaults, **state["train_config"]}, dataclasses.asdict(self.config), RESUME_FIELDS)
            if diff:
                raise MinimagenError(f"cannot resume {path}: settings changed ({'; '.join(diff)}); "
                                     "use the same settings or a new --out directory.")
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.step = state["step"]
        self.unet.load_state_dict(state.get("model", state["ema"]))  # an exported file holds only the EMA
        self.ema.module.load_state_dict(state["ema"])
        self.ema.n_averaged.copy_(state.get("ema_n", 0))
        if self.rank == 0:
            print(f"{'resumed' if resume else 'initialised'} from {path} at step {state['step']}")

    def save(self, name="last.pt"):
        if self.rank == 0:
            save_checkpoint(self.state(), self.out / name)

    def export(self, name="ema.pt"):
        """A small file for sampling and sharing: the EMA weights in float16 and the metadata,
        without the raw weights and optimizer state (4x smaller; it cannot resume training)."""
        if self.rank == 0:
            state = {k: v for k, v in self.state().items() if k not in ("model", "optimizer", "scheduler", "ema_n")}
            state["ema"] = {k: v.half() if v.is_floating_point() else v for k, v in state["ema"].items()}
            save_checkpoint(state, self.out / name)

    # ------------------------------------------------------------ one step
    def batch(self, step: int):
        """This step's images and captions: a pure function of (seed, step, rank)."""
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step * 101 + self.rank)
        idx = torch.randint(len(self.data), (self.config.batch_size,), generator=g).tolist()
        images, captions = zip(*(self.data[i] for i in idx))
        return torch.stack(images).to(self.device), list(captions)

    def train_step(self, step: int) -> float:
        images, captions = self.batch(step)
        torch.manual_seed(self.config.seed * 1_000_003 + step * 101 + self.rank + 7)  # t, noise, CFG drops
        embeds, mask = self.text_encoder.encode(captions)  # cached: T5 runs once per distinct caption
        with autocast(self.device, self.bf16):
            loss = stage_loss(self.model, images, embeds, mask, self.lowres_size, self.config.objective,
                              self.config.schedule, self.config.cond_drop_prob, self.config.noise_aug,
                              self.config.loss_weighting)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.config.grad_clip)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            raise MinimagenError(f"the loss became {loss.item()} (gradient norm {grad_norm.item()}) at step {step}: "
                                 f"the learning rate ({self.config.lr}) is likely too high or the data holds NaNs; "
                                 f"nothing was saved after the last good checkpoint in {self.out}.")
        self.opt.step()
        self.sched.step()
        self.ema.update_parameters(self.unet)
        return loss.item()

    # ------------------------------------------------------------ the loop
    def train(self, steps: int | None = None) -> list[float]:
        """Train up to `steps` total steps (default config.steps); returns this call's losses."""
        c, total = self.config, steps or self.config.steps
        self.out.mkdir(parents=True, exist_ok=True)
        log_path, losses = self.out / "loss.csv", []
        if self.rank == 0 and (self.step == 0 or not log_path.exists()):
            log_path.write_text("step,loss,lr,seconds\n")
        if self.rank == 0 and self.step >= total:
            print(f"{self.out} is already at step {self.step} of {total}: nothing to train (raise --steps to train on)")
        bar = tqdm(range(self.step, total), initial=self.step, total=total, disable=self.rank != 0,
                   desc=f"stage {c.stage} ({c.preset})", mininterval=2)
        start = time.time()
        for step in bar:
            losses.append(self.train_step(step))
            self.step = step + 1
            if self.rank == 0 and (self.step % c.log_every == 0 or self.step == total):
                recent = losses[-c.log_every:]  # the mean since the last log line: smoother than one batch
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
                with log_path.open("a", newline="") as f:
                    csv.writer(f).writerow([self.step, f"{sum(recent) / len(recent):.5f}",
                                            f"{self.sched.get_last_lr()[0]:.2e}", f"{time.time() - start:.1f}"])
            if self.step % c.checkpoint_every == 0 or self.step == total:
                self.save()
            if c.sample_every and self.rank == 0 and (self.step % c.sample_every == 0 or self.step == total):
                self.preview()
        if self.world > 1:
            self._check_replicas_in_sync()
        if self.rank == 0:
            from .plot import plot_loss
            plot_loss(log_path, self.out / "loss.png")
            self.export()
        return losses

    def imagen(self) -> Imagen:
        """This stage alone, with the EMA weights, for sampling during training."""
        return Imagen([self.ema.module], self.text_encoder, self.config.objective, self.config.schedule,
                      lowres_size=self.lowres_size)

    def preview(self, n: int = 8):
        """A grid of EMA samples for fixed training captions (SR stages: from real low-res images)."""
        from .plot import save_grid
        images, captions = zip(*(self.data[i] for i in range(min(n, len(self.data)))))  # a dataset may be smaller
        lowres = resize(torch.stack(images), self.lowres_size) if self.lowres_size else None
        samples = self.imagen().sample(list(captions), steps=25, lowres_images=lowres)
        save_grid(samples, self.out / "samples" / f"step_{self.step:06d}.png", captions=list(captions))

    def _check_replicas_in_sync(self):
        """DDP keeps every replica's weights identical: verify it once at the end."""
        flat = torch.cat([p.detach().flatten() for p in self.unet.parameters()])
        checksum = torch.stack([flat.sum(), flat.abs().sum()]).double().cpu()
        gathered = [torch.zeros_like(checksum) for _ in range(self.world)]
        dist.all_gather(gathered, checksum)
        if not all(torch.allclose(g, gathered[0]) for g in gathered):
            raise RuntimeError(f"DDP replicas diverged: {gathered}")
        if self.rank == 0:
            print(f"DDP: {self.world} replicas in sync after {self.step} steps")
