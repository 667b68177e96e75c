"""Robustness (issue 7): each mistake of a learner's first hour ends in one MinimagenError sentence that
names the fix (or in one warning), never in a stack trace from inside torch or a silently wrong result.

The checklist: each bad input -> the test that feeds it through the public API and checks the message.

Captions
  empty string, whitespace only, non-string items   test_text.py::test_bad_captions_raise,
                                                    test_robustness.py::test_bad_captions_name_the_fix
  a single string where a list is expected: works   test_text.py::test_single_string_and_non_ascii,
                                                    test_robustness.py::test_caption_containers_long_and_non_ascii_captions
  longer than max_length: truncated, one warning    test_text.py::test_truncation_warns_once_with_count,
                                                    test_robustness.py::test_caption_containers_long_and_non_ascii_captions
  non-ASCII text: works                             test_text.py::test_single_string_and_non_ascii (same test here)
Images
  wrong size, channels, uint8 0..255, NaN pixels    test_imagen.py::test_bad_training_images_get_one_clear_error,
                                                    test_robustness.py::test_bad_images_through_loss_and_sample
  float64 / float16 images in [-1, 1]: work         test_robustness.py::test_float64_and_float16_images_work
  an empty dataset folder                           test_data.py::test_folder_loader_missing_paths,
                                                    test_robustness.py::test_trainer_on_an_empty_folder
  an unreadable image file                          test_data.py::test_folder_loader_errors_name_the_problem
  captions rows that don't match the images         test_data.py::test_folder_loader_errors_name_the_problem
Sampling
  guidance < 0, steps <= 0, unknown thresholding    test_imagen.py::test_sampling_argument_errors,
  (names the valid ones), percentile outside        test_robustness.py::test_sampling_arguments_name_the_fix
  (0, 1], a stage index out of range
  an SR stage run without its low-res input         test_imagen.py::test_sr_only_cascade_needs_its_lowres_input,
                                                    test_robustness.py::test_bad_images_through_loss_and_sample
  a model that predicts NaN (diverged weights)      test_robustness.py::test_nan_weights_are_reported_not_sampled
Models and checkpoints
  a truncated or corrupted checkpoint file          test_train.py::test_corrupted_checkpoint, ::test_truncated_checkpoint
  a checkpoint of another preset/config (names      test_train.py::test_resume_with_changed_settings_names_the_fields,
  the fields that differ)                           test_robustness.py::test_checkpoint_of_another_preset_names_the_fields
  a checkpoint of another stage                     test_train.py::test_checkpoint_of_another_stage_or_preset_is_refused,
                                                    test_robustness.py::test_load_cascade_refuses_misplaced_or_broken_stages
  a text encoder whose size doesn't match the U-Net test_imagen.py::test_mismatched_text_encoder_is_refused,
                                                    test_unet.py::test_error_messages
  same encoder name, different weights              test_robustness.py::test_encoder_fingerprint_is_stable_and_sensitive,
                                                    test_robustness.py::test_checkpoints_record_and_check_the_encoder_fingerprint
Environment
  t5-small requested with no network (fast)         test_text.py::test_hub_model_offline_fails_fast
  CUDA requested but absent, unknown device names   test_robustness.py::test_device_requests_name_the_fix
  bf16 asked on a CPU without support               test_robustness.py::test_bf16_on_a_cpu_without_it
  training settings out of range                    test_robustness.py::test_train_config_errors_name_the_field
Nothing lost
  atomic checkpoints (SIGKILL mid-write)            test_train.py::test_killed_mid_write_leaves_the_previous_checkpoint_loadable
  exact resume                                      test_train.py::test_resume_gives_the_same_loss_sequence
  NaN stop keeping the last good checkpoint         test_train.py::test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint
  weights_only loading (no code runs)               test_robustness.py::test_checkpoint_that_would_run_code_is_refused
Reproducible
  same seed -> bit-identical samples, both samplers test_imagen.py::test_sample_shapes_and_determinism,
                                                    test_diffusion.py::test_ddim_eta_zero_is_deterministic_and_seeded,
                                                    test_robustness.py::test_same_seed_gives_bit_identical_samples
Fuzz: random shapes, dtypes, values and arguments  test_robustness.py::test_fuzz_imagen_sample_and_loss,
  either work (finite, right shape) or raise ours   (the pure diffusion functions: test_fuzz_diffusion_functions)
"""
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

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
from minimagen.unet import Unet

BASE32, SR64 = DATA_DIR / "checkpoints" / "base32.pt", DATA_DIR / "checkpoints" / "sr64.pt"
CAPTION = "a small red circle"


