"""UMT5-XXL text encoder of Wan2.1 (encoder only): Wan's own checkpoint loaded into `transformers.UMT5EncoderModel`.

Wan ships `models_t5_umt5-xxl-enc-bf16.pth` in the key names of its own T5 port (`wan/modules/t5.py`) and the
tokenizer folder `google/umt5-xxl/`. This module maps those keys to Hugging Face's UMT5 names, reproduces Wan's prompt
cleaning and padding (`wan/modules/tokenizers.py::HuggingfaceTokenizer(seq_len=512, clean='whitespace')`), and zeroes
the rows past each prompt's length (SF `utils/wan_wrapper.py::WanTextEncoder`). Output: `[B, 512, 4096]`.

Wan T5 and HF UMT5 compute the same function: pre-RMS-norm blocks, unscaled attention with a per-layer bidirectional
relative-position bias (32 buckets, max distance 128; Wan `shared_pos=False` = UMT5's bias in every layer), and a gated
tanh-GELU FFN `fc2(fc1(x) * gelu(gate(x)))` = `wo(wi_1(x) * gelu_new(wi_0(x)))`.

Letters: B prompts, L = text_len tokens, D model dim.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from tokentrim.models.loading import (
    EXPECTED_EXAMPLES,
    cast_floating,
    load_state_dict_strict,
    read_safetensors_folder,
    read_tensor_file,
    resolve_file,
    resolve_folder,
)

try:  # ftfy is a vbench dependency; Wan's cleaning calls ftfy.fix_text first
    import ftfy
except ImportError:
    ftfy = None

logger = logging.getLogger(__name__)
_warned_no_ftfy = False


# ---------------------------------------------------------------------------------------------- key mapping
# Inside `blocks.{i}.` (Wan) -> inside `encoder.block.{i}.` (HF UMT5).
_WAN_T5_IN_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # GELU branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_HF_T5_IN_BLOCK = {v: k for k, v in _WAN_T5_IN_BLOCK.items()}


def wan_t5_to_hf_keys(key: str) -> list[str]:
    """Map one Wan T5 encoder key to its HF `UMT5EncoderModel` key(s); the token embedding is tied in HF and appears
    twice (`shared.weight`, `encoder.embed_tokens.weight`)."""
    if key == "token_embedding.weight":
        return ["shared.weight", "encoder.embed_tokens.weight"]
    if key == "norm.weight":
        return ["encoder.final_layer_norm.weight"]
    match = re.match(r"^blocks\.(\d+)\.(.+)$", key)
    if match and match.group(2) in _WAN_T5_IN_BLOCK:
        return [f"encoder.block.{match.group(1)}.{_WAN_T5_IN_BLOCK[match.group(2)]}"]
    raise ValueError(f"T5 key {key!r} has no counterpart in HF UMT5EncoderModel (Wan `wan/modules/t5.py` layout)")


def hf_to_wan_t5_key(key: str) -> str:
    """Inverse of `wan_t5_to_hf_keys` (both tied embedding names map to `token_embedding.weight`)."""
    if key in ("shared.weight", "encoder.embed_tokens.weight"):
        return "token_embedding.weight"
    if key == "encoder.final_layer_norm.weight":
        return "norm.weight"
    match = re.match(r"^encoder\.block\.(\d+)\.(.+)$", key)
    if match and match.group(2) in _HF_T5_IN_BLOCK:
        return f"blocks.{match.group(1)}.{_HF_T5_IN_BLOCK[match.group(2)]}"
    raise ValueError(f"UMT5 key {key!r} has no counterpart in Wan's T5 encoder layout")


def convert_wan_t5_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Wan T5 encoder state dict to HF UMT5 names (tensors shared, not copied)."""
    return {new: value for key, value in state_dict.items() for new in wan_t5_to_hf_keys(key)}


def is_wan_t5_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return "token_embedding.weight" in state_dict


