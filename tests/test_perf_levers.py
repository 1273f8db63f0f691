"""Speed levers of issue #9 keep the numbers: compiled block regions and SDPA kernel choice equal the eager reference.

CPU, fp32, tiny model. `torch.compile` runs with the aot_eager backend (traces the regions exactly as inductor would
see them, without generating kernels), fullgraph=True so a graph break inside a region fails here, not on the GPU.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from tokentrim.caches import KVCache
from tokentrim.models.wan_causal import CausalWanModel, WanSpeedConfig
from tokentrim.pipelines.self_forcing import SelfForcingConfig, SelfForcingPipeline

TINY = dict(text_len=8, dim=64, ffn_dim=128, freq_dim=256, text_dim=32, num_heads=2, num_layers=2)
ROOT = Path(__file__).resolve().parents[1]


def tiny_model(seed: int = 0) -> CausalWanModel:
    torch.manual_seed(seed)
    model = CausalWanModel(**TINY).eval().requires_grad_(False)
    with torch.no_grad():  # nonzero head so the output depends on every block
        model.head.head.weight.normal_(0.0, 0.1)
    return model


def rollout(model: CausalWanModel, num_frames: int = 9, max_frames: int = 6, sink_frames: int = 3) -> torch.Tensor:
    """Rolling-window Self Forcing rollout (eviction included) with seeded noise."""
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(1, num_frames, 16, 8, 8, generator=gen)
    context_kv = model.encode_context(torch.randn(1, 8, 32, generator=gen))
    pipe = SelfForcingPipeline(model, SelfForcingConfig(max_frames=max_frames, sink_frames=sink_frames))
    return pipe(noise, context_kv, noise_source=lambda s: torch.randn(s, generator=gen))


def test_compiled_block_regions_equal_eager_rollout():
    model = tiny_model()
    reference = rollout(model)
    model.set_speed(WanSpeedConfig(compile_blocks=True, compile_backend="aot_eager", compile_fullgraph=True))
    compiled = rollout(model)
    torch.testing.assert_close(compiled, reference, rtol=1e-5, atol=1e-5)
    model.set_speed(WanSpeedConfig())  # back to eager: the same numbers again
    torch.testing.assert_close(rollout(model), reference, rtol=0, atol=0)


def test_math_sdpa_kernel_equals_default_choice():
    model = tiny_model(1)
    reference = rollout(model)
    model.set_speed({"attention_backends": ("math",)})
    torch.testing.assert_close(rollout(model), reference, rtol=1e-5, atol=1e-5)
    assert model.blocks[0].self_attn.sdpa_backends == (torch.nn.attention.SDPBackend.MATH,)


def test_split_block_equals_one_piece_self_attention_module():
    """The block's region split calls the same math as `CausalSelfAttention.forward` (kept for other callers)."""
    model = tiny_model(2)
    block, attn = model.blocks[0], model.blocks[0].self_attn
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3 * 16, 64, generator=gen)
    angles = torch.rand(3 * 16, 16, generator=gen)
    cos, sin = angles.cos(), angles.sin()
    q, k, v = attn.qkv(x, cos, sin)
    whole = attn(x, cos, sin, None, 0)
    split = attn.project_out(attn.attend(q, k, v, None))
    torch.testing.assert_close(split, whole, rtol=0, atol=0)
    assert block._before_fn is None and block._after_fn is None  # eager by default


def test_unknown_attention_backend_is_rejected_naming_the_key():
    with pytest.raises(ValueError, match=r"speed.attention_backends .*\['fa3'\]"):
        WanSpeedConfig(attention_backends=("fa3",))
    with pytest.raises(TypeError, match="speed must be a WanSpeedConfig"):
        tiny_model().set_speed(["cudnn"])


@pytest.mark.parametrize("token_major", [False, True])
def test_eviction_and_pruning_work_layer_by_layer_with_the_same_result(token_major):
    """Per-layer eviction/prune (lower peak memory) leave every layer's entries where a whole-cache copy would,
    in either memory order of the buffers."""
    cache = KVCache(num_layers=3, num_heads=2, head_dim=4, tokens_per_frame=4, max_frames=5, block_frames=1,
                    sink_frames=1, token_major=token_major)
    # token-major: tokens are outside heads in memory ([Y, B, T, n, d]); the [Y, B, n, T, d] indexing is unchanged
    assert (cache.k.stride(3) > cache.k.stride(2)) == token_major
    gen = torch.Generator().manual_seed(0)
    written = {}
    for frame in range(7):  # 7 frames through a 5-frame window with 1 sink: frames 1 and 2 get evicted
        cache.begin_block(frame, 4)
        for layer in range(3):
            k = torch.randn(1, 2, 4, 4, generator=gen)
            cache.stage(layer, k, k + 1)
            written[(layer, frame)] = k
        cache.commit()
        if frame == 5:
            cache.prune(torch.tensor([1, 2]))
    frames, tokens = cache.positions()
    for layer in range(3):
        for i, (f, t) in enumerate(zip(frames.tolist(), tokens.tolist())):
            torch.testing.assert_close(cache.k[layer, 0, :, i], written[(layer, f)][0, :, t])
            torch.testing.assert_close(cache.v[layer, 0, :, i], written[(layer, f)][0, :, t] + 1)
    assert 1 not in frames.tolist() and 2 not in frames.tolist() and frames.tolist()[:4] == [0, 0, 0, 0]


