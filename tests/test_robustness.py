"""Robustness (issue 7): each mistake of a learner's first hour ends in one MinimagenError sentence that
names the fix (or in one warning), never in a stack trace from inside torch or a silently wrong result.

The checklist is one table per entry point a learner comes in through; a row is one mistake (its id names
it) and the regex its message must match. Every row must raise one sentence (a full stop, no line break),
on a CPU without CUDA or native bf16 (the fixture bare_cpu), so no row depends on the machine.

  ENCODE_ROWS           TextEncoder.encode    captions: empty, whitespace, None, numbers, a dict
  SAMPLE_ROWS           Imagen.sample         captions; guidance_scale, steps, sampler, stages, seed,
                                              lowres_aug_level, bf16; lowres_images (size, channels, dtype,
                                              range, count, missing, given to a base cascade); NaN weights
  THRESHOLDING_ROWS     Imagen.sample,        an unknown rule name; a percentile or cap out of range
                        diffusion.Thresholding
  INPAINT_ROWS          inpaint               NaN weights (inpaint's own argument tables: test_inpaint.py)
  LOSS_ROWS             Imagen.loss           images (size, channels, uint8, 0..255, NaN, no batch, empty, numpy),
                                              stage out of range, captions
  IMAGEN_ROWS           Imagen(...)           a U-Net trained for another text encoder
  TRAINER_ROWS          TrainConfig, Trainer  fields out of range, an empty image folder, CUDA or bf16 absent,
                                              init_from another preset, resuming with another tiny T5
  LOAD_CASCADE_ROWS     load_cascade          stages misplaced, no paths, EMA-only without use_ema, an edited
                                              config, a pickle that would run code, another tiny T5, CUDA absent
  LOAD_CHECKPOINT_ROWS  load_checkpoint       a pickle that would run code
  DEVICE_ROWS           minimagen.device      CUDA absent, an unknown device name, bf16 absent
  CLI_ROWS              python -m minimagen   one line on stderr, exit code 2, no traceback

Elsewhere: captions (test_text.py), the data loaders (test_data.py), corrupted, truncated and other-stage
checkpoints, changed resume settings, atomic checkpoints, exact resume, the NaN-loss stop (test_train.py),
U-Net arguments (test_unet.py), a hub model offline (test_text.py). Below the tables, plain tests of what must
work (caption containers, long and non-ASCII captions, float64/float16 images, no warm-up, numpy steps and
seeds, bit-identical seeds, the encoder fingerprint, the bf16 fallbacks, the demo) and two fuzz tests: random
shapes, dtypes, values and arguments either work (finite, right shape) or raise one sentence of ours.
"""
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import minimagen.device
from minimagen import diffusion as D
from minimagen.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from minimagen.cli import main as cli_main
from minimagen.data import DATA_DIR
from minimagen.device import pick_device, resolve_bf16
from minimagen.errors import MinimagenError
from minimagen.imagen import Imagen, load_cascade
from minimagen.inpaint import inpaint
from minimagen.text import TextEncoder
from minimagen.train import TrainConfig, Trainer
from minimagen.unet import Unet, unet_preset

BASE32, SR64 = DATA_DIR / "checkpoints" / "base32.pt", DATA_DIR / "checkpoints" / "sr64.pt"
CAPTION = "a small red circle"
CPU = torch.device("cpu")


def refused(fn, match):
    """fn() must raise one MinimagenError sentence (a full stop, no line break) that matches `match`."""
    with pytest.raises(MinimagenError, match=match) as info:
        fn()
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message, message