def config(tmp_path, **kw):
    base = dict(preset="tiny32", steps=1, batch_size=2, dataset_size=8, text_encoder="tiny", out_dir=str(tmp_path / "run"),
                sample_every=0, checkpoint_every=1, log_every=1, warmup_steps=1, bf16=False)
    return TrainConfig(**{**base, **kw})


# ---------------------------------------------------------------- captions
@pytest.mark.parametrize("bad", ["", "  \t\n", [None], [3], [CAPTION, ""], [], None, 3, {"a": 1}])
def test_bad_captions_name_the_fix(cascade, encoder, bad):
    fix = r"pass (non-empty text|a caption string)"
    with pytest.raises(MinimagenError, match=fix):
        encoder.encode(bad)
    with pytest.raises(MinimagenError, match=fix):
        cascade.sample(bad, steps=1, stages=1)
    with pytest.raises(MinimagenError, match=fix):
        cascade.loss(torch.zeros(1, 3, 32, 32), bad)


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


# ---------------------------------------------------------------- images
BAD_IMAGES = [
    (torch.rand(2, 3, 16, 16), "resize"), (torch.rand(2, 1, 32, 32), r"3 \(RGB\)"),
    ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), r"images.float\(\) / 127.5 - 1"),
    (torch.full((2, 3, 32, 32), float("nan")), "NaN"), (torch.rand(2, 3, 32, 32) * 255, r"0..255 images / 127.5 - 1"),
    (torch.rand(3, 32, 32), "torch.stack"), (torch.zeros(0, 3, 32, 32), "at least one image"),
    (np.zeros((2, 3, 32, 32), np.float32), r"torch.as_tensor")]


@pytest.mark.parametrize("images,match", BAD_IMAGES)
def test_bad_images_through_loss_and_sample(cascade, encoder, images, match):
    with pytest.raises(MinimagenError, match=match):
        cascade.loss(images, [CAPTION] * 2, stage=0)
    sr_only = Imagen([cascade.unets[1]], encoder, lowres_size=32)  # the same checks guard lowres_images
    with pytest.raises(MinimagenError, match=match):
        sr_only.sample([CAPTION] * 2, steps=1, lowres_images=images)


def test_lowres_images_must_fit_the_cascade(cascade, encoder):
    sr_only = Imagen([cascade.unets[1]], encoder, lowres_size=32)
    with pytest.raises(MinimagenError, match="one caption per image"):
        sr_only.sample([CAPTION] * 3, steps=1, lowres_images=torch.zeros(2, 3, 32, 32))
    with pytest.raises(MinimagenError, match="would be ignored"):  # a base cascade makes its own low-res images
        cascade.sample(CAPTION, steps=1, lowres_images=torch.zeros(1, 3, 32, 32))


