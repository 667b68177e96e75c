"""data/checkpoints/README.md says the command that made each shipped checkpoint. Its flags, read by the CLI's own
parser with today's recipe filling what they leave unset, must give the settings stored in the checkpoint: a recipe
change (such as quick32 becoming the stage-0 U-Net) must not silently change what a documented command trains."""
import argparse
import re
import shlex

import pytest

from minimagen.checkpoint import load_checkpoint
from minimagen.cli import add_train_args, config_from_args
from minimagen.data import DATA_DIR

README = DATA_DIR / "checkpoints" / "README.md"
FIELDS = ("stage", "preset", "steps", "batch_size", "lr", "warmup_steps", "ema_decay", "dataset_size", "objective",
          "schedule", "dataset", "seed")


TRAIN_COMMANDS = {"python -m minimagen train ": 4,  # -> where its arguments start
                  "python benchmarks/archive/textured.py train ": 3}  # the archived textured worlds: --world, then the same


def documented_commands() -> dict[str, list[str]]:
    """{checkpoint file: the train command's arguments} for each train command whose run folder a later
    `cp runs/<run>/ema.pt data/checkpoints/<file>` ships."""
    text = re.sub(r"\\\n\s*", " ", README.read_text())  # join continued lines
    commands, shipped = {}, {}
    for line in text.splitlines():
        line = line.strip()
        for start, skip in TRAIN_COMMANDS.items():
            if line.startswith(start):
                args = shlex.split(line)[skip:]
                commands[args[args.index("--out") + 1]] = args
        m = re.match(r"cp (runs/\S+)/ema\.pt data/checkpoints/(\S+\.pt)", line)
        if m and m.group(1) in commands:
            shipped[m.group(2)] = commands[m.group(1)]
    return shipped


def test_the_readme_documents_the_regime_and_sr_checkpoints():
    assert {"contrast32.pt", "textured32.pt", "textured32_eps.pt", "toned32.pt", "toned32_eps.pt", "sr64.pt"} <= set(documented_commands())


@pytest.mark.parametrize("name,args", sorted(documented_commands().items()))
def test_a_documented_command_trains_what_its_checkpoint_stores(name, args):
    path = DATA_DIR / "checkpoints" / name
    if not path.is_file():
        pytest.skip(f"{name} is not in this checkout")
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    parser.add_argument("--world")  # textured.py's: the dataset it passes the Trainer
    parsed = parser.parse_args(args)
    config = config_from_args(parsed)
    config.dataset = parsed.world or config.dataset
    stored = load_checkpoint(path)["train_config"]
    differ = {f: (stored[f], getattr(config, f)) for f in FIELDS if f in stored and stored[f] != getattr(config, f)}
    assert not differ, f"{name}: stored -> documented command: {differ}"