@pytest.fixture
def bare_cpu(monkeypatch):
    """The machine every table runs on: a CPU without CUDA and without native bf16 (the rows that ask for
    either check the message; no other row depends on the machine)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(minimagen.device, "cpu_has_bf16", lambda: False)


# ---------------------------------------------------------------- shared bad inputs
CAPTION_FIX = r"pass (non-empty text|a caption string)"
BAD_CAPTIONS = [("", "empty"), ("  \t\n", "whitespace-only"), ([None], "None-in-a-list"), ([3], "number-in-a-list"),
                ([CAPTION, ""], "one-empty-in-a-list"), ([], "empty-list"), (None, "None"), (3, "a-number"), ({"a": 1}, "a-dict")]
BAD_IMAGES = [  # (images, regex, mistake): what Imagen.loss trains on and what an SR-only cascade upsamples
    (torch.rand(2, 3, 16, 16), "32x32.*resize", "wrong-size"), (torch.rand(2, 1, 32, 32), r"3 \(RGB\)", "one-channel"),
    ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), r"images.float\(\) / 127.5 - 1", "uint8-0..255"),
    (torch.full((2, 3, 32, 32), float("nan")), "NaN", "nan-pixels"),
    (torch.rand(2, 3, 32, 32) * 255, r"\[-1, 1\].*0..255 images / 127.5 - 1", "float-0..255"),
    (torch.rand(3, 32, 32), "torch.stack", "no-batch-dim"), (torch.zeros(0, 3, 32, 32), "at least one image", "empty-batch"),
    (np.zeros((2, 3, 32, 32), np.float32), r"torch.as_tensor", "numpy-array")]
SR_ONLY, NAN_WEIGHTS = "sr-only", "nan-weights"  # the "model" of a row: which cascade it runs (default: `cascade`)


@pytest.fixture(scope="module")
def models(cascade, encoder):
    """The cascades the rows run: the two-stage one, its SR stage alone (it upsamples given 32 px images),
    and a base whose weights are NaN (a diverged run; its sampled images used to pass clamp() silently)."""
    broken = Unet(cascade.unets[0].config)
    broken.load_state_dict(cascade.unets[0].state_dict())
    with torch.no_grad():
        for p in broken.parameters():
            p.fill_(float("nan"))
    return {"cascade": cascade, SR_ONLY: Imagen([cascade.unets[1]], encoder, lowres_size=32),
            NAN_WEIGHTS: Imagen([broken], encoder)}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, train_config):
    """The last.pt of a tiny32 run, saved before its first step: what the checkpoint rows start from."""
    folder = tmp_path_factory.mktemp("saved")
    Trainer(train_config(folder)).save()
    return folder / "run" / "last.pt"


# files the rows build in their tmp_path: f(tmp_path, saved_run) -> path
def empty_folder(tmp_path, saved_run):
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def tiny32_checkpoint(tmp_path, saved_run):
    return saved_run


def another_tiny_t5_checkpoint(tmp_path, saved_run):
    """saved_run as if trained with another tiny T5 (an older data/tiny-t5): same name, another fingerprint."""
    state = load_checkpoint(saved_run)
    state["text_encoder_fingerprint"] = "0" * 64
    return save_checkpoint({k: v for k, v in state.items() if k != "format"}, tmp_path / "other-t5" / "last.pt")


def another_tiny_t5_run(tmp_path, saved_run):
    return another_tiny_t5_checkpoint(tmp_path, saved_run).parent


def edited_sr64(tmp_path, saved_run):
    """sr64.pt whose U-Net config was edited: its weights no longer fit it (an edited or foreign file)."""
    state = load_checkpoint(SR64)
    state["unet_config"]["dim"] = 48
    return save_checkpoint({k: v for k, v in state.items() if k != "format"}, tmp_path / "edited.pt")


class RunsCode:
    """Unpickling this would create a file: what a malicious checkpoint could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def code_running_pickle(tmp_path, saved_run):
    """A checkpoint whose unpickling would create tmp_path / "code-ran"."""
    torch.save({"format": FORMAT, "ema": {}, "payload": RunsCode(tmp_path / "code-ran")}, tmp_path / "evil.pt")
    return tmp_path / "evil.pt"


def built(value, tmp_path, saved_run):
    return value(tmp_path, saved_run) if callable(value) else value


# ---------------------------------------------------------------- TextEncoder.encode
ENCODE_ROWS = [pytest.param(bad, CAPTION_FIX, id=f"captions-{name}") for bad, name in BAD_CAPTIONS]


@pytest.mark.parametrize("captions,match", ENCODE_ROWS)
def test_encode_errors(encoder, captions, match):
    refused(lambda: encoder.encode(captions), match)


