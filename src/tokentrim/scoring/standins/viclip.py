"""ViCLIP stand-ins for temporal_style and overall_consistency. **The scores they give mean nothing.**

Files (under the vbench cache dir):
- `ViCLIP/ViClip-InternVid-10M-FLT.pth`: `torch.save({"model": state_dict})`, the container vbench's
  `third_party/ViCLIP/viclip.py::ViCLIP.__init__` reads (`torch.load(pretrain)['model']`, then a STRICT
  `load_state_dict`). Keys are those of vbench's own `ViCLIP` (`vision_encoder.*`: a ViT-L/14 video encoder,
  `clip_joint_l14`, 8 frames; `text_encoder.*`: the 12-layer CLIP text transformer, vocab 49408, context 32; `temp`),
  fp32, built with `torch.manual_seed(seed)` and the modules' default init.
  Three parameters are created with `torch.empty` and never initialised by vbench (the real checkpoint overwrites
  them): `vision_encoder.proj`, `text_encoder.positional_embedding`, `text_encoder.text_projection`. Left as is they
  hold whatever memory held (non-deterministic, sometimes NaN/inf), so the stand-in initialises them the way OpenAI
  CLIP does for the same tensors: `width**-0.5 * randn` for `proj` and `text_projection`, `N(0, 0.01)` for the
  positional embedding.
- `ViCLIP/bpe_simple_vocab_16e6.txt.gz`: a gzip text file in the CLIP BPE format `SimpleTokenizer` reads: a
  `#version: 0.2` header line, then one merge `left right` per line in rank order (no trailing newline). The real file
  holds 262k lines of which the tokenizer keeps the first 48894 merges; the stand-in holds the merges a plain BPE
  learner finds on the words of every prompt in vbench's `VBench_full_info.json` (lower-cased and split with the
  tokenizer's own regex, byte-to-unicode mapped, `</w>` on the last symbol; most frequent pair first, ties broken by
  the larger pair), until every such word is one token (2270 merges, 2784 ids). Any text still tokenizes: the 512
  byte symbols are always in the vocabulary, so a word outside the prompts falls back to smaller pieces. Token ids are
  `512 + merge rank` and `<|startoftext|>`/`<|endoftext|>` are the last two ids, as in the real layout, all below
  the text encoder's 49408 embeddings.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import torch

from tokentrim.scoring.standins.files import save_torch, seeded, write_atomic
from tokentrim.scoring.standins.vbench_env import vbench_cache_dir
from tokentrim.scoring.weights import WeightRoots

DIMENSIONS: tuple[str, ...] = ("temporal_style", "overall_consistency")
CHECKPOINT = ("ViCLIP", "ViClip-InternVid-10M-FLT.pth")
VOCAB = ("ViCLIP", "bpe_simple_vocab_16e6.txt.gz")
MAX_MERGES = 49152 - 256 - 2  # SimpleTokenizer keeps merges[1:48895]


def _prompt_words() -> Counter:
    """{word as a tuple of byte-unicode symbols, `</w>` on the last: count} over every VBench prompt."""
    import regex  # noqa: PLC0415  (a vbench / ftfy dependency, as in the tokenizer)
    import vbench  # noqa: PLC0415  (only to find the shipped prompt suite)

    suite = json.loads((Path(vbench.__file__).parent / "VBench_full_info.json").read_text(encoding="utf-8"))
    byte_encoder = _bytes_to_unicode()
    # the tokenizer's pre-split (third_party/ViCLIP/simple_tokenizer.py), special tokens left out
    pattern = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
    words: Counter = Counter()
    for entry in suite:
        text = " ".join(entry["prompt_en"].split()).lower()
        for token in pattern.findall(text):
            symbols = [byte_encoder[b] for b in token.encode("utf-8")]
            words[tuple(symbols[:-1]) + (symbols[-1] + "</w>",)] += 1
    return words


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode map (the tokenizer's `bytes_to_unicode`, rewritten)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def learn_merges(words: Counter, max_merges: int = MAX_MERGES) -> list[tuple[str, str]]:
    """Plain BPE: merge the most frequent adjacent pair (ties: the larger pair) until no word has two symbols."""
    vocab = {index: list(word) for index, word in enumerate(words)}
    freq = {index: count for index, count in enumerate(words.values())}
    pair_counts: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for index, symbols in vocab.items():
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += freq[index]
            where[pair].add(index)
    merges: list[tuple[str, str]] = []
    while pair_counts and len(merges) < max_merges:
        best = max(pair_counts.items(), key=lambda item: (item[1], item[0]))[0]
        merges.append(best)
        for index in sorted(where.pop(best, ())):
            symbols = vocab[index]
            for pair in zip(symbols, symbols[1:]):  # remove this word's old pairs
                pair_counts[pair] -= freq[index]
                if pair_counts[pair] <= 0:
                    del pair_counts[pair]
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            vocab[index] = merged
            for pair in zip(merged, merged[1:]):
                pair_counts[pair] += freq[index]
                where[pair].add(index)
    return merges


def vocab_text() -> str:
    """The stand-in `bpe_simple_vocab_16e6.txt` content (header + merges, no trailing newline)."""
    return "\n".join(["#version: 0.2", *(f"{left} {right}" for left, right in learn_merges(_prompt_words()))])


def build_checkpoint(seed: int, vocab_path: Path, cache_dir: Path) -> dict:
    """{"model": state dict} of a seeded vbench `ViCLIP` (text encoder tokenizer read from `vocab_path`)."""
    with vbench_cache_dir(cache_dir, bpe_path=vocab_path):
        from vbench.third_party.ViCLIP.simple_tokenizer import SimpleTokenizer  # noqa: PLC0415
        from vbench.third_party.ViCLIP.viclip import ViCLIP  # noqa: PLC0415

        with seeded(seed):
            model = ViCLIP(tokenizer=SimpleTokenizer(str(vocab_path)), pretrain=None)
            # the three torch.empty parameters (module docstring), initialised as OpenAI CLIP does
            vision, text = model.vision_encoder, model.text_encoder
            with torch.no_grad():
                vision.proj.copy_(vision.proj.shape[0] ** -0.5 * torch.randn_like(vision.proj))  # [1024, 768]
                text.positional_embedding.normal_(std=0.01)  # [32, 768]
                text.text_projection.normal_(std=text.text_projection.shape[0] ** -0.5)  # [768, 768]
    return {"model": model.state_dict()}


def write(roots: WeightRoots, *, seed: int) -> list[Path]:
    vocab = roots.cache_dir.joinpath(*VOCAB)
    checkpoint = roots.cache_dir.joinpath(*CHECKPOINT)
    write_atomic(vocab, lambda tmp: tmp.write_bytes(gzip.compress(vocab_text().encode("utf-8"), mtime=0)))
    if not checkpoint.is_file():
        save_torch(build_checkpoint(seed, vocab, roots.cache_dir), checkpoint)
    return [checkpoint, vocab]
