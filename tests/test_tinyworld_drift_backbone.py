"""`backbone=tiny_drift`: the packaged weights of commit 98a91b2 (a TinyWorld model that drifts) compose, validate,
load through the same builder as `backbone=tiny`, and generate a short video on CPU."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from tokentrim import cli
from tokentrim.backbones import build_backbone, resolved_sampler
from tokentrim.tinyworld.backbone import CONFIG_FILE, WEIGHT_FILES, default_weights_dir, weights_folder
from tokentrim.tinyworld.training import generate_latents

PROMPT = "a red circle bounces left and right over a dark blue background, a small green square stays still"


def _compose(*overrides: str) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    cli.validate(cfg, command="score")
    return OmegaConf.to_container(cfg.backbone, resolve=True)


def test_drift_weights_are_their_own_small_export():
    drift, shipped = default_weights_dir("tinyworld_drift"), default_weights_dir()
    sizes = {name: (drift / name).stat().st_size for name in (*WEIGHT_FILES, CONFIG_FILE)}
    assert sum(sizes.values()) <= 12 * 1024 * 1024, sizes
    config = json.loads((drift / CONFIG_FILE).read_text())
    for name in WEIGHT_FILES:  # the files are the ones config.json records, and the DiT is not the shipped one
        assert hashlib.sha256((drift / name).read_bytes()).hexdigest() == config["files"][name], name
    assert (drift / "dit.safetensors").read_bytes() != (shipped / "dit.safetensors").read_bytes()


def test_tiny_drift_loads_with_its_sampler_and_generates_a_short_video():
    torch.set_num_threads(2)
    cfg = _compose("backbone=tiny_drift")
    assert weights_folder(cfg["weights_dir"], cfg["assets"]) == default_weights_dir("tinyworld_drift")
    sampler = resolved_sampler(cfg)
    assert sampler["shift"] == 3.0 and sampler["guidance_scale"] == 1.0 and sampler["block_frames"] == 3
    backbone = build_backbone(cfg, device="cpu", dtype=torch.float32)
    assert backbone.name == "tiny_drift" and backbone.num_latent_frames == 60
    context = backbone.encode_prompt(PROMPT)
    assert context  # guidance off: one row, the prompt's
    shape = (backbone.latent_channels, backbone.latent_height, backbone.latent_width)
    from tokentrim.tinyworld.backbone import load_tinyworld

    tw = load_tinyworld(assets="tinyworld_drift")
    latents = generate_latents(tw.model, tw.text_encoder, [PROMPT], num_latent_frames=6, sampler=sampler, seed=3,
                               latent_shape=shape)  # [1, 6, C, h, w]
    assert latents.shape == (1, 6, *shape) and torch.isfinite(latents).all()
    frames = backbone.decode(latents)  # uint8 [1 + 4 * 5, 64, 64, 3]
    assert frames.shape == (21, 64, 64, 3) and frames.dtype == torch.uint8
    assert frames.float().std() > 1.0  # a picture, not a constant


def test_unknown_assets_folder_is_one_line_naming_the_key():
    with pytest.raises(ValueError) as err:
        weights_folder(None, "no_such_model")
    message = str(err.value)
    assert "\n" not in message and "backbone.assets" in message and "tinyworld_drift" in message