def test_token_major_layout_and_gelu_epilogue_keep_the_eager_numbers():
    """Token-major q/k/v + cache and the FFN's fused GEMM + GELU op: the same rollout (eviction included), eager and
    compiled; the attention then reads views with flash-attn's [B, L, n, d] strides."""
    model = tiny_model(3)
    reference = rollout(model)
    model.set_speed(WanSpeedConfig(token_major=True, gelu_epilogue=True))
    torch.testing.assert_close(rollout(model), reference, rtol=1e-6, atol=1e-6)
    cache = model.new_cache(height=8, width=8, max_frames=6, block_frames=3)
    assert cache.token_major and cache.k.stride(3) == 2 * 32  # next token = all heads of one token further on
    x = torch.randn(1, 3 * 16, 64)
    angles = torch.rand(3 * 16, 16)
    q, k, v = model.blocks[0].self_attn.qkv(x, angles.cos(), angles.sin())
    assert q.shape == (1, 2, 48, 32) and q.stride() == (48 * 64, 32, 64, 1) and k.stride() == q.stride()
    model.set_speed(WanSpeedConfig(token_major=True, gelu_epilogue=True, compile_tuning=True, compile_blocks=True,
                                   compile_backend="aot_eager", compile_fullgraph=True))
    torch.testing.assert_close(rollout(model), reference, rtol=1e-5, atol=1e-5)
    model.set_speed(WanSpeedConfig())
    torch.testing.assert_close(rollout(model), reference, rtol=0, atol=0)


def test_linear_gelu_tanh_op_matches_linear_then_gelu_and_its_fake_shape():
    from tokentrim.models.wan_causal import linear_gelu_tanh

    gen = torch.Generator().manual_seed(4)
    x, weight, bias = torch.randn(2, 5, 8, generator=gen), torch.randn(12, 8, generator=gen), torch.randn(12, generator=gen)
    expected = torch.nn.functional.gelu(torch.nn.functional.linear(x, weight, bias), approximate="tanh")
    torch.testing.assert_close(linear_gelu_tanh(x, weight, bias), expected, rtol=0, atol=0)
    torch.library.opcheck(linear_gelu_tanh, (x, weight, bias))  # schema, fake (meta) shape, no aliasing


def test_gelu_epilogue_is_skipped_under_autograd():
    """The fused op has no backward: with gradients on, the FFN runs as Linear, GELU, Linear (FlowMo's path)."""
    model = tiny_model(4).requires_grad_(True)
    model.set_speed(WanSpeedConfig(gelu_epilogue=True))
    x = torch.randn(1, 16, 64, requires_grad=True)
    out = model.blocks[0].feed_forward(x)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(model.blocks[0].feed_forward(x), out.detach(), rtol=1e-6, atol=1e-6)


def test_kv_only_call_stages_the_same_cache_entries_and_returns_none():
    """Self Forcing's cache refresh without the last block's attention/FFN and the head: the same K/V."""
    model = tiny_model(5)
    gen = torch.Generator().manual_seed(6)
    context_kv = model.encode_context(torch.randn(1, 8, 32, generator=gen))
    x0 = torch.randn(1, 3, 16, 8, 8, generator=gen)
    t = torch.zeros(1, 3)
    caches = []
    for kv_only in (False, True):
        cache = model.new_cache(height=8, width=8, max_frames=6, block_frames=3)
        cache.begin_block(0, 3 * 16)
        out = model(x0, t, context_kv, start_frame=0, cache=cache, kv_only=kv_only)
        assert (out is None) == kv_only
        cache.commit()
        caches.append(cache)
    torch.testing.assert_close(caches[1].k, caches[0].k, rtol=0, atol=0)
    torch.testing.assert_close(caches[1].v, caches[0].v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="kv_only stages K/V in a cache; got cache=None"):
        model(x0, t, context_kv, kv_only=True)