# ---------------------------------------------------------------- Imagen.sample
SAMPLE_ROWS = [  # keyword arguments of Imagen.sample, besides "model" and "captions" (default CAPTION); steps=1 unless given
    *[pytest.param({"captions": bad, "stages": 1}, CAPTION_FIX, id=f"captions-{name}") for bad, name in BAD_CAPTIONS],
    pytest.param({"guidance_scale": -1}, ">= 0", id="guidance-negative"),
    pytest.param({"guidance_scale": float("nan")}, ">= 0", id="guidance-nan"),
    pytest.param({"guidance_scale": float("inf")}, ">= 0", id="guidance-inf"),
    pytest.param({"guidance_scale": "3"}, ">= 0", id="guidance-a-string"),
    pytest.param({"guidance_scale": [3.0]}, "one per stage", id="guidance-list-shorter-than-the-stages"),
    pytest.param({"steps": 0}, "positive integer.*try 50", id="steps-zero"),
    pytest.param({"steps": -3}, "positive integer", id="steps-negative"),
    pytest.param({"steps": 2.5}, "positive integer", id="steps-a-fraction"),
    pytest.param({"sampler": "euler"}, "ddim", id="sampler-unknown"),
    pytest.param({"stages": 0}, "out of range.*1..2", id="stages-zero"),
    pytest.param({"stages": 3}, "out of range.*1..2", id="stages-more-than-the-cascade"),
    pytest.param({"stages": "1"}, "out of range", id="stages-a-string"),
    pytest.param({"seed": 1.5}, "integer", id="seed-a-fraction"),
    pytest.param({"seed": 2**70}, "integer", id="seed-beyond-64-bits"),
    pytest.param({"seed": True}, "integer", id="seed-True"),
    pytest.param({"stages": True}, "out of range", id="stages-True"),
    pytest.param({"lowres_aug_level": float("nan")}, r"\[0, 1\]", id="lowres-aug-level-nan"),
    pytest.param({"lowres_aug_level": 2}, r"\[0, 1\]", id="lowres-aug-level-above-1"),
    pytest.param({"steps": 2, "stages": 1, "bf16": True}, "no native bf16", id="bf16-on-a-cpu-without-it"),
    pytest.param({"lowres_images": torch.zeros(1, 3, 32, 32)}, "would be ignored", id="lowres-images-to-a-base-cascade"),
    pytest.param({"model": SR_ONLY, "steps": 2}, "lowres_images", id="sr-only-cascade-without-lowres-images"),
    pytest.param({"model": SR_ONLY, "captions": [CAPTION] * 3, "lowres_images": torch.zeros(2, 3, 32, 32)},
                 "one caption per image", id="lowres-images-fewer-than-captions"),
    *[pytest.param({"model": SR_ONLY, "captions": [CAPTION] * 2, "lowres_images": images}, match, id=f"lowres-images-{name}")
      for images, match, name in BAD_IMAGES],
    pytest.param({"model": SR_ONLY, "captions": [CAPTION] * 2, "lowres_images": torch.rand(2, 3, 16, 16)},
                 "takes 32x32 lowres_images", id="lowres-images-named-in-the-error"),
    pytest.param({"model": NAN_WEIGHTS, "steps": 2}, "weights may hold NaN.*earlier checkpoint", id="nan-weights"),
]


def run_sample(models, kwargs):
    kwargs = dict(kwargs)
    model, captions = models[kwargs.pop("model", "cascade")], kwargs.pop("captions", CAPTION)
    return model.sample(captions, **{"steps": 1, **kwargs})


@pytest.mark.usefixtures("bare_cpu")
@pytest.mark.parametrize("kwargs,match", SAMPLE_ROWS)
def test_sample_errors(models, kwargs, match):
    refused(lambda: run_sample(models, kwargs), match)


THRESHOLDING_ROWS = [  # a rule's name is checked where Imagen.sample starts, a Thresholding's p and cap when it is made
    pytest.param(lambda: "clip", r"\['none', 'static', 'dynamic'\]", id="thresholding-unknown"),
    pytest.param(lambda: None, r"\['none', 'static'", id="thresholding-None"),
    pytest.param(lambda: D.Thresholding("clip"), r"\['none', 'static', 'dynamic'\]", id="rule-of-an-unknown-method"),
    pytest.param(lambda: D.Thresholding("dynamic", 0.0), r"\(0, 1\].*0\.9", id="percentile-zero"),
    pytest.param(lambda: D.Thresholding("dynamic", 0.9, 0.5), "cap must be None", id="cap-below-1"),
    pytest.param(lambda: D.Thresholding("dynamic", 1.5), r"\(0, 1\]", id="percentile-above-1"),
    pytest.param(lambda: D.Thresholding("dynamic", float("nan")), r"\(0, 1\]", id="percentile-nan"),
    pytest.param(lambda: D.Thresholding("dynamic", "0.9"), r"\(0, 1\]", id="percentile-a-string"),
]


@pytest.mark.usefixtures("bare_cpu")
@pytest.mark.parametrize("rule,match", THRESHOLDING_ROWS)
def test_sample_thresholding_errors(models, rule, match):
    refused(lambda: run_sample(models, {"thresholding": rule()}), match)


# ---------------------------------------------------------------- inpaint
INPAINT_ROWS = [  # keyword arguments of inpaint besides "model", on one 32 px image, its mask all True
    pytest.param({"model": NAN_WEIGHTS, "steps": 2, "resample": 1}, "lower guidance_scale", id="nan-weights")]


@pytest.mark.usefixtures("bare_cpu")
@pytest.mark.parametrize("kwargs,match", INPAINT_ROWS)
def test_inpaint_errors(models, kwargs, match):
    kwargs = dict(kwargs)
    model = models[kwargs.pop("model", "cascade")]
    refused(lambda: inpaint(model, torch.zeros(1, 3, 32, 32), torch.ones(1, 1, 32, 32), CAPTION, **kwargs), match)


