"""Build data/tiny-t5, the offline stand-in for T5 that `TextEncoder("tiny")` loads: a SentencePiece tokenizer
trained on the toy captions and a T5 encoder with RANDOM weights, byte for byte reproducible from its seed
(same library versions; tests/test_text.py rebuilds it and compares). Offline: it needs no download.

    python data/build_tiny_t5.py                  # rewrites data/tiny-t5
    python data/build_tiny_t5.py --out /tmp/t5 --seed 1
"""
import argparse
import collections
import io
import itertools
import string
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for minimagen without an install
from minimagen.data import all_captions  # noqa: E402
from minimagen.hub import _quiet  # noqa: E402
from minimagen.text import TINY_T5_DIR  # noqa: E402

TINY_CONFIG = dict(d_model=128, num_layers=2, num_heads=4, d_kv=16, d_ff=128, dropout_rate=0.0)
# Spellable without <unk>: any ASCII word outside the grammar ("hexagon") becomes letter pieces.
TINY_REQUIRED_CHARS = string.ascii_letters + string.digits + ".,'-"


def _train_sentencepiece(captions: list[str], seed: int, workdir: Path):
    """A unigram SentencePiece model with T5's special ids; returns the SentencePieceProcessor."""
    import sentencepiece as spm  # only building needs it: loading reads tokenizer.json
    # Seed pieces = every substring of every word, weighted by count. Why: on a corpus this repetitive,
    # sentencepiece's own suffix-array seeding finds ~30 candidates and never keeps "▁red" as a piece.
    words = collections.Counter(w for c in captions for w in c.split())
    seeds = collections.Counter()
    for w, n in words.items():
        s = "▁" + w
        for i, j in itertools.combinations(range(len(s) + 1), 2):
            if s[i:j] != "▁":
                seeds[s[i:j]] += n * (j - i)
    seed_file = workdir / "seeds.tsv"
    seed_file.write_text(encoding="utf-8", data="".join(f"{p}\t{n}\n" for p, n in sorted(seeds.items(), key=lambda x: (-x[1], x[0]))))
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions), model_writer=model, seed_sentencepieces_file=str(seed_file),
        model_type="unigram",  # T5's tokenizer is a unigram model; BPE pieces would not round-trip
        vocab_size=128, hard_vocab_limit=False,  # the grammar needs fewer pieces; let it stop early
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        required_chars=TINY_REQUIRED_CHARS, character_coverage=1.0,
        normalization_rule_name="identity",  # NFKC would add a 240 KB character map for nothing here
        num_threads=1, shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2)  # deterministic
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def build_tiny_t5(out_dir=TINY_T5_DIR, seed: int = 0) -> Path:
    """Build data/tiny-t5 (tokenizer + random-weight T5 encoder), byte-for-byte reproducible from seed."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    captions = all_captions("all")  # fixed order: the grammar's own
    with tempfile.TemporaryDirectory() as tmp:
        sp = _train_sentencepiece(captions, seed, Path(tmp))
    # T5Tokenizer(vocab=[(piece, score)]) builds the same unigram model as converting spiece.model, without
    # protobuf (note: transformers 5 silently ignores T5Tokenizer(vocab_file=...)).
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    with _quiet():
        T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(out_dir)  # tokenizer.json + config
        tok = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    # Round trip: the saved tokenizer must agree with sentencepiece, know every word, and append eos.
    for c, ids in zip(captions, tok(captions).input_ids):
        if ids != sp.encode(c) + [tok.eos_token_id] or tok.unk_token_id in ids:
            raise RuntimeError(f"tiny T5 tokenizer does not round-trip {c!r}: {tok.convert_ids_to_tokens(ids)}")

    config = T5Config(vocab_size=len(tok), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                      minimagen_random_weights=True, **TINY_CONFIG)  # the flag TextEncoder.pretrained reads
    torch.manual_seed(seed)
    model = T5EncoderModel(config)
    # T5's only sense of word order is a relative-position bias added to the attention logits. In a
    # pretrained T5 it is strong; at T5's init scale (std ~0.09) it is flat next to the query-key
    # logits, so attention follows which words are present, not where: a bag of words (a word's
    # vector moves 4% when "a red circle above a blue square" is swapped). With std 1 each head
    # attends to fixed relative offsets, so a word's vector depends on its neighbours (it moves ~30%)
    # and the U-Net can bind colour to shape and order.
    with torch.no_grad():
        model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.normal_(0.0, 1.0)
    with _quiet():
        model.save_pretrained(out_dir)  # config.json + model.safetensors
    n_params = sum(p.numel() for p in model.parameters())
    (out_dir / "README.md").write_text(encoding="utf-8", data=
        f"# tiny-t5\n\n"
        f"An offline stand-in for T5, used by `TextEncoder('tiny')` (or `MINIMAGEN_TEXT_ENCODER=tiny`).\n\n"
        f"- Tokenizer: a {len(tok)}-piece SentencePiece unigram model trained on the toy shapes captions "
        f"(one piece per grammar word, plus ASCII letters and digits so other words are spelled, not <unk>); "
        f"T5 ids: pad=0, eos=1, unk=2.\n"
        f"- Encoder: a T5 encoder ({', '.join(f'{k}={v}' for k, v in TINY_CONFIG.items())}, "
        f"{n_params:,} parameters) with RANDOM weights, seed={seed}.\n\n"
        f"It is not pretrained: its embeddings carry token identity and word order (its relative-position "
        f"bias is drawn with std 1, not T5's ~0.09, so a word's vector depends on its neighbours), not language knowledge "
        f"(Imagen's text understanding comes from a pretrained T5; use t5-small when you are online).\n\n"
        f"Rebuilt, byte for byte (same library versions), by:\n\n    python data/build_tiny_t5.py"
        f"{'' if seed == 0 else f' --seed {seed}'}\n")
    return out_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(TINY_T5_DIR), help="the folder to write (default: data/tiny-t5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {build_tiny_t5(args.out, seed=args.seed)}")