def _load_bench(script: str = "official_side_by_side"):
    """A bench script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(script, ROOT / "bench" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # official_side_by_side's dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_side_by_side_bench_without_official_times_our_variants_and_writes_json_md(tmp_path):
    bench = _load_bench()
    record = bench.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--what", "dit,long,profile,vae",
                         "--repeats", "1", "--long-repeats", "1", "--ours-variants", "eager,aot+tokmajor+gelu",
                         "--vae-frames-per-call", "2"])
    dit = record["stages"]["dit"]
    assert set(dit["variants"]) == {"ours_eager", "ours_aot+tokmajor+gelu"}
    assert dit["equality"]["ours_aot+tokmajor+gelu_vs_ours_eager"]["max_abs"] <= 1e-5
    vae = record["stages"]["vae"]["variants"]
    assert {"ours", "ours_fast", "ours_fast_k2"} <= set(vae)
    fastest = min(["ours_fast", "ours_fast_k2"], key=lambda name: vae[name]["total_s"]["median"])
    assert record["stages"]["end_to_end"]["rows"]["ours_fastest"]["decode"] == fastest
    assert record["stages"]["end_to_end"]["rows"]["ours_aot+tokmajor+gelu+ours_fast"]["decode"] == "ours_fast"
    assert record["stages"]["long"]["variants"][dit["fastest_ours"]]["dit_calls"] == 4 * 4 + 3  # 4 blocks, no last commit
    written = json.loads(next(tmp_path.glob("side_by_side_*.json")).read_text())
    assert written["notes"] == ["no --official-sf: our Self Forcing side only", "no --official-rf: our Rolling Forcing side only"]
    assert "## dit (Self Forcing): 6 latent frames" in next(tmp_path.glob("side_by_side_*.md")).read_text()
    profiled = record["stages"]["profile"]["variants"][dit["fastest_ours"]]  # CPU: ops, not kernels
    assert profiled["kernel_s"] > 0 and profiled["top"] and sum(profiled["by_kind_s"].values()) == pytest.approx(
        profiled["kernel_s"])
    assert bench.kernel_kind("sm90_xmma_gemm_bf16bf16_bf16f32") == "gemm"
    assert bench.kernel_kind("cudnn_generated_fort_native_sdpa_sm90_flash_fprop") == "attention"
    assert bench.kernel_kind("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_3") == "fused by inductor"
    assert bench.kernel_kind("void at::native::unrolled_elementwise_kernel<direct_copy_kernel_cuda>") == "copy"
    assert bench.kernel_kind("void at::native::vectorized_elementwise_kernel<GeluCUDAKernelImpl>") == (
        "elementwise/reduction")
    with pytest.raises(ValueError, match="profile needs the dit stage"):
        bench.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--what", "profile"])


def test_side_by_side_bench_times_our_rolling_forcing_variants_and_tags_its_files(tmp_path):
    bench = _load_bench()
    record = bench.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--what", "rf,rf_long", "--repeats", "1",
                         "--long-repeats", "1", "--rf-variants", "eager,tokmajor+kvsplit2", "--tag", "t"])
    rf = record["stages"]["rf"]
    assert set(rf["variants"]) == {"ours_eager", "ours_tokmajor+kvsplit2"}
    # 5 blocks: 9 windows, each a denoising call; refreshes after windows 4..7 (the clean blocks a later window reads)
    assert rf["variants"]["ours_eager"]["dit_calls"] == (5 + 5 - 1) + 4
    assert rf["equality"]["ours_tokmajor+kvsplit2_vs_ours_eager"]["rel_max"] <= 1e-5
    assert record["execution_path"]["rf_ours_tokmajor+kvsplit2"]["attention_kv_splits"]["split_calls"] > 0
    long = record["stages"]["rf_long"]
    assert list(long["variants"]) == [rf["fastest_ours"]] and long["latent_frames"] == 30
    assert long["variants"][rf["fastest_ours"]]["dit_calls"] == (10 + 5 - 1) + 9
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["side_by_side_rf_cpu_%s_t.json" % time.strftime("%Y%m"),
                                                            "side_by_side_rf_cpu_%s_t.md" % time.strftime("%Y%m")]
    assert "## rf (Rolling Forcing): 15 latent frames" in (tmp_path / f"side_by_side_rf_cpu_{time.strftime('%Y%m')}_t.md").read_text()
    with pytest.raises(ValueError, match="rf_profile and rf_long need the rf stage"):
        bench.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--what", "rf_long"])


def test_the_official_rf_noise_source_draws_whole_windows_in_the_official_order():
    """Ours replays the official re-noising stream: per re-noised block one randn of its whole window, block slice."""
    official_rf = _load_bench("official_rf")
    from tokentrim.pipelines.rolling_forcing import window_schedule

    config = official_rf.ours_config()
    noise = torch.zeros(1, 21, 2, 2, 2)
    draw = official_rf.official_renoise_source(config, noise)
    torch.manual_seed(0)
    got = [draw((1, 3, 2, 2, 2)) for _ in range(sum(sum(lv < 4 for lv in w.levels) for w in window_schedule(7, 5)))]
    torch.manual_seed(0)
    want = []
    for w in window_schedule(7, 5):  # the official loop: for each block not at the last level, randn_like(window)
        for j, level in enumerate(w.levels):
            if level < 4:
                want.append(torch.randn(len(w.levels) * 3, 2, 2, 2)[j * 3:(j + 1) * 3].unsqueeze(0))
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    with pytest.raises(StopIteration):
        draw((1, 3, 2, 2, 2))


def test_kernel_gaps_finds_device_idle_between_overlapping_kernels():
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    bench = _load_bench()

    def event(start, end, name, device=DeviceType.CUDA):
        return SimpleNamespace(time_range=SimpleNamespace(start=start, end=end), name=name, device_type=device)

    # a (0-10) and b (5-30) overlap; 30-100 idle; c 100-110; 110-115 idle; d 115-120; a CPU op is ignored
    prof = SimpleNamespace(events=lambda: [event(100, 110, "c"), event(0, 10, "a"), event(5, 30, "b"),
                                           event(115, 120, "d"), event(40, 90, "cpu_op", DeviceType.CPU)])
    gaps = bench.kernel_gaps(prof, top=2, min_us=20)
    assert gaps["kernels"] == 4 and gaps["first_to_last_s"] == pytest.approx(120e-6)
    assert gaps["idle_between_kernels_s"] == pytest.approx(75e-6)
    assert gaps["gaps_over_20us"] == 1 and gaps["idle_in_gaps_over_20us_s"] == pytest.approx(70e-6)
    assert gaps["longest"] == [{"us": 70, "after": "b", "before": "c"}, {"us": 5, "after": "c", "before": "d"}]


def test_side_by_side_bench_rejects_unknown_lever():
    bench = _load_bench()
    with pytest.raises(ValueError, match="--ours-variants: unknown lever 'fa3'"):
        bench.parse_variant("compile+fa3")
    speed = bench.parse_variant("compile+cudnn+tokmajor+gelu+tune")
    assert speed.compile_blocks and speed.token_major and speed.gelu_epilogue and speed.compile_tuning
    assert not bench.parse_variant("compile").token_major
    assert bench.parse_variant("compile+graphs").cuda_graphs and not bench.parse_variant("compile").cuda_graphs
    assert bench.parse_variant("cudnn+tokmajor+kvsplit3").attention_kv_splits == 3
    assert bench.parse_variant("cudnn+tokmajor").attention_kv_splits == 1
    with pytest.raises(ValueError, match="--ours-variants: unknown lever 'kvsplitx'"):
        bench.parse_variant("tokmajor+kvsplitx")
    with pytest.raises(SystemExit):  # argparse: one error line naming the bad list
        bench.main(["--tiny", "--device", "cpu", "--vae-frames-per-call", "2,0"])


@pytest.mark.parametrize("token_major", [False, True], ids=["head_major", "token_major_gelu_epilogue"])
def test_compiled_regions_keep_flowmo_gradients_and_tokentrim_pruning(token_major):
    """The levers under the product's own paths: FlowMo's backward through the first batch and a forced TokenTrim
    prune + regeneration give the eager numbers."""
    from tokentrim.init.flowmo import FlowMoConfig
    from tokentrim.trim import TokenTrim, TokenTrimConfig

    class PruneBatch2(TokenTrim):
        def decide(self, block_tokens):
            decision = super().decide(block_tokens)
            if decision.t == 2 and decision.unstable is not None:
                decision.should_prune = True
            return decision

    def run(model: CausalWanModel) -> tuple[torch.Tensor, list[dict]]:
        gen = torch.Generator().manual_seed(7)
        noise = torch.randn(1, 12, 16, 8, 8, generator=gen)
        context_kv = model.encode_context(torch.randn(1, 8, 32, generator=gen))
        pipe = SelfForcingPipeline(model, SelfForcingConfig(max_frames=9, sink_frames=3),
                                   trim=PruneBatch2(TokenTrimConfig()), flowmo=FlowMoConfig())
        events: list[dict] = []
        latents = pipe(noise, context_kv, noise_source=lambda s: torch.randn(s, generator=gen), on_event=events.append)
        return latents, events

    model = tiny_model()
    reference, ref_events = run(model)
    model.set_speed(WanSpeedConfig(compile_blocks=True, compile_backend="aot_eager", compile_fullgraph=True,
                                   token_major=token_major, gelu_epilogue=token_major))
    compiled, events = run(model)
    model.set_speed(WanSpeedConfig())
    assert [e["num_pruned_entries"] for e in events] == [e["num_pruned_entries"] for e in ref_events]
    assert sum(e["triggered"] for e in events) == 1
    torch.testing.assert_close(compiled, reference, rtol=1e-4, atol=1e-4)


def test_backbone_speed_auto_is_on_for_cuda_only_and_bad_values_are_rejected():
    from tokentrim.backbones import check_backbone_config, resolve_speed

    assert resolve_speed({}, "cpu") == WanSpeedConfig()
    cuda = resolve_speed({"compile_blocks": "auto", "attention_backends": "auto"}, "cuda:0")
    assert cuda.compile_blocks and cuda.attention_backends == ("cudnn", "flash")
    assert cuda.token_major and cuda.gelu_epilogue and not cuda.compile_tuning  # tuning: bench-only (+0.2 %)
    assert not resolve_speed({"token_major": False, "gelu_epilogue": False}, "cuda").token_major
    assert resolve_speed({"gelu_epilogue": True}, "cpu").gelu_epilogue
    assert not cuda.cuda_graphs and resolve_speed({"cuda_graphs": True}, "cuda").cuda_graphs  # auto = off (memory)
    assert resolve_speed({"compile_blocks": False, "attention_backends": ["flash"]}, "cuda").attention_backends == ("flash",)
    base = {"kind": "wan", "pipeline": "self_forcing", "model": {}, "video": {}}
    with pytest.raises(ValueError, match="backbone.speed has unknown keys"):
        check_backbone_config(base | {"speed": {"compile": True}})
    with pytest.raises(ValueError, match="compile_blocks must be auto, true or false"):
        check_backbone_config(base | {"speed": {"compile_blocks": "yes"}})
    with pytest.raises(ValueError, match="token_major must be auto, true or false"):
        check_backbone_config(base | {"speed": {"token_major": "sometimes"}})
    with pytest.raises(ValueError, match="attention_backends must be auto or a list"):
        check_backbone_config(base | {"speed": {"attention_backends": ["fa3"]}})


def test_vae_decode_levers_keep_the_numbers_and_restore_global_state():
    from tokentrim.models.vae import WanVAE

    torch.manual_seed(0)
    vae = WanVAE(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True),
                 latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    latents = torch.randn(1, 3, 4, 4, 4, generator=torch.Generator().manual_seed(1))  # [B, F, C, h, w]
    plain = vae.decode(latents)
    before = torch.backends.cudnn.benchmark
    vae.set_decode_speed(channels_last_3d=True, cudnn_benchmark=True)
    conv_weights = [p for p in vae.autoencoder.parameters() if p.dim() == 5]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in conv_weights)
    assert not all(p.is_contiguous() for p in conv_weights)
    fast = vae.decode(latents)
    assert torch.backends.cudnn.benchmark == before  # only inside the decode
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False)
    assert all(p.is_contiguous() for p in conv_weights)


def test_fused_decoder_norm_keeps_the_numbers_compiled_and_is_undone():
    """`fused_norm`: every RMS norm + SiLU pair of the decoder (2 per residual block + the head) runs as one compiled
    kernel (dynamic shapes: the levels' channel counts and the chunks' frame counts share it); the decode equals
    diffusers' modules to float rounding, streaming included, and switching it off restores them exactly."""
    from tokentrim.models.vae import WanVAE
    from tokentrim.models.vae_decode_fusion import fuse_decoder_norms, unfuse_decoder_norms

    torch.manual_seed(0)
    vae = WanVAE(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True),
                 latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    with torch.no_grad():  # default gains are 1 and biases 0: perturb so every weight matters
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    latents = torch.randn(1, 4, 4, 4, 4, generator=torch.Generator().manual_seed(1))  # [B, F, C, h, w]
    plain = vae.decode(latents)
    decoder = vae.autoencoder.decoder
    assert fuse_decoder_norms(decoder, compile=False) == 2 * (2 + 3 * 2) + 1  # mid 2 blocks, 3 levels x 2, head
    torch.testing.assert_close(vae.decode(latents), plain, rtol=1e-5, atol=1e-5)
    unfuse_decoder_norms(decoder)
    assert torch.equal(vae.decode(latents), plain)

    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False, fused_norm=True)  # torch.compile'd kernel
    stream = torch.cat(list(vae.decode_stream([latents[:, :1], latents[:, 1:]])), dim=1)
    torch.testing.assert_close(stream, plain, rtol=1e-5, atol=1e-5)
    assert all(isinstance(m.nonlinearity, torch.nn.Identity) for m in decoder.modules() if hasattr(m, "norm1"))
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False, fused_norm=False)
    assert torch.equal(vae.decode(latents), plain)
    assert all(isinstance(m.nonlinearity, torch.nn.SiLU) for m in decoder.modules() if hasattr(m, "norm1"))



