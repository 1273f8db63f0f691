"""`scripts/inspect_checkpoint.py` names what a file is and whether it loads strictly at the released size.

Full-size files are faked with zero-stride tensors (one stored element expanded to the real shape), so a 1.4 B
parameter checkpoint costs a few KB on disk.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from tokentrim.models.loading import WAN_T2V_1_3B_CONFIG, causal_wan_state_dict_shapes, describe_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "inspect_checkpoint.py"


def load_script():
    spec = importlib.util.spec_from_file_location("inspect_checkpoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake(shape) -> torch.Tensor:
    return torch.zeros(1).expand(shape)  # full shape, one element of storage


def test_full_size_training_checkpoint_is_recognised_and_fits_1_3b(tmp_path, capsys):
    shapes = causal_wan_state_dict_shapes(**WAN_T2V_1_3B_CONFIG)
    ema = {"model._fsdp_wrapped_module." + k: fake(s) for k, s in shapes.items()}
    torch.save({"generator_ema": ema, "critic": {"model.x": torch.zeros(1)}}, tmp_path / "self_forcing_dmd.pt")
    summary = describe_checkpoint(tmp_path / "self_forcing_dmd.pt")
    assert summary.kind == "sf_rf_training" and summary.num_params == 1_418_996_800
    assert summary.dit_report is not None and summary.dit_report.is_ok
    assert load_script().main([str(tmp_path / "self_forcing_dmd.pt")]) == 0
    assert "CausalWanModel 1.3B (Wan2.1-T2V-1.3B): YES" in capsys.readouterr().out


def test_tiny_state_dict_is_reported_as_not_fitting(tmp_path, capsys):
    shapes = causal_wan_state_dict_shapes(**{**WAN_T2V_1_3B_CONFIG, "num_layers": 2, "dim": 24, "ffn_dim": 32})
    torch.save({k: torch.zeros(s) for k, s in shapes.items()}, tmp_path / "tiny.pt")
    assert load_script().main([str(tmp_path / "tiny.pt")]) == 1
    out = capsys.readouterr().out
    assert "kind:        dit_state_dict" in out and ": NO - 756 missing" in out


def test_full_size_wan_vae_pth_is_recognised_and_fits(tmp_path, capsys):
    from tokentrim.models.vae import WanVAE, diffusers_to_original_vae_key

    with torch.device("meta"):
        vae = WanVAE()
    state_dict = {diffusers_to_original_vae_key(k, num_res_blocks=2): fake(v.shape)
                  for k, v in vae.autoencoder.state_dict().items()}
    torch.save(state_dict, tmp_path / "Wan2.1_VAE.pth")
    assert load_script().main([str(tmp_path / "Wan2.1_VAE.pth")]) == 0
    out = capsys.readouterr().out
    assert "kind:        vae" in out and "Wan2.1 VAE (AutoencoderKLWan): YES" in out


def test_full_size_wan_t5_pth_is_recognised_and_fits(tmp_path, capsys):
    from tokentrim.models.text_encoder import WanTextEncoder, hf_to_wan_t5_key

    with torch.device("meta"):
        encoder = WanTextEncoder()
    state_dict = {hf_to_wan_t5_key(k): fake(v.shape) for k, v in encoder.encoder.state_dict().items()}
    torch.save(state_dict, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    assert load_script().main([str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")]) == 0
    out = capsys.readouterr().out
    assert "kind:        t5" in out and "UMT5-XXL encoder: YES" in out


def test_wan_release_folder_is_recognised_from_its_config(tmp_path):
    from safetensors.torch import save_file

    shapes = causal_wan_state_dict_shapes(**{**WAN_T2V_1_3B_CONFIG, "num_layers": 1, "dim": 8, "ffn_dim": 8,
                                             "text_dim": 4096})
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "WanModel", "model_type": "t2v", "dim": 8,
                                                      "ffn_dim": 8, "num_layers": 1, "num_heads": 2}))
    summary = describe_checkpoint(tmp_path)
    assert summary.kind == "wan_release_folder" and summary.dit_config["dim"] == 8
    assert not summary.dit_report.is_ok  # not the 1.3B size ...
    # ... but consistent with its own config
    assert any("against its own config" in n and "all keys and shapes match" in n for n in summary.notes)


def test_unrecognised_file_exits_2(tmp_path, capsys):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert load_script().main([str(tmp_path / "other.pt")]) == 2
    assert "kind:        unknown" in capsys.readouterr().out
