"""Training of the embedded TinyWorld model: teacher forcing equals cached inference; chunks resume exactly."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tokentrim.models.wan_causal import CausalWanModel
from tokentrim.tinyworld.prompts import prompt_set
from tokentrim.tinyworld.text_encoder import TinyTextEncoder
from tokentrim.tinyworld.training import (
    dit_loss,
    object_coverage,
    pixel_frames,
    sample_block_timesteps,
    teacher_forcing_flow,
    teacher_forcing_mask,
)

REPO = Path(__file__).resolve().parents[1]

# A model small enough to train a few steps on 2 CPU cores in seconds; every stage and the checkpoint code run.
TINY = [
    "clip.height=32", "clip.width=32",
    "vae.steps=3", "vae.batch_size=1", "vae.latent_frames=2", "vae.stats_batch=2", "vae.warmup=1",
    "vae.config.base_dim=4",
    "dit.steps=4", "dit.batch_size=2", "dit.pool_size=3", "dit.pool_steps=2", "dit.window_latent_frames=6",
    "dit.warmup=1", "dit.decay_steps=2",
    "dit.model.dim=32", "dit.model.ffn_dim=64", "dit.model.num_heads=2", "dit.model.num_layers=1",
    "dit.model.freq_dim=32",
    "text_encoder.dim=16", "text_encoder.num_heads=2", "text_encoder.ffn_dim=32", "text_encoder.num_layers=1",
    "dit.model.text_dim=16",
    "dit.object_weight=3.0",  # the object-weighted loss (and the pools' coverage) go through the resume test too
    "stages=[vae,dit]", "device=cpu", "log_every=2",
]


def _tiny_model() -> CausalWanModel:
    torch.manual_seed(0)
    return CausalWanModel(patch_size=(1, 2, 2), text_len=8, in_dim=4, dim=32, ffn_dim=64, freq_dim=32, text_dim=16,
                          out_dim=4, num_heads=2, num_layers=2)


def test_teacher_forcing_equals_cached_block_inference():
    """The training forward (clean copy + noisy copy under one mask) gives, for each noisy block, the flow the
    Self Forcing sampler computes with the clean earlier blocks committed to the KV cache."""
    model = _tiny_model().eval()
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(2, 6, 4, 8, 8, generator=g)
    noisy = torch.randn(2, 6, 4, 8, 8, generator=g)
    t = torch.tensor([[1000.0] * 3 + [625.0] * 3, [833.3] * 3 + [937.5] * 3])
    with torch.no_grad():
        ctx = model.encode_context(torch.randn(2, 8, 16, generator=g))
        flow = teacher_forcing_flow(model, clean, noisy, t, ctx, teacher_forcing_mask(6, 16, 3))
        cache = model.new_cache(height=8, width=8, max_frames=6, block_frames=3, batch_size=2)
        first = model(noisy[:, :3], t[:, :3], ctx, start_frame=0)
        cache.begin_block(0, 3 * 16)
        model(clean[:, :3], torch.zeros(2, 3), ctx, start_frame=0, cache=cache)
        cache.commit()
        cache.begin_block(3, 3 * 16)
        second = model(noisy[:, 3:], t[:, 3:], ctx, start_frame=3, cache=cache)
    torch.testing.assert_close(flow[:, :3], first, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flow[:, 3:], second, rtol=1e-5, atol=1e-5)


def test_block_timesteps_are_constant_per_block_and_include_sampler_steps():
    g = torch.Generator().manual_seed(0)
    t = sample_block_timesteps(64, 12, 3, sampler_timesteps=[1000.0, 937.5, 833.33, 625.0], discrete_prob=1.0,
                               train_shift=3.0, generator=g, device="cpu")
    assert t.shape == (64, 12)
    assert torch.equal(t[:, 0::3], t[:, 1::3]) and torch.equal(t[:, 0::3], t[:, 2::3])
    assert set(t.unique().tolist()) <= {1000.0, 937.5, 833.33001708984375, 625.0}
    assert pixel_frames(12) == 45



def test_object_coverage_groups_frames_like_the_causal_vae():
    """Latent frame 0 covers pixel frame 0 alone, latent frame f > 0 pixel frames 4f-3..4f; each latent pixel
    4x4 pixels. One bright 4x4 square in pixel frame 2 only -> a quarter of one latent pixel of latent frame 1."""
    pixels = torch.full((1, 9, 3, 8, 8), -1.0)  # [B, 1 + 4 * 2, 3, H, W], dark
    pixels[0, 2, 1, 4:8, 0:4] = 1.0  # bright green square, frame 2
    pixels[0, 0, 0, 0:2, 0:2] = 0.5  # frame 0: 4 pixels at 0.75 in [0, 1] (foreground: > 0.55)
    cover = object_coverage(pixels, temporal_stride=4, spatial_stride=4)
    assert cover.shape == (1, 3, 2, 2)
    expected = torch.zeros(1, 3, 2, 2)
    expected[0, 0, 0, 0] = 4 / 16
    expected[0, 1, 1, 0] = 1 / 4
    assert torch.equal(cover, expected)


def test_object_weighted_dit_loss():
    """object_weight 0 is the plain MSE; with weight w, an error under an object counts 1 + w times one elsewhere."""
    torch.manual_seed(0)
    model = CausalWanModel(patch_size=(1, 2, 2), text_len=40, in_dim=4, dim=32, ffn_dim=64, freq_dim=32, text_dim=16,
                           out_dim=4, num_heads=2, num_layers=1)
    text_encoder = TinyTextEncoder(dim=16, num_layers=1, num_heads=2, ffn_dim=32)
    latents = torch.randn(2, 6, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    coverage = torch.zeros(2, 6, 8, 8)
    coverage[:, :, :2, :2] = 1.0

    def loss(**kw) -> torch.Tensor:
        return dit_loss(model, text_encoder, latents, prompt_set(split="train", count=2, seed=0),
                        teacher_forcing_mask(6, 16, 3), block_frames=3, sampler_timesteps=[1000.0, 750.0],
                        discrete_prob=0.5, train_shift=2.0, context_corruption=0.0,
                        generator=torch.Generator().manual_seed(0), **kw)

    with torch.no_grad():
        plain, zero = loss(), loss(coverage=coverage, object_weight=0.0)
        weighted = loss(coverage=coverage, object_weight=4.0)
        uniform = loss(coverage=torch.ones_like(coverage), object_weight=4.0)
    assert torch.equal(plain, zero)
    torch.testing.assert_close(uniform, plain)  # a constant weight normalises away
    assert not torch.allclose(weighted, plain)
    with pytest.raises(ValueError, match="coverage"):
        loss(object_weight=1.0)

def _run(out: Path, *extra: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "scripts" / "train_tinyworld.py"), f"out_dir={out}", *TINY, *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("ckpt_*.pt")):
        flat |= torch.load(path, map_location="cpu", weights_only=True)
    return flat


def _losses(folder: Path) -> list[tuple[str, str, str]]:
    with (folder / "losses.csv").open() as f:
        return [(r["stage"], r["step"], r["loss"]) for r in csv.DictReader(f)]


def test_training_in_two_chunks_equals_one_run(tmp_path):
    """VAE -> stats -> DiT, cut after 4 optimizer steps (3 VAE + 1 DiT), checkpointed and resumed, ends with
    bit-identical weights and optimizer state (and the same loss log) as one uninterrupted run."""
    _run(tmp_path / "whole")
    _run(tmp_path / "part1", "chunk_steps=4")
    _run(tmp_path / "part2", f"resume_dir={tmp_path / 'part1'}", "stages=[vae,dit,export]",
         f"export.dir={tmp_path / 'export'}")
    whole, resumed = _checkpoint(tmp_path / "whole"), _checkpoint(tmp_path / "part2")
    assert set(whole) == set(resumed)
    assert any(k.startswith("dit_opt.") for k in whole)
    differing = [k for k in whole if not torch.equal(whole[k], resumed[k])]
    assert differing == []
    partial = _checkpoint(tmp_path / "part1")
    assert not torch.equal(partial["dit.head.head.weight"], whole["dit.head.head.weight"])  # the cut was mid-run
    assert [r[:2] for r in _losses(tmp_path / "whole")] == [("vae", "2"), ("dit", "2"), ("dit", "4")]
    assert _losses(tmp_path / "whole") == _losses(tmp_path / "part2")
    # the export records the command of each chunk that trained the weights (no recipe command given)
    commands = json.loads((tmp_path / "export" / "config.json").read_text())["command"].split(" && ")
    assert len(commands) == 2 and "chunk_steps=4" in commands[0] and "resume_dir=" in commands[1]


def test_dit_compile_failure_falls_back_to_eager_with_the_same_result(tmp_path):
    """`dit.compile=true` on a machine where compilation breaks: the step is retried eagerly (warned) and the run ends
    bit-identical to an eager run, so a GPU chunk never dies on its compiler."""
    _run(tmp_path / "eager")
    broken = (
        "import runpy, sys, torch\n"
        "def compile(fn, **kwargs):\n"
        "    def failing(*args, **kw):\n"
        "        raise RuntimeError('compiler unavailable on this machine')\n"
        "    return failing\n"
        "torch.compile = compile\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", broken, str(REPO / "scripts" / "train_tinyworld.py"),
           f"out_dir={tmp_path / 'fallback'}", *TINY, "dit.compile=true"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "dit.compile failed (RuntimeError: compiler unavailable on this machine); continuing eager" in proc.stdout + proc.stderr
    eager, fallback = _checkpoint(tmp_path / "eager"), _checkpoint(tmp_path / "fallback")
    assert [k for k in eager if not torch.equal(eager[k], fallback[k])] == []


def test_fine_tune_from_an_export_with_prompt_dropout_and_guided_eval(tmp_path):
    """`init_dir` starts the DiT from an export (VAE, statistics, DiT, text encoder; the VAE stage counts as done),
    trains with `dit.text_dropout`, evaluates guided sampling, and records where it started in its own export."""
    from safetensors.torch import load_file

    _run(tmp_path / "base", "stages=[vae,dit,export]", f"export.dir={tmp_path / 'export'}", "export.dtype=float32")
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    _run(tmp_path / "tuned", f"init_dir={tmp_path / 'export'}", "stages=[vae,dit,eval,export]", "dit.steps=2",
         "dit.text_dropout=0.5", "eval.num_prompts=2", "eval.long_prompts=1", "eval.long_factor=2",
         "eval.shifts=[5.0]", "eval.guidance_scales=[2.0]", f"eval.out={tmp_path / 'eval.json'}",
         f"export.dir={tmp_path / 'export2'}")
    meta = json.loads((tmp_path / "tuned" / "meta.json").read_text())
    assert meta["dit_step"] == 2 and meta["vae_step"] == exported["training"]["vae_steps"]
    assert meta["init"]["git_sha"] == exported["git_sha"] and meta["latents_mean"] == exported["vae"]["latents_mean"]
    tuned = _checkpoint(tmp_path / "tuned")
    vae = load_file(tmp_path / "export" / "vae.safetensors")
    assert all(torch.equal(tuned[f"vae.{k}"], v) for k, v in vae.items())  # the VAE is not retrained
    dit = load_file(tmp_path / "export" / "dit.safetensors")
    assert not torch.equal(tuned["dit.head.head.weight"], dit["head.head.weight"])  # the DiT is
    assert not any(k.startswith("vae_opt.") for k in tuned)
    in_window = json.loads((tmp_path / "eval.json").read_text())["in_window"]
    assert set(in_window) == {"5.0", "5.0@cfg2.0"} and in_window["5.0"] != in_window["5.0@cfg2.0"]
    assert json.loads((tmp_path / "export2" / "config.json").read_text())["training"]["fine_tuned_from"]["git_sha"] == (
        exported["git_sha"])
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train_tinyworld.py"), f"out_dir={tmp_path / 'x'}",
                           *TINY, f"init_dir={tmp_path / 'export'}", "dit.model.num_layers=2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0 and "its dit config" in proc.stderr and "differs from this run's" in proc.stderr


def test_prompt_dropout_and_guidance_rows():
    from tokentrim.tinyworld.prompts import NULL_PROMPT, drop_prompts, guidance_prompts

    prompts = prompt_set(split="train", count=64, seed=0)
    assert drop_prompts(prompts, 0.0, torch.Generator().manual_seed(0)) == prompts
    dropped = drop_prompts(prompts, 0.25, torch.Generator().manual_seed(0))
    assert dropped == drop_prompts(prompts, 0.25, torch.Generator().manual_seed(0))  # seeded: resumable
    kept = [d == p for d, p in zip(dropped, prompts)]
    assert 4 <= kept.count(False) <= 28 and all(d == NULL_PROMPT for d, k in zip(dropped, kept) if not k)
    assert guidance_prompts(prompts[:2], guided=False) == prompts[:2]
    assert guidance_prompts(prompts[:2], guided=True) == [*prompts[:2], NULL_PROMPT, NULL_PROMPT]