def test_channels_last_activations_take_the_rows_kernel_with_the_same_numbers(monkeypatch):
    """`vae_fused_norm` on channels-last memory: the norm runs over `[N, C]` rows (views in and out, no copy), equal
    to the 5-D form; a decode with channels-last weights and the compiled kernels equals diffusers' modules."""
    from tokentrim.models import vae_decode_fusion as fusion
    from tokentrim.models.vae import WanVAE

    x = torch.randn(2, 8, 3, 4, 5, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last_3d)
    weight, bias = torch.rand(8, 1, 1, 1) * 8 ** 0.5, torch.randn(8, 1, 1, 1)
    rows = fusion.as_channel_rows(fusion.rms_norm_silu_rows, x, weight, bias)
    torch.testing.assert_close(rows, fusion.rms_norm_silu(x, weight, bias), rtol=1e-6, atol=1e-6)
    assert rows.is_contiguous(memory_format=torch.channels_last_3d) and rows.shape == x.shape
    kernel = fusion.CompiledRMSNormSiLU()
    calls = []
    monkeypatch.setattr(kernel, "compiled_rows", lambda *a: calls.append("rows") or fusion.rms_norm_silu_rows(*a))
    monkeypatch.setattr(kernel, "compiled", lambda *a: calls.append("5d") or fusion.rms_norm_silu(*a))
    kernel(x, weight, bias), kernel(x.contiguous(), weight, None)
    assert calls == ["rows", "5d"]
    monkeypatch.undo()

    torch.manual_seed(0)
    vae = WanVAE(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True),
                 latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    latents = torch.randn(1, 4, 4, 4, 4, generator=torch.Generator().manual_seed(1))  # [B, F, C, h, w]
    with torch.no_grad():
        plain = vae.decode(latents)
        vae.set_decode_speed(channels_last_3d=True, cudnn_benchmark=False, fused_norm=True)
        torch.testing.assert_close(vae.decode(latents), plain, rtol=1e-5, atol=1e-5)
        vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False)