# ---------------------------------------------------------------------------------------------- prompt cleaning
def clean_prompt(text: str) -> str:
    """Wan's `clean='whitespace'`: ftfy.fix_text, html.unescape twice, strip, collapse whitespace runs to one space."""
    global _warned_no_ftfy
    if ftfy is not None:
        text = ftfy.fix_text(text)
    elif not _warned_no_ftfy:
        logger.warning("ftfy is not installed; cleaning prompts without ftfy.fix_text (differs from Wan on mojibake)")
        _warned_no_ftfy = True
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------------- embedding cache
def file_fingerprint(path: str | Path, *, chunk_bytes: int = 4 << 20) -> str:
    """sha256 over the file's size, first and last `chunk_bytes` bytes: identifies an 11 GB weight file in
    milliseconds (a full hash takes about a minute) and changes whenever the file is replaced by another checkpoint."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}:{size}".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(chunk_bytes))
        if size > chunk_bytes:
            handle.seek(max(size - chunk_bytes, chunk_bytes))
            digest.update(handle.read(chunk_bytes))
    return digest.hexdigest()


class PromptEmbeddingCache:
    """Per-prompt text embeddings on disk: `<cache_dir>/<sha256(model, text_len, prompt)>.safetensors`.

    Only the prompt's own rows `[length, D]` are stored; the zero padding to text_len is rebuilt on read.

    Args:
        cache_dir: folder for the files (created on first write).
        model_fingerprint: identifies the encoder weights (`file_fingerprint` of the weight file).
        text_len: padded length L (part of the key, since truncation depends on it).
    """

    def __init__(self, cache_dir: str | Path, *, model_fingerprint: str, text_len: int = 512):
        self.cache_dir = Path(cache_dir)
        self.model_fingerprint = model_fingerprint
        self.text_len = text_len

    def key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.model_fingerprint}\n{self.text_len}\n{prompt}".encode()).hexdigest()

    def path(self, prompt: str) -> Path:
        return self.cache_dir / f"{self.key(prompt)}.safetensors"

    def get(self, prompt: str) -> torch.Tensor | None:
        """`[length, D]` rows of the prompt, or None if not cached."""
        from safetensors import safe_open

        path = self.path(prompt)
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            if handle.metadata().get("prompt") != prompt:
                raise ValueError(f"{path}: cached prompt differs from the requested one (hash collision or edit)")
            return handle.get_tensor("embeds")

    def put(self, prompt: str, embeds: torch.Tensor) -> None:
        """Store `[length, D]` rows atomically (report.atomic_io)."""
        from safetensors.torch import save_file

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.path(prompt)
        from tokentrim.report.atomic_io import atomic_path

        with atomic_path(path) as tmp:
            save_file({"embeds": embeds.detach().cpu().contiguous()}, str(tmp),
                      metadata={"prompt": prompt, "model": self.model_fingerprint, "text_len": str(self.text_len)})


# ---------------------------------------------------------------------------------------------- encoder
class WanTextEncoder(nn.Module):
    """UMT5 encoder + Wan tokenisation. Defaults are UMT5-XXL as used by Wan2.1 (`wan/modules/t5.py::umt5_xxl`).

    Args:
        vocab_size: 256384 for umt5-xxl.
        dim: model dim D (4096).
        dim_ffn: gated FFN width (10240).
        num_heads: attention heads (64); head dim = dim / num_heads.
        num_layers: encoder layers (24).
        num_buckets: relative-position buckets (32).
        text_len: padded prompt length L (512).
        layer_norm_eps: RMS-norm epsilon (1e-6).
    """

    def __init__(
        self,
        *,
        vocab_size: int = 256384,
        dim: int = 4096,
        dim_ffn: int = 10240,
        num_heads: int = 64,
        num_layers: int = 24,
        num_buckets: int = 32,
        text_len: int = 512,
        layer_norm_eps: float = 1e-6,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
        config = UMT5Config(
            vocab_size=vocab_size,
            d_model=dim,
            d_kv=dim // num_heads,
            d_ff=dim_ffn,
            num_layers=num_layers,
            num_heads=num_heads,
            relative_attention_num_buckets=num_buckets,
            relative_attention_max_distance=128,  # Wan T5RelativeEmbedding(max_dist=128)
            dropout_rate=0.0,
            layer_norm_epsilon=layer_norm_eps,
            feed_forward_proj="gated-gelu",  # -> gelu_new, the tanh GELU of Wan's T5
            is_encoder_decoder=False,
            use_cache=False,
        )
        self.text_len = text_len
        self.encoder = UMT5EncoderModel(config)
        self.tokenizer = None
        self.cache: PromptEmbeddingCache | None = None

    @classmethod
    def from_files(
        cls,
        weights_path: str | Path,
        tokenizer_path: str | Path,
        *,
        dtype: torch.dtype = torch.bfloat16,
        cache_dir: str | Path | None = None,
        weights_config_key: str = "backbone.text_encoder_path",
        tokenizer_config_key: str = "backbone.tokenizer_path",
        **config: object,
    ) -> WanTextEncoder:
        """From Wan's `models_t5_umt5-xxl-enc-bf16.pth` (or an HF-named UMT5 state dict file, or a diffusers
        `text_encoder/` folder of `model*.safetensors`) and the local tokenizer folder (Wan's `google/umt5-xxl/` or a
        diffusers `tokenizer/`). Paths are checked before weights are read; nothing is fetched from the Hub.

        Args:
            dtype: weight dtype (SF casts its whole pipeline, text encoder included, to bf16).
            cache_dir: if set, per-prompt embeddings are cached there (`PromptEmbeddingCache`).
            config: overrides of the UMT5-XXL constructor arguments (tests use tiny configs).
        """
        tokenizer_path = resolve_folder(tokenizer_path, what="UMT5 tokenizer folder", config_key=tokenizer_config_key,
                                        example=EXPECTED_EXAMPLES["tokenizer"])
        if Path(weights_path).is_dir():  # diffusers `text_encoder/` folder: HF names, model*.safetensors shards
            weights_path = Path(weights_path)
            state_dict = read_safetensors_folder(weights_path, stem="model", config_key=weights_config_key)
            fingerprint_file = sorted(weights_path.glob("model*.safetensors"))[0]
        else:
            weights_path = resolve_file(weights_path, what="UMT5 text encoder weights", config_key=weights_config_key,
                                        example=EXPECTED_EXAMPLES["t5"])
            state_dict = None
            fingerprint_file = weights_path
        tokenizer = load_tokenizer(tokenizer_path, config_key=tokenizer_config_key)
        if state_dict is None:
            state_dict = read_tensor_file(weights_path)
        if is_wan_t5_layout(state_dict):
            state_dict = convert_wan_t5_state_dict(state_dict)  # type: ignore[arg-type]
        elif "encoder.embed_tokens.weight" not in state_dict and "shared.weight" in state_dict:
            state_dict = {**state_dict, "encoder.embed_tokens.weight": state_dict["shared.weight"]}  # tied, not saved
        with torch.device("meta"):
            model = cls(**config)  # type: ignore[arg-type]
        state_dict = cast_floating(state_dict, dtype)  # type: ignore[arg-type]
        load_state_dict_strict(model.encoder, state_dict, source=str(weights_path), assign=True)
        model.encoder.tie_weights()  # assign=True replaced the shared Parameter; re-point embed_tokens at it
        model.tokenizer = tokenizer
        if cache_dir is not None:
            fingerprint = f"{file_fingerprint(fingerprint_file)}:{str(dtype).removeprefix('torch.')}"
            model.cache = PromptEmbeddingCache(cache_dir, model_fingerprint=fingerprint, text_len=model.text_len)
        return model.eval().requires_grad_(False)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cleaned prompts -> ids, mask `[B, L]` (pad to L, truncate, add `</s>`), as Wan's HuggingfaceTokenizer."""
        if self.tokenizer is None:
            raise ValueError("tokenizer is not set; build with WanTextEncoder.from_files or assign .tokenizer")
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            truncation=True,
            max_length=self.text_len,
            add_special_tokens=True,
            return_tensors="pt",
        )
        return batch.input_ids, batch.attention_mask

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask `[B, L]` -> `[B, L, D]` last hidden states with rows past each prompt's length set to 0."""
        device = self.encoder.shared.weight.device
        ids, mask = ids.to(device), mask.to(device)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, D]
        return hidden.masked_fill(mask[..., None] == 0, 0.0)  # Wan: context[i, seq_len_i:] = 0

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts -> `[B, L, D]` text embeddings (zero past each prompt), reading/writing the cache when set."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, got a single str")
        cached = [self.cache.get(p) if self.cache is not None else None for p in prompts]
        todo = [i for i, c in enumerate(cached) if c is None]
        if todo:
            ids, mask = self.tokenize([prompts[i] for i in todo])
            fresh = self.encode_ids(ids, mask)  # [b, L, D]
            lengths = mask.sum(dim=1).tolist()
            for row, i in enumerate(todo):
                cached[i] = fresh[row, : int(lengths[row])]  # [length, D]
                if self.cache is not None:
                    self.cache.put(prompts[i], cached[i])
        weight = self.encoder.shared.weight
        out = torch.zeros(len(prompts), self.text_len, self.encoder.config.d_model, dtype=weight.dtype,
                          device=weight.device)  # [B, L, D]
        for i, rows in enumerate(cached):
            out[i, : rows.shape[0]] = rows.to(out.device)  # [length, D] -> first rows of [L, D]
        return out


def load_tokenizer(folder: Path, *, config_key: str):
    """Local tokenizer folder -> HF tokenizer, never from the Hub (`local_files_only=True`)."""
    has_fast = (folder / "tokenizer.json").is_file()
    has_slow = (folder / "spiece.model").is_file()
    if not has_fast and not has_slow:
        raise FileNotFoundError(f"UMT5 tokenizer folder {folder} has neither tokenizer.json nor spiece.model "
                                f"(set {config_key}; expected e.g. {EXPECTED_EXAMPLES['tokenizer']})")
    if not has_fast:
        try:
            import sentencepiece  # noqa: F401
        except ImportError as error:
            raise ValueError(f"{folder} has only spiece.model, which needs the sentencepiece package; "
                             "install it or add tokenizer.json") from error
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
