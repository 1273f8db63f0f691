"""Loading Self Forcing / Rolling Forcing / Wan release / diffusers DiT weights into the official key layout."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from safetensors.torch import save_file

from tokentrim.models.loading import (
    WAN_T2V_1_3B_CONFIG,
    causal_wan_state_dict_shapes,
    load_diffusers_wan_dit,
    load_self_forcing_checkpoint,
    load_state_dict_strict,
    load_wan_release_dit,
    resolve_file,
)
from tokentrim.models.wan_causal import CausalWanModel

TINY = dict(patch_size=(1, 2, 2), text_len=8, in_dim=4, dim=24, ffn_dim=32, freq_dim=16, text_dim=12, out_dim=4,
            num_heads=2, num_layers=2, eps=1e-6)


def random_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random fp32 tensors under the official key/shape list of `config`."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=generator) for k, shape in causal_wan_state_dict_shapes(**config).items()}


def test_key_list_matches_lead_model_at_tiny_and_full_size():
    for config in (TINY, WAN_T2V_1_3B_CONFIG):
        with torch.device("meta"):
            model = CausalWanModel(**config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert expected == causal_wan_state_dict_shapes(**config)


def test_full_size_key_list_has_1_419b_parameters():
    shapes = causal_wan_state_dict_shapes(**WAN_T2V_1_3B_CONFIG)
    assert len(shapes) == 825
    assert sum(math.prod(s) for s in shapes.values()) == 1_418_996_800


def test_ema_weights_load_after_stripping_fsdp_and_model_prefixes(tmp_path):
    ema, generator = random_state_dict(TINY, 0), random_state_dict(TINY, 1)
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({
        "generator": {f"model.{k}": v for k, v in generator.items()},
        "generator_ema": {"model._fsdp_wrapped_module." + k.replace("blocks.", "blocks._fsdp_wrapped_module."): v
                          for k, v in ema.items()},
        "critic": {"model.head.head.weight": torch.zeros(2)},
    }, path)
    loaded = load_self_forcing_checkpoint(path)
    assert set(loaded) == set(ema)
    assert all(v.dtype == torch.bfloat16 for v in loaded.values())
    assert torch.equal(loaded["blocks.1.ffn.0.weight"], ema["blocks.1.ffn.0.weight"].bfloat16())


def test_missing_ema_falls_back_to_generator_with_warning(tmp_path, caplog):
    generator = random_state_dict(TINY, 1)
    path = tmp_path / "ode_init.pt"
    torch.save({"generator": {f"model.{k}": v for k, v in generator.items()}}, path)
    with caplog.at_level(logging.WARNING, logger="tokentrim.models.loading"):
        loaded = load_self_forcing_checkpoint(path, dtype=None)
    assert "falling back to 'generator'" in caplog.text
    assert torch.equal(loaded["head.modulation"], generator["head.modulation"])


def test_use_ema_false_takes_generator_even_when_ema_exists(tmp_path):
    ema, generator = random_state_dict(TINY, 0), random_state_dict(TINY, 1)
    path = tmp_path / "rolling_forcing_dmd.pt"
    torch.save({"generator": {f"model.{k}": v for k, v in generator.items()}, "generator_ema": ema}, path)
    loaded = load_self_forcing_checkpoint(path, use_ema=False, kind="rolling_forcing", dtype=None)
    assert torch.equal(loaded["patch_embedding.weight"], generator["patch_embedding.weight"])


def test_plain_state_dict_and_safetensors_load_identically(tmp_path):
    state_dict = random_state_dict(TINY, 2)
    torch.save(state_dict, tmp_path / "plain.pt")
    save_file(state_dict, str(tmp_path / "plain.safetensors"))
    from_pt = load_self_forcing_checkpoint(tmp_path / "plain.pt", dtype=None)
    from_st = load_self_forcing_checkpoint(tmp_path / "plain.safetensors", dtype=None)
    assert set(from_pt) == set(from_st) == set(state_dict)
    assert all(torch.equal(from_pt[k], from_st[k]) for k in state_dict)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"generator_ema": {"x": torch.zeros(1)}, "optimizer": logging.getLogger("x")}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_self_forcing_checkpoint(path)


def test_loaded_checkpoint_fits_causal_wan_model_strictly_in_bf16(tmp_path):
    state_dict = random_state_dict(TINY, 3)
    torch.save({"generator_ema": {f"model.{k}": v for k, v in state_dict.items()}}, tmp_path / "ckpt.pt")
    model = CausalWanModel(**TINY).to(torch.bfloat16)
    load_state_dict_strict(model, load_self_forcing_checkpoint(tmp_path / "ckpt.pt"), source="ckpt.pt")
    assert model.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    assert torch.equal(model.blocks[0].self_attn.q.weight, state_dict["blocks.0.self_attn.q.weight"].bfloat16())


def test_strict_load_error_names_source_counts_and_first_keys():
    state_dict = random_state_dict(TINY, 4)
    del state_dict["blocks.0.norm3.weight"], state_dict["head.head.bias"]
    state_dict["blocks.0.extra.weight"] = torch.zeros(3)
    state_dict["blocks.1.ffn.0.weight"] = torch.zeros(5, 24)
    with pytest.raises(ValueError) as info:
        load_state_dict_strict(CausalWanModel(**TINY), state_dict, source="/ckpts/bad.pt")
    message = str(info.value)
    assert "\n" not in message and "/ckpts/bad.pt" in message
    assert "2 missing (e.g. blocks.0.norm3.weight, head.head.bias)" in message
    assert "1 unexpected (e.g. blocks.0.extra.weight)" in message
    assert "1 with wrong shape (e.g. blocks.1.ffn.0.weight: file [5, 24] vs model [32, 24])" in message


@pytest.mark.parametrize("what,key,example", [
    ("Self Forcing checkpoint", "backbone.checkpoint_path", "self_forcing_dmd.pt"),
    ("Wan VAE weights", "backbone.vae_path", "Wan2.1_VAE.pth"),
])
def test_missing_file_error_is_one_line_with_path_and_config_key(tmp_path, what, key, example):
    missing = tmp_path / "nowhere" / "file.pt"
    with pytest.raises(FileNotFoundError) as info:
        resolve_file(missing, what=what, config_key=key,
                     example={"Wan VAE weights": ".../Wan2.1_VAE.pth"}.get(what))
    message = str(info.value)
    assert "\n" not in message and str(missing) in message and f"set {key}" in message
    if what == "Wan VAE weights":
        assert example in message


def test_missing_self_forcing_checkpoint_names_example(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"set backbone.checkpoint_path; expected e.g. .*self_forcing_dmd.pt"):
        load_self_forcing_checkpoint(tmp_path / "missing.pt")


def test_sharded_wan_release_folder_loads_with_its_config(tmp_path):
    state_dict = random_state_dict(TINY, 5)
    keys = sorted(state_dict)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, shard_keys in shards.items():
        save_file({k: state_dict[k] for k in shard_keys}, str(tmp_path / name))
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    release_config = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "t2v",
                      **{k: v for k, v in TINY.items() if k not in ("patch_size", "text_dim")}}
    (tmp_path / "config.json").write_text(json.dumps(release_config))
    loaded, config = load_wan_release_dit(tmp_path, dtype=None)
    assert set(loaded) == set(state_dict)
    assert torch.equal(loaded["blocks.1.modulation"], state_dict["blocks.1.modulation"])
    assert {k: config[k] for k in ("dim", "ffn_dim", "num_layers", "num_heads")} == {"dim": 24, "ffn_dim": 32,
                                                                                      "num_layers": 2, "num_heads": 2}
    assert config["text_dim"] == 4096  # not in the release config.json: the Wan default


def test_wan_release_folder_without_weights_names_the_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "WanModel", "model_type": "t2v"}))
    with pytest.raises(FileNotFoundError, match=f"no diffusion_pytorch_model.*safetensors in {tmp_path}"):
        load_wan_release_dit(tmp_path)


def test_i2v_release_config_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "WanModel", "model_type": "i2v"}))
    with pytest.raises(ValueError, match="model_type must be 't2v'"):
        load_wan_release_dit(tmp_path)


def test_missing_diffusers_folder_names_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="diffusers Wan folder not found .*set backbone.diffusers_dir"):
        load_diffusers_wan_dit(tmp_path / "absent")