def test_vae_norm_kernel_bench_appends_one_record_per_process(tmp_path):
    bench = _load_bench("vae_norm_kernel")
    out = tmp_path / "norm.jsonl"
    args = ["--device", "cpu", "--out", str(out), "--latent-frames", "2", "--latent-size", "4,4", "--base-dim", "8",
            "--repeats", "1"]
    bench.main(args + ["--variant", "unfused"])
    bench.main(args + ["--variant", "shipped"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in records] == ["unfused", "shipped"]
    assert all(r["decode_s_median"] > 0 and r["env"]["device"] == "cpu" for r in records)
    with pytest.raises(ValueError, match="--repeats must be >= 1"):
        bench.main(args + ["--repeats", "0"])


def test_fused_norm_falls_back_to_eager_when_compilation_fails(monkeypatch, caplog):
    """A machine where torch.compile breaks: the fused norm warns once and computes the same numbers eagerly."""
    from tokentrim.models import vae_decode_fusion as fusion

    def broken_compile(fn, **kwargs):
        def failing(*args):
            raise RuntimeError("no triton on this machine")
        return failing

    monkeypatch.setattr(torch, "compile", broken_compile)
    kernel = fusion.CompiledRMSNormSiLU()
    x = torch.randn(2, 8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    weight = torch.rand(8, 1, 1, 1) * 8 ** 0.5
    with caplog.at_level("WARNING"):
        first, second = kernel(x, weight, None), kernel(x, weight, None)
    assert kernel.failed and sum("torch.compile failed" in r.message for r in caplog.records) == 1
    expected = torch.nn.functional.silu(torch.nn.functional.normalize(x, dim=1) * weight)
    torch.testing.assert_close(first, expected)
    assert torch.equal(first, second)

def test_implicit_conv_padding_keeps_the_numbers_and_is_undone():
    """`implicit_padding`: the decoder's causal convs pad H, W inside the convolution (no padded copy); streaming
    (cache concatenated in front) and the first chunk (causal zeros) give diffusers' numbers; off restores them."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    from tokentrim.models.vae import WanVAE

    torch.manual_seed(0)
    vae = WanVAE(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True),
                 latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    latents = torch.randn(1, 4, 4, 4, 4, generator=torch.Generator().manual_seed(1))  # [B, F, C, h, w]
    plain = vae.decode(latents)
    convs = [m for m in vae.autoencoder.decoder.modules() if isinstance(m, WanCausalConv3d)]
    vae.set_decode_speed(channels_last_3d=True, cudnn_benchmark=False, implicit_padding=True)
    assert convs and all("forward" in c.__dict__ for c in convs)
    stream = torch.cat(list(vae.decode_stream([latents[:, :1], latents[:, 1:3], latents[:, 3:]])), dim=1)
    torch.testing.assert_close(stream, plain, rtol=1e-5, atol=1e-5)
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False, implicit_padding=False)
    assert not any("forward" in c.__dict__ for c in convs)
    assert torch.equal(vae.decode(latents), plain)


def test_native_upsample_gives_the_same_bits_in_bf16_and_is_undone():
    """`native_upsample`: nearest upsampling in bf16 instead of diffusers' float32 round trip is bit-identical."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanUpsample

    from tokentrim.models.vae import WanVAE

    torch.manual_seed(0)
    vae = WanVAE(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True),
                 latents_mean=[0.0] * 4, latents_std=[1.0] * 4).to(torch.bfloat16).eval()
    latents = torch.randn(1, 3, 4, 4, 4, generator=torch.Generator().manual_seed(1))  # [B, F, C, h, w]
    plain = vae.decode(latents)
    upsamplers = [m for m in vae.autoencoder.decoder.modules() if isinstance(m, WanUpsample)]
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False, native_upsample=True)
    assert len(upsamplers) == 2 and all("forward" in u.__dict__ for u in upsamplers)
    assert torch.equal(vae.decode(latents), plain)
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False)
    assert not any("forward" in u.__dict__ for u in upsamplers)