# ---------------------------------------------------------------- Imagen.loss
LOSS_ROWS = [  # arguments of Imagen.loss; the others: one 32 px image of zeros, CAPTION, stage 0
    *[pytest.param({"images": images, "captions": [CAPTION] * 2}, match, id=f"images-{name}")
      for images, match, name in BAD_IMAGES],
    *[pytest.param({"stage": stage}, "out of range.*stages 0..1", id=f"stage-{name}")
      for stage, name in [(2, "beyond-the-cascade"), (-1, "negative"), ("0", "a-string"), (None, "None"), (True, "True")]],
    *[pytest.param({"captions": bad}, CAPTION_FIX, id=f"captions-{name}") for bad, name in BAD_CAPTIONS],
]


@pytest.mark.usefixtures("bare_cpu")
@pytest.mark.parametrize("kwargs,match", LOSS_ROWS)
def test_loss_errors(cascade, kwargs, match):
    kwargs = {"images": torch.zeros(1, 3, 32, 32), "captions": CAPTION, "stage": 0, **kwargs}
    refused(lambda: cascade.loss(**kwargs), match)


# ---------------------------------------------------------------- Imagen(...)
IMAGEN_ROWS = [  # the U-Nets, as (preset, text embedding size), given with the tiny T5 (128-wide)
    pytest.param([("tiny32", 512)], "encoder it was trained with", id="unet-for-another-text-encoder")]


@pytest.mark.parametrize("unets,match", IMAGEN_ROWS)
def test_imagen_errors(encoder, unets, match):
    refused(lambda: Imagen([Unet(unet_preset(preset, dim)) for preset, dim in unets], encoder), match)


# ---------------------------------------------------------------- TrainConfig / Trainer
TRAINER_ROWS = [  # fields of train_config (tests/conftest.py); a function value builds a file or folder first
    pytest.param({"lr": 0}, "lr=0", id="lr-zero"),
    pytest.param({"warmup_steps": -1}, "warmup_steps", id="warmup-negative"),
    pytest.param({"checkpoint_every": 0}, "checkpoint_every=0", id="checkpoint-every-zero"),
    pytest.param({"log_every": 0}, "log_every", id="log-every-zero"),
    pytest.param({"cond_drop_prob": 1.5}, r"cond_drop_prob=1.5 \(use in \[0, 1\]\)", id="cond-drop-prob-above-1"),
    pytest.param({"ema_decay": 1.0}, "ema_decay", id="ema-decay-1"),
    pytest.param({"objective": "noise"}, "'eps', 'v', 'x0'", id="objective-unknown"),
    pytest.param({"schedule": "sigmoid"}, "cosine", id="schedule-unknown"),
    pytest.param({"loss_weighting": "snr"}, "min_snr", id="loss-weighting-unknown"),
    pytest.param({"stage": 3}, "stage must be 0", id="stage-3"),
    pytest.param({"steps": 0}, "positive", id="steps-zero"),
    pytest.param({"steps": "3"}, r"steps='3' \(use a whole number\)", id="steps-a-string"),
    pytest.param({"steps": 2.5}, "whole number", id="steps-a-fraction"),
    pytest.param({"lr": "3e-4"}, r"lr='3e-4' \(use a number\)", id="lr-a-string"),
    pytest.param({"stage": True}, "stage must be 0", id="stage-True"),
    pytest.param({"dataset": empty_folder}, "holds no images.*put your images in it", id="dataset-an-empty-folder"),
    pytest.param({"device": "cuda"}, "no CUDA GPU", id="cuda-without-a-gpu"),
    pytest.param({"bf16": True}, "--no-bf16", id="bf16-on-a-cpu-without-it"),
    pytest.param({"preset": "base32", "init_from": tiny32_checkpoint}, r"dim: 16 -> 64.*--preset", id="init-from-another-preset"),
    pytest.param({"out_dir": another_tiny_t5_run}, "build_tiny_t5.py", id="resume-a-run-of-another-tiny-t5"),
]


@pytest.mark.usefixtures("bare_cpu")
@pytest.mark.parametrize("fields,match", TRAINER_ROWS)
def test_trainer_errors(tmp_path, train_config, saved_run, fields, match):
    fields = {k: str(built(v, tmp_path, saved_run)) if callable(v) else v for k, v in fields.items()}
    refused(lambda: Trainer(train_config(tmp_path, **fields)), match)


# ---------------------------------------------------------------- load_cascade / load_checkpoint
LOAD_CASCADE_ROWS = [  # (paths, keyword arguments); a function in paths builds that file first
    pytest.param([SR64, BASE32], {}, "cascade order", id="base-after-an-sr-stage"),
    pytest.param([BASE32, BASE32], {}, "base32.pt is a base stage.*cascade order", id="base-twice"),
    pytest.param([], {}, "no checkpoint paths", id="no-paths"),
    pytest.param([BASE32], {"use_ema": False}, "only the EMA weights.*use_ema=True", id="ema-only-export-without-use-ema"),
    pytest.param([edited_sr64], {}, "do not fit its U-Net config", id="weights-that-do-not-fit-the-config"),
    pytest.param([code_running_pickle], {}, "could run code", id="pickle-that-would-run-code"),
    pytest.param([another_tiny_t5_checkpoint], {}, "different 'tiny' text encoder.*build_tiny_t5.py", id="another-tiny-t5"),
    pytest.param([BASE32], {"device": "cuda"}, "no CUDA GPU", id="cuda-without-a-gpu"),
]


