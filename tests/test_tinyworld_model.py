"""The shipped TinyWorld model: strict loading, size budget, reproducible generation, clear errors on bad files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from tokentrim.tinyworld.backbone import (
    CONFIG_FILE,
    WEIGHT_FILES,
    default_weights_dir,
    latent_frames_for_seconds,
    load_tinyworld,
)
from tokentrim.tinyworld.training import generate_latents

PROMPT = "a red circle bounces left and right over a dark blue background, a small green square stays still"


@pytest.fixture(scope="module")
def backbone():
    torch.set_num_threads(2)
    return load_tinyworld()


def test_shipped_files_fit_in_25_mb_and_record_the_training_code():
    folder = default_weights_dir()
    sizes = {name: (folder / name).stat().st_size for name in (*WEIGHT_FILES, CONFIG_FILE)}
    assert sum(sizes.values()) <= 25 * 1024 * 1024, sizes
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["git_sha"] and config["code_sha256"] and config["command"]
    assert set(config["files"]) == set(WEIGHT_FILES)


def test_shipped_weights_have_exactly_the_modules_keys(backbone):
    folder = default_weights_dir()
    modules = {"dit.safetensors": backbone.model, "text_encoder.safetensors": backbone.text_encoder,
               "vae.safetensors": backbone.vae.autoencoder}
    for name, module in modules.items():
        with safe_open(str(folder / name), framework="pt") as f:
            assert set(f.keys()) == set(module.state_dict()), name


def test_backbone_contract(backbone):
    assert not backbone.model.training and not any(p.requires_grad for p in backbone.model.parameters())
    assert backbone.model.tokens_per_frame(backbone.latent_height, backbone.latent_width) >= 64
    assert backbone.sampler["block_frames"] == 3 and len(backbone.sampler["denoising_steps"]) == 4
    assert backbone.sampler["max_frames"] == backbone.train_window_latent_frames
    assert backbone.sampler["sink_frames"] == 3
    assert backbone.train_window_latent_frames % 3 == 0
    states = backbone.text_encoder.encode([PROMPT])
    assert states.shape[-1] == backbone.model.config.text_dim


def test_two_block_generation_is_bit_identical_across_runs(backbone):
    shape = (backbone.latent_channels, backbone.latent_height, backbone.latent_width)
    runs = [generate_latents(backbone.model, backbone.text_encoder, [PROMPT], num_latent_frames=6,
                             sampler=backbone.sampler, seed=3, latent_shape=shape) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    pixels = backbone.vae.decode(runs[0][:, :3])
    assert pixels.shape == (1, 9, 3, backbone.height, backbone.width)
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0


def test_missing_file_is_named(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(default_weights_dir(), folder)
    (folder / "vae.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="vae.safetensors"):
        load_tinyworld(weights_dir=str(folder))


def test_corrupt_file_is_named(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(default_weights_dir(), folder)
    (folder / "dit.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="dit.safetensors"):
        load_tinyworld(weights_dir=str(folder))


def test_weights_of_another_config_are_refused(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(default_weights_dir(), folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["dit"]["num_layers"] += 1
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="dit.safetensors"):
        load_tinyworld(weights_dir=str(folder))


def test_latent_frames_for_seconds_cover_the_duration_in_whole_blocks():
    assert latent_frames_for_seconds(45 / 8, 8.0) == 12  # 45 pixel frames = 12 latent frames
    assert latent_frames_for_seconds(30.0, 8.0) == 63  # 240 frames need 61 latents, rounded up to whole blocks
    for seconds in (1.0, 5.0, 12.5, 30.0):
        frames = latent_frames_for_seconds(seconds, 8.0)
        assert frames % 3 == 0 and 1 + 4 * (frames - 1) >= seconds * 8.0
        assert 1 + 4 * (frames - 4) < seconds * 8.0  # one block fewer would be too short