def test_subpixel_upsample_is_exact_in_float64_close_in_bf16_and_is_undone():
    """`subpixel_upsample`: nearest x2 + 3x3 conv as four 2x2 phase kernels on the low-resolution input gives the
    upsampled convolution's numbers (float64: to 1e-12, through the streaming decode and channels-last activations;
    bf16: to rounding); off restores diffusers' forward."""
    from tokentrim.models.vae import WanVAE
    from tokentrim.models.vae_decode_fusion import phase_kernels, subpixel_upsampling

    # one conv against its definition, odd sizes, batch > 1, with a bias
    conv = torch.nn.Conv2d(5, 3, 3, padding=1).double()
    x = torch.randn(2, 5, 3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    stack = torch.nn.Sequential(__import__("diffusers.models.autoencoders.autoencoder_kl_wan",
                                           fromlist=["WanUpsample"]).WanUpsample(scale_factor=(2.0, 2.0),
                                                                                  mode="nearest-exact"), conv)
    # diffusers' WanUpsample rounds through float32: the reference is the definition in float64
    reference = conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest-exact"))
    torch.testing.assert_close(stack(x), reference, rtol=0, atol=1e-6)
    decoder = torch.nn.Module()
    decoder.up = stack
    assert subpixel_upsampling(decoder, True) == 1
    torch.testing.assert_close(stack(x), reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(stack(x.contiguous(memory_format=torch.channels_last)), reference, rtol=0, atol=1e-12)
    assert phase_kernels(conv.weight).shape == (12, 5, 2, 2)
    subpixel_upsampling(decoder, False)
    assert "forward" not in stack.__dict__ and not torch.equal(stack(x), reference)  # float32 round trip again

    torch.manual_seed(0)
    vae = WanVAE(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True),
                 latents_mean=[0.0] * 4, latents_std=[1.0] * 4).double().eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    latents = torch.randn(1, 4, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False, native_upsample=True)  # no float32 trip
    plain = vae.decode(latents)
    vae.set_decode_speed(channels_last_3d=True, cudnn_benchmark=False, subpixel_upsample=True)
    assert sum("forward" in m.__dict__ for m in vae.autoencoder.decoder.modules()
               if isinstance(m, torch.nn.Sequential)) == 2  # both upsamplers of the 3-level decoder
    stream = torch.cat(list(vae.decode_stream([latents[:, :1], latents[:, 1:3], latents[:, 3:]])), dim=1)
    torch.testing.assert_close(stream, plain, rtol=0, atol=1e-12)
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False, native_upsample=True)
    assert torch.equal(vae.decode(latents), plain)

    vae = vae.to(torch.bfloat16)  # bf16: the summed taps round differently, no worse than the plain decode's rounding
    plain_err = (vae.decode(latents.to(torch.bfloat16)).double() - plain).abs().mean()
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=False, subpixel_upsample=True)
    fast_err = (vae.decode(latents.to(torch.bfloat16)).double() - plain).abs().mean()
    assert 0 < fast_err < 1.25 * plain_err, (fast_err, plain_err)