@pytest.mark.usefixtures("bare_cpu")
@pytest.mark.parametrize("paths,kwargs,match", LOAD_CASCADE_ROWS)
def test_load_cascade_errors(tmp_path, saved_run, paths, kwargs, match):
    paths = [built(p, tmp_path, saved_run) for p in paths]
    refused(lambda: load_cascade(paths, **kwargs), match)
    assert not (tmp_path / "code-ran").exists()  # weights_only loading: no file ran code


LOAD_CHECKPOINT_ROWS = [  # (tests/test_train.py: empty, corrupted and truncated files)
    pytest.param(code_running_pickle, "could run code.*refused", id="pickle-that-would-run-code")]


@pytest.mark.parametrize("file,match", LOAD_CHECKPOINT_ROWS)
def test_load_checkpoint_errors(tmp_path, saved_run, file, match):
    path = built(file, tmp_path, saved_run)
    refused(lambda: load_checkpoint(path), match)
    assert not (tmp_path / "code-ran").exists()


def test_the_code_running_pickle_really_runs_code(tmp_path):
    """The file the rows above refuse is readable and its payload real: only weights_only=True stopped it."""
    torch.load(code_running_pickle(tmp_path, None), weights_only=False)["payload"].close()
    assert (tmp_path / "code-ran").exists()


# ---------------------------------------------------------------- minimagen.device
DEVICE_ROWS = [  # (function, arguments)
    pytest.param(pick_device, ("cuda",), "no CUDA GPU.*device='cpu'", id="cuda-without-a-gpu"),
    pytest.param(pick_device, ("cuda:1",), "no CUDA GPU.*device='cpu'", id="cuda:1-without-a-gpu"),
    pytest.param(pick_device, ("gpu",), "Unknown device 'gpu'.*'cpu' or 'cuda'", id="unknown-device-name"),
    pytest.param(resolve_bf16, (CPU, True), "no native bf16.*--no-bf16", id="bf16-on-a-cpu-without-it"),
]


@pytest.mark.usefixtures("bare_cpu")
@pytest.mark.parametrize("function,args,match", DEVICE_ROWS)
def test_device_errors(function, args, match):
    refused(lambda: function(*args), match)


# ---------------------------------------------------------------- the CLI
CLI_ROWS = [  # the command line; what stderr must match
    pytest.param(["sample", "--checkpoints", str(BASE32), "--captions", CAPTION, "--steps", "1", "--thresholding", "clip",
                  "--out", "/nonexistent/never-written.png"], "^error: Unknown thresholding 'clip'",
                 id="sample-unknown-thresholding"),
    pytest.param(["sample", "--checkpoints", str(BASE32), "--captions", CAPTION, "--cap", "0.5"],
                 r"^error: --cap must be 0 \(no cap\) or a number >= 1", id="sample-cap-below-1"),
    pytest.param(["sample", "--checkpoints", str(BASE32), "--captions", CAPTION, "--device", "cuda"], "no CUDA GPU",
                 id="sample-cuda-without-a-gpu"),
]


@pytest.mark.usefixtures("bare_cpu")
@pytest.mark.parametrize("argv,match", CLI_ROWS)
def test_cli_errors(capsys, argv, match):
    """One line on stderr, exit code 2, no traceback."""
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(match, err), err


# ---------------------------------------------------------------- what must work
def test_caption_containers_long_and_non_ascii_captions(cascade, encoder):
    reference = encoder.encode([CAPTION, "a blue square"])[0]
    for captions in [(CAPTION, "a blue square"), (c for c in [CAPTION, "a blue square"]), np.array([CAPTION, "a blue square"])]:
        assert torch.equal(encoder.encode(captions)[0], reference)
    assert torch.equal(encoder.encode(CAPTION)[0], reference[:1, :encoder.encode(CAPTION)[0].shape[1]])
    assert cascade.sample(CAPTION, steps=1, stages=1).shape == (1, 3, 32, 32)  # one string = one caption
    out = cascade.sample(["un cercle rouge über 日本 ✓"], steps=1, stages=1)
    assert torch.isfinite(out).all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cascade.sample(" ".join(["a red circle above a blue square"] * 8), steps=1, stages=1)
    assert len(caught) == 1 and "max_length" in str(caught[0].message)