def test_float64_and_float16_images_work(cascade):
    """Images in [-1, 1] of another float dtype are converted (they used to fail inside the first conv)."""
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        loss = cascade.loss((torch.rand(2, 3, 64, 64) * 2 - 1).to(dtype), [CAPTION] * 2, stage=1)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_trainer_on_an_empty_folder(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(MinimagenError, match="holds no images.*put your images in it"):
        Trainer(config(tmp_path, dataset=str(tmp_path / "data")))


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize("kwargs,match", [
    ({"guidance_scale": -1}, ">= 0"), ({"guidance_scale": float("nan")}, ">= 0"),
    ({"guidance_scale": float("inf")}, ">= 0"), ({"guidance_scale": "3"}, ">= 0"),
    ({"steps": 0}, "positive integer.*try 50"), ({"steps": -3}, "positive integer"), ({"steps": 2.5}, "positive integer"),
    ({"thresholding": "clip"}, r"\['none', 'static', 'dynamic'\]"), ({"thresholding": None}, r"\['none', 'static'"),
    ({"percentile": 0.0}, rf"\(0, 1\].*{D.DYNAMIC_PERCENTILE}"), ({"cap": 0.5}, "cap must be None"), ({"percentile": 1.5}, r"\(0, 1\]"), ({"percentile": float("nan")}, r"\(0, 1\]"),
    ({"percentile": "0.9"}, r"\(0, 1\]"), ({"sampler": "euler"}, "ddim"),
    ({"stages": 0}, "out of range.*1..2"), ({"stages": 3}, "out of range.*1..2"), ({"stages": "1"}, "out of range"),
    ({"seed": 1.5}, "integer"), ({"seed": 2**70}, "integer"), ({"lowres_aug_level": float("nan")}, r"\[0, 1\]")])
def test_sampling_arguments_name_the_fix(cascade, kwargs, match):
    with pytest.raises(MinimagenError, match=match):
        cascade.sample(CAPTION, **{"steps": 1, **kwargs})


@pytest.mark.parametrize("stage", [2, -1, "0", None])
def test_loss_stage_out_of_range(cascade, stage):
    with pytest.raises(MinimagenError, match="out of range.*stages 0..1"):
        cascade.loss(torch.zeros(1, 3, 32, 32), CAPTION, stage=stage)


def test_nan_weights_are_reported_not_sampled(cascade, encoder):
    """A diverged U-Net (NaN weights) used to give NaN images that clamp() passes through silently."""
    broken = Unet(cascade.unets[0].config)
    broken.load_state_dict(cascade.unets[0].state_dict())
    with torch.no_grad():
        for p in broken.parameters():
            p.fill_(float("nan"))
    with pytest.raises(MinimagenError, match="weights may hold NaN.*earlier checkpoint"):
        Imagen([broken], encoder).sample(CAPTION, steps=2)
    with pytest.raises(MinimagenError, match="lower guidance_scale"):  # the same check, once, guards inpaint
        inpaint(Imagen([broken], encoder), torch.zeros(1, 3, 32, 32), torch.ones(1, 1, 32, 32), CAPTION, steps=2, resample=1)


def test_cli_errors_are_one_line_without_traceback(capsys):
    rc = cli_main(["sample", "--checkpoints", str(BASE32), "--captions", CAPTION, "--steps", "1",
                   "--thresholding", "clip", "--out", "/nonexistent/never-written.png"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: Unknown thresholding 'clip'") and "Traceback" not in err
    assert err.count("\n") == 1


# ---------------------------------------------------------------- models and checkpoints
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


def test_checkpoint_of_another_preset_names_the_fields(tmp_path):
    Trainer(config(tmp_path)).save()
    with pytest.raises(MinimagenError, match=r"dim: 16 -> 64.*--preset"):
        Trainer(config(tmp_path, preset="base32", out_dir=str(tmp_path / "other"), init_from=str(tmp_path / "run" / "last.pt")))


def test_load_cascade_refuses_misplaced_or_broken_stages(tmp_path):
    with pytest.raises(MinimagenError, match="cascade order"):
        load_cascade([SR64, BASE32])
    with pytest.raises(MinimagenError, match="cascade order"):
        load_cascade([BASE32, BASE32])
    with pytest.raises(MinimagenError, match="no checkpoint paths"):
        load_cascade([])
    with pytest.raises(MinimagenError, match="only the EMA weights.*use_ema=True"):
        load_cascade([BASE32], use_ema=False)  # the shipped files are EMA-only exports
    state = load_checkpoint(SR64)
    state["unet_config"]["dim"] = 48  # weights no longer fit the config (an edited or foreign file)
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, tmp_path / "edited.pt")
    with pytest.raises(MinimagenError, match="do not fit its U-Net config"):
        load_cascade([tmp_path / "edited.pt"])


class RunsCode:
    """Unpickling this would create a file: what a malicious checkpoint could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker, path = tmp_path / "code-ran", tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "ema": {}, "payload": RunsCode(marker)}, path)
    with pytest.raises(MinimagenError, match="could run code.*refused"):
        load_checkpoint(path)
    with pytest.raises(MinimagenError, match="could run code"):
        load_cascade([path])
    assert not marker.exists()
    torch.load(path, weights_only=False)["payload"].close()  # the file is readable, and its payload real:
    assert marker.exists()                                   # only weights_only=True stopped it


def test_encoder_fingerprint_is_stable_and_sensitive(encoder):
    assert len(encoder.fingerprint) == 64 and encoder.fingerprint == TextEncoder("tiny").fingerprint
    altered = TextEncoder("tiny")  # a "tiny" T5 with one weight changed: same name, same size
    with torch.no_grad():
        altered.model.shared.weight[5, 0] += 1e-3
    assert altered.fingerprint != encoder.fingerprint and altered.dim == encoder.dim


def test_checkpoints_record_and_check_the_encoder_fingerprint(tmp_path, encoder):
    Trainer(config(tmp_path)).save()
    path = tmp_path / "run" / "last.pt"
    state = load_checkpoint(path)
    assert state["text_encoder_fingerprint"] == encoder.fingerprint
    assert load_cascade([path]).sample(CAPTION, steps=1).shape == (1, 3, 32, 32)
    state["text_encoder_fingerprint"] = "0" * 64  # as if trained with an older data/tiny-t5
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, path)
    with pytest.raises(MinimagenError, match="different 'tiny' text encoder.*build_tiny_t5.py"):
        load_cascade([path])
    with pytest.raises(MinimagenError, match="build_tiny_t5.py"):
        Trainer(config(tmp_path))  # resuming checks it too
    shipped = load_checkpoint(BASE32)  # trained with fingerprints: it records the shipped tiny T5's
    assert shipped["text_encoder_fingerprint"] == encoder.fingerprint
    assert load_cascade([BASE32]).text_encoder.name == "tiny"
    legacy = tmp_path / "legacy.pt"  # a checkpoint from before fingerprints existed loads as before
    save_checkpoint({k: v for k, v in shipped.items() if k not in ("format", "text_encoder_fingerprint")}, legacy)
    assert load_cascade([legacy]).text_encoder.name == "tiny"


# ---------------------------------------------------------------- environment
def test_device_requests_name_the_fix(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(MinimagenError, match="no CUDA GPU.*device='cpu'"):
            pick_device(name)
    with pytest.raises(MinimagenError, match="Unknown device 'gpu'.*'cpu' or 'cuda'"):
        pick_device("gpu")
    assert pick_device(None).type == "cpu"
    with pytest.raises(MinimagenError, match="no CUDA GPU"):
        load_cascade([BASE32], device="cuda")
    with pytest.raises(MinimagenError, match="no CUDA GPU"):
        Trainer(config(tmp_path, device="cuda"))
    rc = cli_main(["sample", "--checkpoints", str(BASE32), "--captions", CAPTION, "--device", "cuda"])
    assert rc == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_bf16_on_a_cpu_without_it(monkeypatch, tmp_path):
    import minimagen.device
    monkeypatch.setattr(minimagen.device, "cpu_has_bf16", lambda: False)
    cpu = torch.device("cpu")
    assert resolve_bf16(cpu, None) is False and resolve_bf16(cpu, False) is False
    with pytest.raises(MinimagenError, match="no native bf16.*--no-bf16"):
        resolve_bf16(cpu, True)
    with pytest.raises(MinimagenError, match="--no-bf16"):
        Trainer(config(tmp_path, bf16=True))
    monkeypatch.setattr(minimagen.device, "cpu_has_bf16", lambda: True)
    assert resolve_bf16(cpu, None) is True


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


def test_sample_bf16_without_support_and_numpy_steps(monkeypatch, cascade):
    """Imagen.sample(bf16=True) on a CPU without bf16 says so (not a silent emulated run); a numpy
    integer step count (e.g. from np.arange) is a valid step count."""
    import numpy as np
    import minimagen.device
    monkeypatch.setattr(minimagen.device, "cpu_has_bf16", lambda: False)
    with pytest.raises(MinimagenError, match="no native bf16"):
        cascade.sample("a red circle", steps=2, stages=1, bf16=True)
    monkeypatch.undo()
    out = cascade.sample("a red circle", steps=np.int64(2), stages=1)
    assert out.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("kwargs,match", [
    ({"lr": 0}, "lr=0"), ({"warmup_steps": -1}, "warmup_steps"), ({"checkpoint_every": 0}, "checkpoint_every=0"),
    ({"log_every": 0}, "log_every"), ({"cond_drop_prob": 1.5}, r"cond_drop_prob=1.5 \(use in \[0, 1\]\)"),
    ({"ema_decay": 1.0}, "ema_decay"), ({"objective": "noise"}, "'eps', 'v', 'x0'"), ({"schedule": "sigmoid"}, "cosine"),
    ({"loss_weighting": "snr"}, "min_snr"), ({"stage": 3}, "stage must be 0"), ({"steps": 0}, "positive")])
def test_train_config_errors_name_the_field(tmp_path, kwargs, match):
    with pytest.raises(MinimagenError, match=match):
        config(tmp_path, **kwargs)


def test_no_warmup_is_allowed(tmp_path):
    trainer = Trainer(config(tmp_path, warmup_steps=0))  # used to divide by zero in the LR schedule
    assert trainer.sched.get_last_lr() == [trainer.config.lr]


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


PERCENTILES, BAD_PERCENTILES = [0.995, 0.9, 1.0, np.float32(0.9)], [0.0, -0.1, 1.5, float("nan"), "0.9", None]
METHODS, BAD_METHODS = list(D.THRESHOLDING), ["DYNAMIC", "clip", None, 3]
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
            method, p = rng.choice(BAD_METHODS if bad else METHODS), rng.choice(PERCENTILES)
            case, fn = f"threshold({x!r:.80}, {method!r}, {p!r})", lambda: D.threshold(x, method, p)
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
            names = dict(sampler=list(D.SAMPLERS), objective=list(D.OBJECTIVES), thresholding=METHODS, schedule=list(D.SCHEDULES))
            kwargs = {k: rng.choice(v) for k, v in names.items()}
            if bad:
                kwargs[rng.choice(list(names))] = rng.choice(["euler", "noise", "clip", None])
            kwargs.update(steps=rng.choice([1, 2, 3]), percentile=rng.choice(PERCENTILES), eta=rng.choice([0.0, 0.5, 1.0]),
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
                          thresholding=pick(rng, METHODS, BAD_METHODS), percentile=pick(rng, PERCENTILES, BAD_PERCENTILES),
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