def test_cudnn_benchmark_all_times_every_algorithm_inside_the_decode_only(monkeypatch):
    from tokentrim.models.vae import WanVAE

    vae = WanVAE(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(True, True),
                 latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    seen = []
    decoder_forward = vae.autoencoder.decoder.forward

    def spy(*args, **kwargs):
        seen.append((torch.backends.cudnn.benchmark, torch.backends.cudnn.benchmark_limit))
        return decoder_forward(*args, **kwargs)

    monkeypatch.setattr(vae.autoencoder.decoder, "forward", spy)
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.benchmark_limit
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=True, cudnn_benchmark_all=True)
    vae.decode(torch.randn(1, 2, 4, 4, 4))
    assert seen and set(seen) == {(True, 0)}
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.benchmark_limit) == before
    seen.clear()
    vae.set_decode_speed(channels_last_3d=False, cudnn_benchmark=True)
    vae.decode(torch.randn(1, 2, 4, 4, 4))
    assert set(seen) == {(True, before[1])}  # torch's own limit


def test_subpixel_upsample_refuses_a_stack_it_cannot_rewrite():
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanUpsample

    from tokentrim.models.vae_decode_fusion import subpixel_upsampling

    decoder = torch.nn.Module()
    decoder.up = torch.nn.Sequential(WanUpsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                     torch.nn.Conv2d(4, 4, 5, padding=2))
    with pytest.raises(ValueError, match="subpixel upsampling needs nearest x2 \\+ a 3x3 convolution"):
        subpixel_upsampling(decoder, True)


def test_backbone_vae_speed_auto_is_on_for_cuda_only_and_bad_values_are_rejected():
    from tokentrim.backbones import check_backbone_config, resolve_vae_speed

    off = {"channels_last_3d": False, "cudnn_benchmark": False, "fused_norm": False, "implicit_padding": False,
           "native_upsample": False, "subpixel_upsample": False, "cudnn_benchmark_all": False}
    assert resolve_vae_speed({}, "cpu") == off
    on = {k: k != "cudnn_benchmark_all" for k in off}  # timing every algorithm: auto = off (first-decode cost)
    assert resolve_vae_speed({"vae_cudnn_benchmark": "auto"}, "cuda:1") == on
    assert resolve_vae_speed({"vae_channels_last": False}, "cuda") == on | {"channels_last_3d": False}
    assert resolve_vae_speed({"vae_cudnn_benchmark_all": True}, "cuda")["cudnn_benchmark_all"]
    assert resolve_vae_speed({"vae_fused_norm": True}, "cpu") == off | {"fused_norm": True}
    base = {"kind": "wan", "pipeline": "self_forcing", "model": {}, "video": {}}
    with pytest.raises(ValueError, match=r"^backbone.speed.vae_channels_last must be auto, true or false, got 'on'$"):
        check_backbone_config(base | {"speed": {"vae_channels_last": "on"}})
    with pytest.raises(ValueError, match=r"^backbone.speed.vae_fused_norm must be auto, true or false, got 2$"):
        check_backbone_config(base | {"speed": {"vae_fused_norm": 2}})


