"""Checkpoints that lose nothing and run no code.

One file per stage: the U-Net config, the text encoder it was trained with (its name and a
fingerprint of its weights), the diffusion settings, the training config and step, the weights
(raw and EMA) and the optimizer state.
Written atomically (temp file + fsync + rename: a run killed mid-write leaves the previous file
intact) and read with torch.load(weights_only=True), so a downloaded checkpoint cannot execute code.
"""
import os
import tempfile
from pathlib import Path

import torch

from .errors import MinimagenError

FORMAT = "minimagen-stage-v1"


def save_checkpoint(state: dict, path) -> Path:
    """Atomically write `state` (tensors, numbers, strings, lists, dicts) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.chmod(tmp, 0o644)      # mkstemp makes it private; a checkpoint is meant to be shared
        os.replace(tmp, path)     # atomic on POSIX: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by save_checkpoint; one clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise MinimagenError(f"checkpoint {path} does not exist: train one with `python -m minimagen train` "
                             "or use those in data/checkpoints/.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if "Unsupported global" in str(exc):  # a readable pickle that names code (a class, a function) to call
            raise MinimagenError(f"{path} holds Python objects besides tensors and plain data, which could run code "
                                 "when loaded, so it was refused: use a checkpoint written by `python -m minimagen "
                                 "train`, or re-save only the tensors.") from None
        raise MinimagenError(f"checkpoint {path} is truncated or corrupted and cannot be read ({type(exc).__name__}): "
                             "use an earlier checkpoint or train again.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MinimagenError(f"{path} is not a minimagen stage checkpoint (format {FORMAT}): "
                             "pass a file written by `python -m minimagen train`.")
    return state


def check_text_encoder(state: dict, encoder, path) -> None:
    """Refuse a checkpoint trained with another version of its text encoder than `encoder` (same name,
    different weights or vocabulary). Checkpoints without a fingerprint (from before fingerprints existed)
    are trusted on their encoder's name, as before."""
    stored = state.get("text_encoder_fingerprint")
    if stored is None or stored == encoder.fingerprint:
        return
    name = state.get("text_encoder")
    fix = ("rebuild data/tiny-t5 with `python data/build_tiny_t5.py` (seed 0, the library versions it was "
           "built with) or retrain the stage" if name in ("tiny", "tiny-t5") else
           "load the exact encoder it was trained with (pass text_encoder=) or retrain the stage")
    raise MinimagenError(f"{path} was trained with a different {name!r} text encoder than the one loaded now "
                         f"(fingerprint {stored[:12]}... vs {encoder.fingerprint[:12]}...): {fix}.")


def config_differences(stored: dict, current: dict, fields) -> list[str]:
    """'field: stored -> current' for each of `fields` that differs (lists and tuples compare equal)."""
    norm = lambda v: list(v) if isinstance(v, tuple) else v
    return [f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in fields if norm(stored.get(k)) != norm(current.get(k))]