def test_float64_and_float16_images_work(cascade):
    """Images in [-1, 1] of another float dtype are converted (they used to fail inside the first conv)."""
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        loss = cascade.loss((torch.rand(2, 3, 64, 64) * 2 - 1).to(dtype), [CAPTION] * 2, stage=1)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_numpy_integer_steps_work(cascade):
    """A numpy integer step count (e.g. from np.arange) is a valid step count."""
    assert cascade.sample("a red circle", steps=np.int64(2), stages=1).shape == (1, 3, 32, 32)


def test_no_warmup_is_allowed(tmp_path, train_config):
    trainer = Trainer(train_config(tmp_path, warmup_steps=0))  # used to divide by zero in the LR schedule
    assert trainer.sched.get_last_lr() == [trainer.config.lr]


def test_device_and_bf16_default_to_what_the_machine_has(bare_cpu, monkeypatch):
    assert pick_device(None).type == "cpu"
    assert resolve_bf16(CPU, None) is False and resolve_bf16(CPU, False) is False
    monkeypatch.setattr(minimagen.device, "cpu_has_bf16", lambda: True)
    assert resolve_bf16(CPU, None) is True


def test_benchmarks_drop_bf16_rounds_on_a_cpu_without_it(monkeypatch):
    """benchmarks/vs_imagen_pytorch.py asks common.usable_precisions which precisions to time: on a CPU
    without native bf16 it keeps the fp32 rounds and says in one line why bf16 was skipped."""
    import benchmarks.common
    from benchmarks.common import usable_precisions
    monkeypatch.setattr(benchmarks.common, "cpu_has_bf16", lambda: False)
    kept, why = usable_precisions(["fp32", "bf16"])
    assert kept == ["fp32"] and "no native bf16" in why and "\n" not in why
    assert usable_precisions(["fp32"]) == (["fp32"], None)
    assert usable_precisions(["bf16"])[0] == []
    monkeypatch.setattr(benchmarks.common, "cpu_has_bf16", lambda: True)
    assert usable_precisions(["fp32", "bf16"]) == (["fp32", "bf16"], None)
    script = (Path(__file__).resolve().parents[1] / "benchmarks" / "vs_imagen_pytorch.py").read_text()
    main = script[script.index("def main():"):]
    assert main.index("usable_precisions(args.precisions)") < main.index("for prec in args.precisions")


def test_encoder_fingerprint_is_stable_and_sensitive(encoder):
    assert len(encoder.fingerprint) == 64 and encoder.fingerprint == TextEncoder("tiny").fingerprint
    altered = TextEncoder("tiny")  # a "tiny" T5 with one weight changed: same name, same size
    with torch.no_grad():
        altered.model.shared.weight[5, 0] += 1e-3
    assert altered.fingerprint != encoder.fingerprint and altered.dim == encoder.dim


def test_checkpoints_record_the_encoder_fingerprint(tmp_path, encoder, saved_run):
    """(Refused when it differs: LOAD_CASCADE_ROWS and TRAINER_ROWS, another tiny T5.)"""
    assert load_checkpoint(saved_run)["text_encoder_fingerprint"] == encoder.fingerprint
    assert load_cascade([saved_run]).sample(CAPTION, steps=1).shape == (1, 3, 32, 32)
    shipped = load_checkpoint(BASE32)  # trained with fingerprints: it records the shipped tiny T5's
    assert shipped["text_encoder_fingerprint"] == encoder.fingerprint
    assert load_cascade([BASE32]).text_encoder.name == "tiny"
    legacy = tmp_path / "legacy.pt"  # a checkpoint from before fingerprints existed loads as before
    save_checkpoint({k: v for k, v in shipped.items() if k not in ("format", "text_encoder_fingerprint")}, legacy)
    assert load_cascade([legacy]).text_encoder.name == "tiny"


@pytest.mark.skipif(not BASE32.is_file(), reason="needs the shipped checkpoints")
def test_demo_fine_tunes_the_shipped_base_as_it_was_trained(tmp_path):
    """The demo (CI's first command) fine-tunes base32.pt for a few steps: with the checkpoint's own U-Net preset,
    whatever the stage-0 recipe's preset is today."""
    assert load_checkpoint(BASE32)["train_config"]["preset"] != TrainConfig(stage=0).preset  # quick32 since 2026-12-04
    rc = cli_main(["demo", "--finetune-steps", "2", "--steps", "2", "--out", str(tmp_path)])
    assert rc in (0, None) and (tmp_path / "samples.png").is_file() and (tmp_path / "finetune" / "last.pt").is_file()
    # run twice in one folder (a second look, a re-run Colab cell): the fine-tune starts afresh, both runs write
    for figure in ("samples.png", "thresholding.png"):
        (tmp_path / figure).unlink()
    rc = cli_main(["demo", "--finetune-steps", "2", "--steps", "2", "--out", str(tmp_path)])
    assert rc in (0, None) and all((tmp_path / f).is_file() for f in ("samples.png", "thresholding.png", "thresholding_exact.png"))
    assert torch.load(tmp_path / "finetune" / "last.pt", weights_only=False)["step"] == 2  # not resumed past its steps


