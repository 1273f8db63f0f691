"""Tag2Text (Swin-B) and bert-base-uncased stand-ins for scene. **The scores they give mean nothing.**

Files:
- `<cache_dir>/caption_model/tag2text_swin_14m.pth`: `torch.save({"model": state_dict})`, the container vbench's
  `third_party/tag2Text/tag2text.py::load_checkpoint_swinbase` reads (`checkpoint['model']`, relative-position tables
  re-interpolated, `relative_position_index` / `attn_mask` dropped, non-strict load). Keys are those of vbench's own
  `Tag2Text_Caption(image_size=384, vit='swin_b')` (what `init_submodules` asks for): `visual_encoder.*` (Swin-B,
  window 12), `text_decoder.*` (BERT LM head with cross-attention, vocab 30524), `tag_encoder.*`, `vision_multi.*`
  (2-layer query2label decoder), `label_embed.weight` [3429, 768], `fc.{W,b}`; fp32, `torch.manual_seed(seed)` and
  the modules' default init (`vision_multi` starts from the bert stand-in below, as Tag2Text's own init does).
- bert-base-uncased in the huggingface_hub cache layout under `<hf_home>/hub/models--bert-base-uncased/`:
  `refs/main` holds a snapshot name (a sha1 of this stand-in's description, not the real hub commit) and
  `snapshots/<name>/` holds
  - `config.json`: the real bert-base-uncased hyperparameters (12 layers, hidden 768, 12 heads, 3072, vocab 30522,
    512 positions, type vocab 2, gelu, layer-norm eps 1e-12, pad id 0);
  - `tokenizer_config.json`: `{"do_lower_case": true, "model_max_length": 512}`, as the hub repo's;
  - `vocab.txt`: 30522 wordpieces, one a line, laid out as the real vocabulary's head: `[PAD]` 0, `[unused0..98]`
    1-99, `[UNK]` 100, `[CLS]` 101, `[SEP]` 102, `[MASK]` 103, `[unused99..993]` 104-998; then the printable ASCII
    characters, their `##` continuations, every word of Tag2Text's 3429 tag names and of every VBench prompt (lower
    case, split on spaces and punctuation as BertTokenizer's basic tokenizer does; so the test prompts and scene names
    are whole tokens), and `[unused<k>]` fillers up to 30522;
  - `model.safetensors` (metadata `format: pt`, as the hub's): a seeded transformers `BertForPreTraining` (`bert.*`,
    `cls.predictions.*` with the decoder weight stored untied, `cls.seq_relationship.*`) on that config.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from tokentrim.scoring.standins.files import save_torch, seeded, write_atomic, write_text
from tokentrim.scoring.weights import WeightRoots

DIMENSIONS: tuple[str, ...] = ("scene",)
CHECKPOINT = ("caption_model", "tag2text_swin_14m.pth")
BERT_REPO = ("hub", "models--bert-base-uncased")
VOCAB_SIZE = 30522
# huggingface.co/bert-base-uncased config.json (the values that define the network)
BERT_CONFIG = {
    "architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1, "gradient_checkpointing": False,
    "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
    "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0, "position_embedding_type": "absolute",
    "transformers_version": "4.6.0.dev0", "type_vocab_size": 2, "use_cache": True, "vocab_size": VOCAB_SIZE,
}
TOKENIZER_CONFIG = {"do_lower_case": True, "model_max_length": 512}


def vocab_lines() -> list[str]:
    """The 30522 stand-in wordpieces (module docstring)."""
    import vbench  # noqa: PLC0415  (only to find the shipped prompt suite and tag names)
    from vbench.third_party.tag2Text.tag_class import tra_array  # noqa: PLC0415

    head = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]",
            *(f"[unused{i}]" for i in range(99, 994))]
    chars = [chr(code) for code in range(ord("!"), ord("~") + 1) if not chr(code).isupper()]
    suite = json.loads((Path(vbench.__file__).parent / "VBench_full_info.json").read_text(encoding="utf-8"))
    texts = [str(tag) for tag in tra_array] + [entry["prompt_en"] for entry in suite]
    words = sorted({word for text in texts for word in re.findall(r"[a-z0-9]+", text.lower())} - set(chars))
    lines = list(dict.fromkeys(head + chars + [f"##{char}" for char in chars] + words))
    filler = 994
    while len(lines) < VOCAB_SIZE:
        lines.append(f"[unused{filler}]")
        filler += 1
    if len(lines) != VOCAB_SIZE:
        raise AssertionError(f"stand-in vocab has {len(lines)} entries, more than {VOCAB_SIZE}")  # internal
    return lines


def _snapshot_name(seed: int) -> str:
    return hashlib.sha1(f"tokentrim stand-in bert-base-uncased seed={seed}".encode()).hexdigest()


def write_bert(hf_home: Path, *, seed: int) -> Path:
    """bert-base-uncased stand-in in the hub cache layout under `hf_home`; returns the snapshot folder."""
    repo = hf_home.joinpath(*BERT_REPO)
    ref = repo / "refs" / "main"
    snapshot = repo / "snapshots" / (ref.read_text().strip() if ref.is_file() else _snapshot_name(seed))
    write_text(json.dumps(BERT_CONFIG, indent=2) + "\n", snapshot / "config.json")
    write_text(json.dumps(TOKENIZER_CONFIG) + "\n", snapshot / "tokenizer_config.json")
    write_atomic(snapshot / "vocab.txt", lambda tmp: tmp.write_text("\n".join(vocab_lines()) + "\n", encoding="utf-8"))
    weights = snapshot / "model.safetensors"
    if not weights.is_file():
        from safetensors.torch import save_file  # noqa: PLC0415  (a transformers dependency)
        from transformers import BertConfig, BertForPreTraining  # noqa: PLC0415

        with seeded(seed):
            model = BertForPreTraining(BertConfig(**BERT_CONFIG))
        tensors = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
        write_atomic(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    write_text(snapshot.name, ref)  # last: the check looks through refs/main
    return snapshot


@contextlib.contextmanager
def _bert_from(snapshot: Path) -> Iterator[None]:
    """Tag2Text's `from_pretrained('bert-base-uncased')` calls read `snapshot` (no hub lookup, whatever HF_HOME is)."""
    from transformers import BertTokenizer  # noqa: PLC0415
    from vbench.third_party.tag2Text import med  # noqa: PLC0415

    classes = (BertTokenizer, med.BertModel)
    own = [cls.__dict__.get("from_pretrained") for cls in classes]  # None: inherited (the case in transformers 4.33)
    for cls in classes:
        inherited = cls.from_pretrained.__func__

        def redirected(klass, name, *args, _inherited=inherited, **kwargs):
            return _inherited(klass, str(snapshot) if name == "bert-base-uncased" else name, *args, **kwargs)

        cls.from_pretrained = classmethod(redirected)  # shadows the inherited classmethod until removed below
    try:
        yield
    finally:
        for cls, value in zip(classes, own):
            if value is None:
                del cls.from_pretrained
            else:
                cls.from_pretrained = value


def build_checkpoint(seed: int, snapshot: Path) -> dict:
    """{"model": state dict} of a seeded vbench `Tag2Text_Caption(image_size=384, vit='swin_b')`."""
    from vbench.third_party.tag2Text.tag2text import tag2text_caption  # noqa: PLC0415

    with _bert_from(snapshot), seeded(seed):
        model = tag2text_caption(pretrained="", image_size=384, vit="swin_b")
    return {"model": model.state_dict()}


def write(roots: WeightRoots, *, seed: int) -> list[Path]:
    snapshot = write_bert(roots.hf_home, seed=seed)
    checkpoint = roots.cache_dir.joinpath(*CHECKPOINT)
    if not checkpoint.is_file():
        save_torch(build_checkpoint(seed, snapshot), checkpoint)
    return [checkpoint, *(snapshot / name for name in ("config.json", "tokenizer_config.json", "vocab.txt",
                                                       "model.safetensors"))]
