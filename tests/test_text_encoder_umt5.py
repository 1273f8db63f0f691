"""UMT5 text encoder: Wan T5 key mapping, Wan's numerics, prompt cleaning/padding, embedding cache, missing files."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from tokentrim.models.text_encoder import (
    WanTextEncoder,
    clean_prompt,
    hf_to_wan_t5_key,
    wan_t5_to_hf_keys,
)

TINY = dict(vocab_size=32, dim=16, dim_ffn=24, num_heads=2, num_layers=2, num_buckets=8, text_len=12)
WORDS = "a red fox runs over the snowy hill at dawn while birds sing & cat".split()


def write_tokenizer(folder) -> None:
    """A word-level tokenizer with T5's special tokens (<pad>=0, </s>=1, <unk>=2) that appends </s>."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(folder))


def wan_named_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tiny UMT5 weights under Wan's T5 key names (built through the inverse mapping)."""
    encoder = WanTextEncoder(**TINY).encoder
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in encoder.state_dict().items():
        wan_key = hf_to_wan_t5_key(key)
        if wan_key not in out:
            out[wan_key] = torch.randn(value.shape, generator=generator) * 0.5
    return out


@pytest.fixture
def files(tmp_path):
    write_tokenizer(tmp_path / "umt5-xxl")
    weights = wan_named_weights()
    torch.save(weights, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    return tmp_path / "models_t5_umt5-xxl-enc-bf16.pth", tmp_path / "umt5-xxl", weights


def wan_t5_reference(sd: dict, ids: torch.Tensor, mask: torch.Tensor, *, num_heads: int, num_buckets: int,
                     num_layers: int, eps: float = 1e-6) -> torch.Tensor:
    """Wan's T5 encoder written out from `wan/modules/t5.py` (T5Encoder, shared_pos=False). [B, L] -> [B, L, D]."""

    def rms(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def bucket(rel):  # T5RelativeEmbedding._relative_position_bucket, bidirectional, max_dist=128
        half = num_buckets // 2
        out = (rel > 0).long() * half
        rel = rel.abs()
        max_exact = half // 2
        large = max_exact + (torch.log(rel.float() / max_exact) / math.log(128 / max_exact) * (half - max_exact)).long()
        return out + torch.where(rel < max_exact, rel, large.clamp(max=half - 1))

    batch_size, length = ids.shape
    x = sd["token_embedding.weight"][ids]  # [B, L, D]
    rel = torch.arange(length)[None, :] - torch.arange(length)[:, None]  # k - q
    for i in range(num_layers):
        p = f"blocks.{i}."
        h = rms(x, sd[p + "norm1.weight"])
        q, k, v = (
            (h @ sd[p + f"attn.{n}.weight"].T).view(batch_size, length, num_heads, -1) for n in "qkv"
        )  # [B, L, n, c]
        bias = sd[p + "pos_embedding.embedding.weight"][bucket(rel)].permute(2, 0, 1)[None]  # [1, n, L, L]
        scores = torch.einsum("binc,bjnc->bnij", q, k) + bias  # no 1/sqrt(c) scaling in T5
        scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
        attn = torch.einsum("bnij,bjnc->binc", scores.softmax(-1), v).reshape(batch_size, length, -1)
        x = x + attn @ sd[p + "attn.o.weight"].T
        h = rms(x, sd[p + "norm2.weight"])
        gate = F.gelu(h @ sd[p + "ffn.gate.0.weight"].T, approximate="tanh")
        x = x + ((h @ sd[p + "ffn.fc1.weight"].T) * gate) @ sd[p + "ffn.fc2.weight"].T
    return rms(x, sd["norm.weight"])


def test_wan_t5_checkpoint_reproduces_wan_t5_forward(files):
    weights_path, tokenizer_path, weights = files
    encoder = WanTextEncoder.from_files(weights_path, tokenizer_path, dtype=torch.float32, **TINY)
    prompts = ["a red fox runs", "birds sing at dawn while a cat runs over the snowy hill"]
    out = encoder(prompts)  # [B, L, D]
    ids, mask = encoder.tokenize(prompts)
    reference = wan_t5_reference(weights, ids, mask, num_heads=2, num_buckets=8, num_layers=2)
    lengths = mask.sum(1)
    assert lengths.tolist() == [5, 12]  # 4 words + </s>; the long prompt is truncated to text_len
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[i, :n], reference[i, :n], rtol=1e-4, atol=1e-5)


def test_diffusers_text_encoder_folder_gives_same_embeddings_as_wan_pth(files, tmp_path):
    weights_path, tokenizer_path, _ = files
    from_pth = WanTextEncoder.from_files(weights_path, tokenizer_path, dtype=torch.float32, **TINY)
    from_pth.encoder.save_pretrained(str(tmp_path / "text_encoder"), safe_serialization=True)
    from_folder = WanTextEncoder.from_files(tmp_path / "text_encoder", tokenizer_path, dtype=torch.float32, **TINY)
    assert torch.equal(from_folder(["a red fox runs"]), from_pth(["a red fox runs"]))


def test_output_is_B_by_text_len_by_dim_with_zero_rows_past_each_prompt(files):
    weights_path, tokenizer_path, _ = files
    encoder = WanTextEncoder.from_files(weights_path, tokenizer_path, dtype=torch.float32, **TINY)
    out = encoder(["a cat", "the snowy hill"])
    assert out.shape == (2, 12, 16)
    assert out[0, 3:].abs().sum() == 0 and out[1, 4:].abs().sum() == 0
    assert (out[0, :3].abs().sum(-1) > 0).all() and (out[1, :4].abs().sum(-1) > 0).all()


def test_default_load_is_bf16_weights_and_embeddings(files):
    weights_path, tokenizer_path, _ = files
    encoder = WanTextEncoder.from_files(weights_path, tokenizer_path, **TINY)
    assert encoder.encoder.encoder.block[1].layer[1].DenseReluDense.wo.weight.dtype == torch.bfloat16
    assert encoder(["a cat"]).dtype == torch.bfloat16


def test_full_size_key_mapping_round_trips_and_has_wan_shapes():
    config = UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                        relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    with torch.device("meta"):
        hf = UMT5EncoderModel(config).state_dict()
    wan = {}
    for key, value in hf.items():
        wan[hf_to_wan_t5_key(key)] = tuple(value.shape)
    assert len(wan) == 1 + 24 * 10 + 1
    assert wan["token_embedding.weight"] == (256384, 4096)
    assert wan["blocks.23.pos_embedding.embedding.weight"] == (32, 64)
    assert wan["blocks.0.ffn.gate.0.weight"] == (10240, 4096) and wan["blocks.0.ffn.fc2.weight"] == (4096, 10240)
    assert {new for key in wan for new in wan_t5_to_hf_keys(key)} == set(hf)


def test_prompt_cleaning_follows_wan_whitespace_rule():
    assert clean_prompt("  A cat&amp;amp;dog \n\t  run  ") == "A cat&dog run"
    assert clean_prompt("It\u00e2\u20ac\u2122s sunny") == "It's sunny"  # ftfy repairs mojibake


def test_cached_embeddings_are_reused_without_reencoding(files, tmp_path, monkeypatch):
    weights_path, tokenizer_path, _ = files
    cache_dir = tmp_path / "embeds"
    first = WanTextEncoder.from_files(weights_path, tokenizer_path, dtype=torch.float32, cache_dir=cache_dir, **TINY)
    expected = first(["a red fox", "the hill"])
    assert len(list(cache_dir.glob("*.safetensors"))) == 2

    second = WanTextEncoder.from_files(weights_path, tokenizer_path, dtype=torch.float32, cache_dir=cache_dir, **TINY)

    def fail(*args, **kwargs):
        raise AssertionError("re-encoded a cached prompt")

    monkeypatch.setattr(second, "encode_ids", fail)
    assert torch.equal(second(["the hill", "a red fox"]), expected.flip(0))


def test_cache_key_changes_with_weights_file(files, tmp_path):
    weights_path, tokenizer_path, _ = files
    cache_dir = tmp_path / "embeds"
    encoder = WanTextEncoder.from_files(weights_path, tokenizer_path, dtype=torch.float32, cache_dir=cache_dir, **TINY)
    other_path = tmp_path / "other.pth"
    torch.save(wan_named_weights(seed=1), other_path)
    other = WanTextEncoder.from_files(other_path, tokenizer_path, dtype=torch.float32, cache_dir=cache_dir, **TINY)
    assert encoder.cache.key("a cat") != other.cache.key("a cat")
    assert not torch.equal(encoder(["a cat"]), other(["a cat"]))


def test_missing_tokenizer_folder_is_one_line_naming_config_key(files, tmp_path):
    weights_path, _, _ = files
    with pytest.raises(FileNotFoundError) as info:
        WanTextEncoder.from_files(weights_path, tmp_path / "google" / "umt5-xxl", **TINY)
    message = str(info.value)
    assert "\n" not in message and "set backbone.tokenizer_path" in message and "google/umt5-xxl" in message


def test_tokenizer_folder_without_tokenizer_files_is_one_line(files, tmp_path):
    weights_path, _, _ = files
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor spiece.model"):
        WanTextEncoder.from_files(weights_path, tmp_path / "empty", **TINY)


def test_missing_weights_file_is_one_line_naming_config_key(files, tmp_path):
    _, tokenizer_path, _ = files
    with pytest.raises(FileNotFoundError) as info:
        WanTextEncoder.from_files(tmp_path / "t5.pth", tokenizer_path, **TINY)
    message = str(info.value)
    assert "\n" not in message and "set backbone.text_encoder_path" in message
    assert "models_t5_umt5-xxl-enc-bf16.pth" in message
