"""bert-base-uncased stand-in in the huggingface_hub cache layout, shared by GRiT (tokenizer only) and Tag2Text (scene:
tokenizer and BertModel weights).

Layout under `hf_home` (what `BertTokenizer.from_pretrained("bert-base-uncased")` finds offline, and what
`scoring.weights._bert_files` checks):

    hub/models--bert-base-uncased/refs/main            -> "<snapshot>"
    hub/models--bert-base-uncased/snapshots/<snapshot>/config.json
    hub/models--bert-base-uncased/snapshots/<snapshot>/vocab.txt
    hub/models--bert-base-uncased/snapshots/<snapshot>/pytorch_model.bin   (with_weights=True only)

- `config.json`: the real bert-base-uncased hyperparameters (12 layers, hidden 768, 12 heads, vocab 30522).
- `vocab.txt`: the real one cannot be downloaded here, so a generated wordpiece vocabulary of the real size (30522) with
  the special tokens at their real ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103; GRiT's DenseCap begin
  token 104 is an ordinary id), then every printable ASCII character and its `##` continuation (so any ASCII text
  tokenizes without [UNK]), then every lower-cased word of vbench's own prompt suite (VBench_full_info.json, so prompts,
  object names and colours are whole tokens), then `[unusedN]` fillers up to 30522. Decoding is therefore exact for
  the suite's words; what a random decoder emits is mostly fillers.
- `pytorch_model.bin`: `transformers.BertForPreTraining(config)` with seeded random weights (the real file's key set:
  `bert.*` and `cls.*`), as a plain `torch.save` state dict.

The snapshot name is the sha1 of config.json + vocab.txt, so every writer agrees on it; weights are added to the same
snapshot when a later caller asks for them. **The files mean nothing as language weights.**
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import tempfile
from pathlib import Path

__all__ = ["VOCAB_SIZE", "SPECIAL_IDS", "bert_config", "stand_in_vocab", "write_bert_base_uncased"]

VOCAB_SIZE = 30522
SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
_REPO_DIR = Path("hub") / "models--bert-base-uncased"


def bert_config() -> dict:
    """The published bert-base-uncased config.json (hyperparameters only)."""
    return {
        "architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1, "gradient_checkpointing": False,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
        "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
        "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0, "position_embedding_type": "absolute",
        "transformers_version": "4.6.0.dev0", "type_vocab_size": 2, "use_cache": True, "vocab_size": VOCAB_SIZE,
    }


def _suite_words() -> list[str]:
    """Lower-cased words of vbench's prompt suite and auxiliary info, split as BERT's basic tokenizer would."""
    from tokentrim.scoring.prompts import load_vbench_suite  # noqa: PLC0415  (reads the installed vbench's json)

    texts: list[str] = []
    for entry in load_vbench_suite():
        texts.append(entry.prompt)
        for info in entry.auxiliary_info.values():
            texts.extend(str(value) for value in info.values())
    words: dict[str, None] = {}
    for text in texts:
        spaced = "".join(f" {ch} " if ch in string.punctuation else ch for ch in text.lower())
        words.update(dict.fromkeys(spaced.split()))
    return list(words)


def stand_in_vocab() -> list[str]:
    """30522 wordpieces: specials at their real ids, ASCII characters (+ `##` forms), suite words, `[unusedN]` fillers."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..103
    chars = [ch for ch in string.printable if not ch.isspace()]
    pieces = chars + [f"##{ch}" for ch in chars] + _suite_words()
    vocab += [piece for piece in dict.fromkeys(pieces) if piece not in vocab]
    filler = 99
    while len(vocab) < VOCAB_SIZE:
        vocab.append(f"[unused{filler}]")
        filler += 1
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"stand-in vocab must have {VOCAB_SIZE} entries, the suite gives {len(vocab)}")
    return vocab


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared weights cache is read by others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bert_base_uncased(hf_home: str | os.PathLike, *, with_weights: bool, seed: int) -> list[Path]:
    """Write (or keep, when present) the stand-in under `hf_home`; return the snapshot's files."""
    config_bytes = (json.dumps(bert_config(), indent=2, sort_keys=True) + "\n").encode()
    vocab_bytes = ("\n".join(stand_in_vocab()) + "\n").encode()
    snapshot_name = hashlib.sha1(config_bytes + vocab_bytes).hexdigest()
    repo = Path(hf_home) / _REPO_DIR
    snapshot = repo / "snapshots" / snapshot_name
    files = {snapshot / "config.json": config_bytes, snapshot / "vocab.txt": vocab_bytes}
    for path, data in files.items():
        if not path.is_file():
            _write_atomic(path, data)
    written = list(files)
    if with_weights:
        weights = snapshot / "pytorch_model.bin"
        if not weights.is_file():
            _write_atomic(weights, _weights_bytes(seed))
        written.append(weights)
    ref = repo / "refs" / "main"
    if not ref.is_file() or ref.read_text().strip() != snapshot_name:
        _write_atomic(ref, snapshot_name.encode())
    return written


def _weights_bytes(seed: int) -> bytes:
    """`BertForPreTraining(bert_config())` state dict, seeded, as `torch.save` bytes."""
    import io  # noqa: PLC0415

    import torch  # noqa: PLC0415
    from transformers import BertConfig, BertForPreTraining  # noqa: PLC0415

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForPreTraining(BertConfig(**bert_config()))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()
