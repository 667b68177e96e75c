"""Training: exact resume, NaN stop that keeps the last good checkpoint, atomic checkpoints under
SIGKILL, config-mismatch errors, the CLI, and DDP with 2 CPU processes (gloo)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minimagen.checkpoint import load_checkpoint, save_checkpoint
from minimagen.errors import MinimagenError
from minimagen.imagen import load_cascade
from minimagen.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent


def test_resume_gives_the_same_loss_sequence(tmp_path, train_config):
    straight = Trainer(train_config(tmp_path, out_dir=str(tmp_path / "a"))).train()
    first = Trainer(train_config(tmp_path, out_dir=str(tmp_path / "b"))).train(steps=3)  # "interrupted" after 3
    resumed = Trainer(train_config(tmp_path, out_dir=str(tmp_path / "b")))              # picks up last.pt
    assert resumed.step == 3
    rest = resumed.train()
    assert first + rest == straight
    assert (tmp_path / "b" / "loss.csv").read_text().count("\n") == 7  # header + 6 steps, no duplicates
    assert (tmp_path / "b" / "loss.png").exists()


def test_a_finished_run_resumed_trains_nothing_and_still_summarises(tmp_path, capsys, train_config):
    """Re-running a finished run (the demo's pattern, issue 31): no steps, an empty loss list, and neither the
    summary, the loss plot nor the export divides by or indexes into it."""
    Trainer(train_config(tmp_path, steps=3)).train()
    again = Trainer(train_config(tmp_path, steps=3))
    assert again.train() == [] and "nothing to train" in capsys.readouterr().out
    (tmp_path / "run" / "loss.csv").unlink()  # a loss log lost (or never written) before a resume
    assert Trainer(train_config(tmp_path, steps=3)).train() == []
    assert (tmp_path / "run" / "loss.csv").read_text() == "step,loss,lr,seconds\n" and (tmp_path / "run" / "ema.pt").is_file()


def test_preview_grid_of_a_dataset_smaller_than_the_grid(tmp_path, train_config):
    Trainer(train_config(tmp_path, steps=1, dataset_size=3, sample_every=1)).train()
    assert (tmp_path / "run" / "samples" / "step_000001.png").is_file()


def test_plot_loss_of_a_log_without_rows_draws_nothing(tmp_path):
    from minimagen.plot import plot_loss
    log = tmp_path / "loss.csv"
    log.write_text("step,loss,lr,seconds\n")
    assert plot_loss(log, tmp_path / "loss.png") is None and not (tmp_path / "loss.png").exists()


def test_checkpoint_records_what_sampling_needs(tmp_path, train_config):
    Trainer(train_config(tmp_path, steps=2)).train()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["text_encoder"] == "tiny" and state["stage"] == 0 and state["image_size"] == 32
    model = load_cascade([tmp_path / "run" / "last.pt"])
    assert model.text_encoder.name == "tiny"
    assert model.sample("a small red circle", steps=2).shape == (1, 3, 32, 32)
    exported = load_cascade([tmp_path / "run" / "ema.pt"])  # fp16 EMA only: same samples up to rounding
    torch.testing.assert_close(exported.sample("a small red circle", steps=2), model.sample("a small red circle", steps=2),
                               atol=2e-2, rtol=0)
    assert (tmp_path / "run" / "ema.pt").stat().st_size < 0.5 * (tmp_path / "run" / "last.pt").stat().st_size


def test_sr_stage_trains_and_previews(tmp_path, train_config):
    losses = Trainer(train_config(tmp_path, stage=1, preset="tiny-sr64", steps=2, sample_every=2)).train()
    assert len(losses) == 2 and all(l == l for l in losses)
    assert list((tmp_path / "run" / "samples").glob("*.png"))


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, train_config):
    trainer = Trainer(train_config(tmp_path, steps=3))
    trainer.train()
    good = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    trainer.sched.base_lrs = [1e30]  # blows up the weights on the next steps
    with pytest.raises(MinimagenError, match=r"at step \d+.*learning rate"):
        trainer.train(steps=12)
    kept = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert all(torch.isfinite(v).all() for v in kept.values() if v.is_floating_point())
    assert good.keys() == kept.keys()


def test_resume_with_changed_settings_names_the_fields(tmp_path, train_config):
    Trainer(train_config(tmp_path, steps=2)).train()
    with pytest.raises(MinimagenError, match="batch_size: 4 -> 8"):
        Trainer(train_config(tmp_path, steps=4, batch_size=8))


def test_checkpoint_of_another_stage_or_preset_is_refused(tmp_path, train_config):
    Trainer(train_config(tmp_path, steps=1)).train()
    with pytest.raises(MinimagenError, match="stage-0"):
        Trainer(train_config(tmp_path, stage=1, preset="tiny-sr64", out_dir=str(tmp_path / "sr"),
                             init_from=str(tmp_path / "run" / "last.pt")))


@pytest.mark.parametrize("content,match", [(b"", "truncated or corrupted"), (b"\x00garbage" * 10, "truncated or corrupted")])
def test_corrupted_checkpoint(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(MinimagenError, match=match):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint({"x": torch.randn(1000)}, tmp_path / "ok.pt")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(MinimagenError, match="truncated or corrupted"):
        load_checkpoint(path)


def test_killed_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"version": 0, "w": torch.zeros(10)}, path)
    writer = subprocess.Popen([sys.executable, "-c", f"""
import torch
from minimagen.checkpoint import save_checkpoint
big = torch.randn(20_000_000)  # 80 MB: each write takes a while
i = 1
while True:
    save_checkpoint({{"version": i, "w": big}}, {str(path)!r}); i += 1
"""], cwd=ROOT)
    time.sleep(4)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    state = load_checkpoint(path)
    assert state["version"] >= 0 and state["w"].numel() in (10, 20_000_000)


def test_unset_settings_take_the_stages_recipe_and_flags_override_it():
    from minimagen.cli import add_train_args, config_from_args
    from minimagen.train import STAGE_RECIPES
    import argparse
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    for stage, recipe in STAGE_RECIPES.items():
        c = config_from_args(parser.parse_args(["--stage", str(stage)]))
        assert {k: getattr(c, k) for k in recipe} == recipe
    c = config_from_args(parser.parse_args(["--stage", "0", "--lr", "3e-4", "--batch-size", "16"]))
    assert (c.lr, c.batch_size, c.ema_decay) == (3e-4, 16, STAGE_RECIPES[0]["ema_decay"])
    assert isinstance(c.lr, float) and isinstance(c.batch_size, int)  # typed from the field, not the None default
    with pytest.raises(MinimagenError, match="lr=-1"):
        TrainConfig(lr=-1)


def test_lr_schedule_warms_up_then_is_constant_or_decays_to_zero():
    from minimagen.train import lr_factor
    const = TrainConfig(steps=100, warmup_steps=10, lr_schedule="constant")
    cos = TrainConfig(steps=100, warmup_steps=10, lr_schedule="cosine")
    assert [lr_factor(s, const) for s in (0, 4, 9, 50, 99)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    assert lr_factor(0, cos) == pytest.approx(0.1) and lr_factor(50, cos) == pytest.approx(0.5)
    assert lr_factor(100, cos) == pytest.approx(0.0, abs=1e-12) and lr_factor(150, cos) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(MinimagenError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")


def test_a_run_from_before_a_setting_existed_still_resumes(tmp_path, train_config):
    """A checkpoint whose train_config lacks a newer field (lr_schedule) resumes with the recipe's value."""
    Trainer(train_config(tmp_path, steps=2)).train()
    path = tmp_path / "run" / "last.pt"
    state = load_checkpoint(path)
    del state["train_config"]["lr_schedule"], state["train_config"]["noise_aug"]
    save_checkpoint(state, path)
    assert Trainer(train_config(tmp_path, steps=3)).step == 2


def test_an_sr_run_from_before_noise_aug_resumes_only_as_what_it_was(tmp_path):
    """SR runs older than the noise_aug setting trained with levels ~ U(0, 1): resuming one under today's
    recipe (no augmentation) would silently change its training, so it is refused; --noise-aug 1 resumes it."""
    sr = lambda **kw: TrainConfig(stage=1, preset="tiny-sr64", batch_size=2, dataset_size=8, sample_every=0,
                                  checkpoint_every=2, text_encoder="tiny", out_dir=str(tmp_path / "sr"), bf16=False, **kw)
    Trainer(sr(steps=2, noise_aug=1.0)).train()
    path = tmp_path / "sr" / "last.pt"
    state = load_checkpoint(path)
    del state["train_config"]["noise_aug"]
    save_checkpoint(state, path)
    with pytest.raises(MinimagenError, match="noise_aug"):
        Trainer(sr(steps=3))
    assert Trainer(sr(steps=3, noise_aug=1.0)).step == 2


def test_cli_train_and_sample(tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "MINIMAGEN_TEXT_ENCODER": "tiny"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "minimagen", *args], cwd=ROOT, env=env,
                                       capture_output=True, text=True, timeout=300)
    r = run("train", "--preset", "tiny32", "--steps", "2", "--batch-size", "2", "--dataset-size", "8",
            "--sample-every", "0", "--out", str(out), "--no-bf16")
    assert r.returncode == 0, r.stderr
    r = run("sample", "--checkpoints", str(out / "last.pt"), "--captions", "a small red circle", "--steps", "2",
            "--out", str(tmp_path / "grid.png"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "grid.png").exists()
    r = run("sample", "--checkpoints", str(tmp_path / "missing.pt"), "--captions", "a small red circle")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_ddp_two_cpu_processes(tmp_path):
    """torchrun with the gloo backend: 2 replicas train and stay in sync."""
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                        "-m", "minimagen", "train", "--preset", "tiny32", "--steps", "3", "--batch-size", "2",
                        "--dataset-size", "8", "--sample-every", "0", "--text-encoder", "tiny", "--out", str(out), "--no-bf16"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 replicas in sync after 3 steps" in r.stdout
    assert load_checkpoint(out / "last.pt")["step"] == 3