# ---------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_same_seed_gives_bit_identical_samples(cascade, sampler):
    """Through both stages (the SR stage's noise augmentation included); the global RNG plays no part."""
    run = lambda seed: cascade.sample(["a large teal square", "a red circle above a blue square"], steps=3,
                                      sampler=sampler, seed=seed, return_all_stages=True)
    first = run(11)
    torch.manual_seed(1234)
    torch.rand(100)  # disturb the global generator: sampling must not read it
    again = run(11)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert torch.equal(run(np.int64(11))[-1], first[-1])  # a numpy seed (from np.arange, say) is the same seed
    assert not torch.equal(first[0], run(12)[0])


# ---------------------------------------------------------------- fuzz
def call(case, fn, shape=None):
    """Run fn(): it must return finite tensors (of `shape`, when given) or raise a one-sentence
    MinimagenError. Anything else fails with the case printed. Returns 'ok' or 'error'."""
    try:
        out = fn()
    except MinimagenError as e:
        message = str(e)
        assert message.endswith(".") and "\n" not in message, f"{case}: message {message!r}"
        return "error"
    except Exception as e:  # noqa: BLE001: exactly what this test exists to catch
        pytest.fail(f"{case} raised {type(e).__name__}: {e}")
    for o in out if isinstance(out, tuple) else (out,):
        assert torch.is_tensor(o) and torch.isfinite(o).all(), f"{case}: non-finite output {o}"
        assert shape is None or tuple(o.shape) == tuple(shape), f"{case}: shape {tuple(o.shape)} != {shape}"
    return "ok"


def pick(rng, good, bad, p_bad=0.15):
    """Usually a valid value, sometimes a wrong one: a case with one mistake tests its message."""
    return rng.choice(bad if rng.random() < p_bad else good)


DTYPES = [torch.float16, torch.bfloat16, torch.float64]
BAD_DTYPES = [torch.int64, torch.uint8, torch.bool]
KINDS = ["normal", "normal", "unit", "zeros", "huge", "negative", "tiny"]
BAD_KINDS = ["nan", "inf", "-inf"]


def random_tensor(rng, shape, dtype=None, kind=None):
    """A tensor of this shape and a random (or given) dtype and kind of values."""
    dtype = dtype or (torch.float32 if rng.random() < 0.5 else pick(rng, DTYPES, BAD_DTYPES, 0.3))
    kind = kind or pick(rng, KINDS, BAD_KINDS, 0.15)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(rng.randrange(2**31)), dtype=torch.float64)
    x = {"unit": x.sigmoid(), "zeros": x * 0, "huge": x * 1e6, "negative": -x.abs() * 5, "tiny": x * 1e-30}.get(kind, x)
    if kind in ("nan", "inf", "-inf") and x.numel():
        x.view(-1)[rng.randrange(x.numel())] = float(kind)
    return x > 0 if dtype == torch.bool else x.to(dtype)


PERCENTILES = [0.995, 0.9, 1.0, np.float32(0.9)]
METHODS, BAD_METHODS = list(D.THRESHOLDING), ["DYNAMIC", "clip", None, 3]
RULES = METHODS + [D.Thresholding("dynamic", p, cap) for p in PERCENTILES for cap in (None, 1.5)]
BATCH_SHAPES = [(5,), (2, 3), (2, 3, 4, 4), (0, 3, 4, 4), (1, 2, 3, 4, 5), (3, 1, 1, 1)]