def test_attention_layout_bench_times_both_layouts_of_the_same_values(tmp_path):
    bench = _load_bench("attention_layout")
    record = bench.main(["--device", "cpu", "--out", str(tmp_path), "--tokens-per-frame", "4", "--cache-frames", "3,6",
                         "--repeats", "2", "--inner", "1", "--backend", "auto"])
    assert [r["k_len"] for r in record["rows"]] == [12, 24]
    assert all(r["bhsd_ms"] > 0 and r["bshd_ms"] > 0 and r["max_abs_diff"] < 1e-5 for r in record["rows"])
    assert "| 6 | 12 | 24 |" in next(tmp_path.glob("attention_layout_*.md")).read_text()
    with pytest.raises(ValueError, match="--repeats and --inner must be >= 1"):
        bench.main(["--device", "cpu", "--out", str(tmp_path), "--repeats", "0"])


def test_attention_kv_split_bench_times_the_model_split_path_against_one_call(tmp_path):
    bench = _load_bench("attention_kv_split")
    record = bench.main(["--device", "cpu", "--out", str(tmp_path), "--tokens-per-frame", "4", "--repeats", "1",
                         "--inner", "1", "--splits", "2,5", "--wave-query-lengths", "8,12"])
    assert [w["q_len"] for w in record["waves"]] == [8, 12] and all(w["ms"] > 0 for w in record["waves"])
    rows = record["rows"]
    assert [r["k_len"] for r in rows if r["variant"] == "one call"] == [12, 24, 36, 48, 60, 72, 84]
    assert {r["variant"] for r in rows} == {"one call", "2 chunks", "5 chunks"}  # 5 chunks only where 5 divides
    assert [r["k_len"] for r in rows if r["variant"] == "5 chunks"] == [60]
    assert all(r["max_abs_diff"] < 1e-5 for r in rows)
    assert set(record["per_video_s"]) == {"one call", "2 chunks"}  # 5 chunks miss lengths: no per-video sum
    text = next(tmp_path.glob("attention_kv_split_*.md")).read_text()
    assert "| 21 | 84 | 2 chunks |" in text and "7 blocks x 149 calls" in text
    with pytest.raises(ValueError, match="--splits must be integers >= 2"):
        bench.main(["--device", "cpu", "--out", str(tmp_path), "--splits", "1"])


def test_throughput_bench_times_the_levers_each_pipeline_config_gives():
    bench = _load_bench("throughput")
    self_forcing = bench.dit_speed(None, "self_forcing", "cuda")
    assert self_forcing.compile_blocks and self_forcing.token_major and self_forcing.attention_kv_splits == 2
    assert self_forcing.attention_backends == ("cudnn", "flash") and not self_forcing.cuda_graphs
    rolling = bench.dit_speed(None, "rolling_forcing", "cuda")  # its yaml: every lever auto, as Self Forcing's
    assert rolling == self_forcing
    assert bench.dit_speed("compile+cudnn", "self_forcing", "cuda") == bench.parse_variant("compile+cudnn")
    assert bench.build_parser().parse_args([]).speed is None


BENCH_SCRIPTS = ("official_side_by_side", "overhead", "throughput", "attention_layout", "attention_kv_split",
                 "vae_norm_kernel", "main_job", "scoring_throughput")


@pytest.mark.parametrize("script", BENCH_SCRIPTS)
def test_every_bench_flag_defaults_to_its_conf_bench_yaml(script):
    """conf/bench/<script>.yaml is the single source of a bench script's defaults: parsing no flags gives the yaml's
    values (through the flags' types), and a flag overrides its key."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        module = importlib.import_module(script)
        from bench_config import bench_config
    finally:
        sys.path.remove(str(ROOT / "bench"))
    parser = module.build_parser()
    defaults = vars(parser.parse_args([]))
    expected = bench_config(script)
    assert {k: (str(v) if isinstance(v, Path) else v) for k, v in defaults.items() if k in expected} == expected
    flag = next(a for a in parser._actions if a.dest == "repeats" or a.dest == "num_videos")
    assert vars(parser.parse_args([flag.option_strings[0], "7"]))[flag.dest] == 7


def test_a_bench_yaml_that_disagrees_with_the_flags_is_one_error(monkeypatch):
    import argparse

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_config
    finally:
        sys.path.remove(str(ROOT / "bench"))
    monkeypatch.setattr(bench_config, "bench_config", lambda name: {"repeats": 3, "typo": 1})
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--out")
    with pytest.raises(ValueError, match=r"conf/bench/x.yaml and the script's flags disagree: yaml keys without a flag "
                                         r"\['typo'\], flags without a yaml key \['out'\]"):
        bench_config.with_config_defaults(parser, "x")