def test_fuzz_diffusion_functions():
    """The diffusion functions are pure maths and check no argument (Imagen.sample, Imagen.loss and inpaint check
    theirs once, test_fuzz_imagen_sample_and_loss below): on any batch shape, float32/float64 and scale of values
    they return finite tensors of the right shape, and a wrong name is still refused with our error."""
    rng, outcomes = random.Random(7), []
    for i in range(420):
        f, bad = i % 7, rng.random() < 0.15  # bad: one wrong name in this case
        x = random_tensor(rng, rng.choice(BATCH_SHAPES), rng.choice([torch.float32, torch.float64]), rng.choice(KINDS))
        log_snr = torch.rand(x.shape[0], dtype=x.dtype) * (D.LOG_SNR_MAX - D.LOG_SNR_MIN) + D.LOG_SNR_MIN
        other = random_tensor(rng, x.shape, x.dtype, rng.choice(KINDS))
        shape = x.shape
        if f == 0:
            rule = rng.choice(BAD_METHODS if bad else RULES)
            case, fn = f"threshold({x!r:.80}, {rule!r})", lambda: D.threshold(x, rule)
        elif f == 1:
            p, cap = rng.choice(PERCENTILES), rng.choice([None, 1.0, 1.5, 1e9])
            case, fn = f"dynamic_threshold({x!r:.80}, {p!r}, {cap!r})", lambda: D.dynamic_threshold(x, p, cap)
            bad = False
        elif f == 2:
            name = rng.choice(["sigmoid", None, ["cosine"]] if bad else list(D.SCHEDULES))
            t = x.abs().clamp(max=1)
            case, fn = f"get_schedule({name!r})({t!r:.80})", lambda: D.get_schedule(name)(t)
        elif f == 3:
            case, fn, bad = f"q_sample({x!r:.60}, {log_snr!r:.60}, {other!r:.60})", lambda: D.q_sample(x, log_snr, other), False
        elif f == 4:
            objective = rng.choice(["noise", None] if bad else list(D.OBJECTIVES))
            case = f"prediction_to_x0({objective!r}, {other!r:.60}, {x!r:.60}, {log_snr!r:.60})"
            fn = lambda: D.prediction_to_x0(objective, other.clamp(-1e6, 1e6), x, log_snr)
        elif f == 5:
            w = rng.choice([0, 1, 3.0, 7.5, -2, 1e3])
            case, fn, bad = f"classifier_free_guidance({x!r:.60}, {other!r:.60}, {w!r})", lambda: D.classifier_free_guidance(x, other, w), False
        else:
            shape = rng.choice([(2, 3, 4, 4), (1, 1), (3,), (1, 3, 2, 2, 2)])
            names = dict(sampler=list(D.SAMPLERS), objective=list(D.OBJECTIVES), thresholding=RULES, schedule=list(D.SCHEDULES))
            kwargs = {k: rng.choice(v) for k, v in names.items()}
            if bad:
                kwargs[rng.choice(list(names))] = rng.choice(["euler", "noise", "clip", None])
            kwargs.update(steps=rng.choice([1, 2, 3]), eta=rng.choice([0.0, 0.5, 1.0]),
                          generator=torch.Generator().manual_seed(i))
            scale = rng.choice([0.5, 1.0, 1e3])
            model_fn = lambda x, log_snr: torch.tanh(x) * scale
            case, fn = f"sample_loop(shape={shape!r}, {kwargs})", lambda: D.sample_loop(model_fn, shape, **kwargs)
        outcome = call(f"case {i}: {case}", fn, shape)
        assert outcome == ("error" if bad else "ok"), f"case {i}: {case} gave {outcome}"
        outcomes.append(outcome)
    assert 0.05 < outcomes.count("error") / len(outcomes) < 0.2, outcomes.count("error")


CAPTIONS = [CAPTION, [CAPTION, "a blue square"], "日本 ✓", "", [], None, 3, [CAPTION, 5]]
IMAGE_SIZES = [32, 64, 16]


def test_fuzz_imagen_sample_and_loss(cascade):
    rng, outcomes = random.Random(11), []
    for i in range(60):
        captions = pick(rng, CAPTIONS[:3], CAPTIONS[3:])
        B = 1 if isinstance(captions, str) else len(captions) if isinstance(captions, list) else 1
        if i % 3:
            kwargs = dict(guidance_scale=pick(rng, [0, 1, 3.0, 1e6], [-1, float("nan"), float("inf"), "3"]),
                          thresholding=pick(rng, RULES, BAD_METHODS),
                          steps=pick(rng, [1, 2], [0, -1, 1.5]), sampler=pick(rng, ["ddim", "ddpm"], ["euler"]),
                          seed=pick(rng, [0, 5, -1], [2**70, 1.5]), stages=pick(rng, [None, 1, 1, 2], [0, 3]),
                          lowres_aug_level=pick(rng, [0.0, 0.2, 1.0], [-0.1, float("nan")]), bf16=rng.random() < 0.2)
            size = cascade.image_sizes[(kwargs["stages"] or 2) - 1] if kwargs["stages"] in (None, 1, 2) else None
            case, fn = f"sample({captions!r}, {kwargs})", lambda: cascade.sample(captions, **kwargs)
            shape = (B, 3, size, size) if size else None
        else:
            stage = pick(rng, [0, 1], [2, -1])
            size = rng.choice(IMAGE_SIZES) if rng.random() < 0.15 else cascade.image_sizes[min(max(stage, 0), 1)]
            images = random_tensor(rng, (B, 3, size, size), kind=pick(rng, ["unit", "zeros"], ["nan", "huge"]))
            if images.is_floating_point():
                images = images * 2 - 1 if rng.random() < 0.8 else images
            case, fn, shape = f"loss({images!r:.80}, {captions!r}, {stage})", lambda: cascade.loss(images, captions, stage), ()
        outcomes.append(call(f"case {i}: {case}", fn, shape))
    assert 0.15 < outcomes.count("ok") / len(outcomes) < 0.85, outcomes.count("ok")
