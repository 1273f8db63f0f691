"""VBench-Long options: PySceneDetect scene splitting into the clip protocol, and slow-fast fusion (subject).

The DINOv2 weights here are RANDOM (no weights can be downloaded): those tests check plumbing and the similarity formula,
the fast-branch numbers themselves mean nothing. The mapping/fusion math is checked exactly against hand computations.
"""

import math

import numpy as np
import pytest
import torch

from tokentrim import video_io
from tokentrim.scoring import check_dimensions, long_video, vbench_adapter
from tokentrim.scoring.vbench_adapter import aggregate_scores, read_scores, score_videos

_COLORS = [(0, 0, 0), (0, 0, 255), (255, 255, 255)]  # black, blue, white: HSV deltas far above 35


def _three_scene_frames(frames_per_scene=24, size=32):
    scenes = [np.broadcast_to(np.array(color, np.uint8), (frames_per_scene, size, size, 3)) for color in _COLORS]
    return np.concatenate(scenes)  # 3 x [S, H, W, 3] -> [3S, H, W, 3]


def _one_scene_frames(num_frames=48, size=32):
    rng = np.random.default_rng(0)
    return np.repeat(rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8), num_frames, axis=0)  # [T, H, W, 3]


# ---------------------------------------------------------------------------------------------------- scene splitting
def test_three_static_scenes_split_into_exactly_three_with_their_frame_ranges(tmp_path):
    video_io.write_video(tmp_path / "v.mp4", _three_scene_frames(), fps=8)
    assert long_video.detect_scenes(tmp_path / "v.mp4") == [(0, 24), (24, 48), (48, 72)]


def test_a_single_scene_does_not_split(tmp_path):
    video_io.write_video(tmp_path / "v.mp4", _one_scene_frames(), fps=8)
    assert long_video.detect_scenes(tmp_path / "v.mp4") == []
    targets = long_video.scene_clip_targets(48, 8.0, 2.0, [])
    assert [(t.clip, t.scene, t.start, t.end, t.stem_suffix) for t in targets] == [
        (0, 0, 0, 16, "_000"), (1, 0, 16, 32, "_001"), (2, 0, 32, 48, "_002")]


def test_each_scene_is_clipped_on_its_own_with_upstream_names():
    targets = long_video.scene_clip_targets(72, 8.0, 2.0, [(0, 24), (24, 30), (30, 72)])
    assert [(t.clip, t.scene, t.start, t.end, t.stem_suffix) for t in targets] == [
        (0, 0, 0, 16, "-Scene-0_000"), (1, 0, 8, 24, "-Scene-0_001"),  # 24 frames: tail padded back to 8..24
        (2, 1, 24, 30, "-Scene-1_full"),  # shorter than one clip: the whole scene
        (3, 2, 30, 46, "-Scene-2_000"), (4, 2, 46, 62, "-Scene-2_001"), (5, 2, 56, 72, "-Scene-2_002"),
    ]


def test_scene_clips_go_through_the_clip_protocol_and_rows_carry_the_scene(tmp_path):
    folder = tmp_path / "videos"
    video_io.write_video(folder / "three rooms-0.mp4", _three_scene_frames(), fps=8)
    video_io.write_video(folder / "one room-0.mp4", _one_scene_frames(), fps=8)
    summary = score_videos(folder, scores_csv=tmp_path / "scores.csv", dimensions=["temporal_flickering"],
                           cache_dir=tmp_path / "weights", clip_dir=tmp_path / "clips", scene_split=True)
    assert not summary.errors
    rows = read_scores(tmp_path / "scores.csv")
    three = [(r["clip"], r["scene"], int(r["frame_start"]), int(r["frame_end"])) for r in rows if r["video"] == "three rooms-0"]
    assert three == [(0, "0", 0, 16), (1, "0", 8, 24), (2, "1", 24, 40), (3, "1", 32, 48), (4, "2", 48, 64), (5, "2", 56, 72)]
    one = [(r["clip"], r["scene"]) for r in rows if r["video"] == "one room-0"]
    assert one == [(0, "0"), (1, "0"), (2, "0")]
    assert all(r["protocol"] == "clip:16f+scene35-15" and r["error"] == "" for r in rows)
    names = sorted(p.name for p in (tmp_path / "clips").rglob("*.mp4"))
    assert "three rooms-0-Scene-2_001.mp4" in names and "one room-0_002.mp4" in names
    for column in ("video", "clip", "dimension", "score", "error", "scorer", "content_hash"):
        assert column in vbench_adapter.SCORES_COLUMNS
    # static scenes do not flicker: every clip scores (near) 1 and the video mean pools all scenes' clips
    assert aggregate_scores(rows)["temporal_flickering"] > 0.99


# --------------------------------------------------------------------------------------------- slow-fast: the math
def _write_table(path, table):
    path.write_text("".join(f"{key}: {value}\n" for key, value in table.items()))


def test_mapping_table_lookup_and_fusion_match_a_hand_computation(tmp_path):
    _write_table(tmp_path / "t.yaml", {0.0: 0.0, 0.5: 0.8, 0.6: 0.9, 0.99: 0.98})
    table = long_video.load_mapping_table(tmp_path / "t.yaml")
    # between keys 0.5 and 0.6: 0.8 + (0.9 - 0.8) * (0.55 - 0.5) / 0.1 = 0.85
    assert long_video.map_clip2clip(0.55, table) == pytest.approx(0.85, abs=1e-12)
    assert long_video.map_clip2clip(0.6, table) == pytest.approx(0.9, abs=1e-12)  # exactly on a key: its value
    assert long_video.map_clip2clip(0.995, table) == 0.98  # above the last key: clamped
    assert long_video.map_clip2clip(-0.1, table) == 0.0  # below the first key: the first value
    # 0.5 * 0.9 + 0.5 * 0.85 = 0.875; with 0.7 / 0.3: 0.63 + 0.255 = 0.885
    assert long_video.fuse_slow_fast(0.9, 0.85) == pytest.approx(0.875, abs=1e-12)
    assert long_video.fuse_slow_fast(0.9, 0.85, w_inclip=0.7, w_clip2clip=0.3) == pytest.approx(0.885, abs=1e-12)
    assert long_video.fuse_slow_fast(0.9, 0.0) == 0.9  # upstream guard: mapped 0.0 -> in-clip score alone
    assert long_video.fuse_slow_fast(0.9, math.nan) == 0.9  # no fast branch (one clip)


# ------------------------------------------------------------------------------ slow-fast: plumbing (random DINOv2)
def _random_dinov2_checkpoint(path):
    """An official-format dinov2_vitb14 state dict (pos_embed [1, 1370, 768], mask_token) with RANDOM weights."""
    import timm

    generator = torch.Generator().manual_seed(0)
    model = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, img_size=518)
    state = {}
    for name, value in model.state_dict().items():  # timm's init (LayerScale 1e-5) maps every image to ~one feature
        if name.endswith(("ls1.gamma", "ls2.gamma")) or (name.startswith(("norm", "blocks")) and "norm" in name
                                                         and name.endswith("weight")):
            state[name] = torch.ones_like(value)
        elif "norm" in name:
            state[name] = torch.zeros_like(value)
        else:
            state[name] = 0.05 * torch.randn(value.shape, generator=generator)
    state["mask_token"] = torch.zeros(1, 768)
    torch.save(state, path)
    return state


def _fake_subject_weights(cache_dir, torch_home):
    """Empty stand-ins for vbench's DINO v1 files so the readiness check passes (vbench is monkeypatched away)."""
    for path in (cache_dir / "dino_model" / "facebookresearch_dino_main" / "hubconf.py",
                 cache_dir / "dino_model" / "dino_vitbase16_pretrain.pth",
                 torch_home / "hub" / "checkpoints" / "dino_vitbase16_pretrain.pth"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def _upstream_style_clip2clip(model, frames):
    """The fast-branch loop written out frame by frame, one image per forward (as `subject_consistency_dinov2`)."""
    images = long_video._dinov2_preprocess(frames)  # [K, 3, 224, 224]
    total, previous, first = 0.0, None, None
    with torch.no_grad():
        for i in range(len(images)):
            feature = torch.nn.functional.normalize(model(images[i:i + 1]), dim=-1, p=2)  # [1, D]
            if i == 0:
                first = feature
            else:
                sim_pre = max(0.0, torch.nn.functional.cosine_similarity(previous, feature).item())
                sim_fir = max(0.0, torch.nn.functional.cosine_similarity(first, feature).item())
                total += (sim_pre + sim_fir) / 2
            previous = feature
    return total / (len(images) - 1)


def test_slow_fast_fuses_subject_rows_with_the_mapped_first_frame_score(tmp_path, monkeypatch):
    cache_dir, torch_home = tmp_path / "weights", tmp_path / "torch"
    _fake_subject_weights(cache_dir, torch_home)
    checkpoint = tmp_path / "dinov2_vitb14_pretrain.pth"
    _random_dinov2_checkpoint(checkpoint)
    mapping_dir = tmp_path / "configs"
    mapping_dir.mkdir()
    table = {round(0.01 * k, 2): round(0.5 + 0.005 * k, 4) for k in range(100)}  # synthetic, strictly increasing
    table[0.0] = 0.0
    _write_table(mapping_dir / "subject_mapping_table.yaml", table)
    folder = tmp_path / "videos"
    rng = np.random.default_rng(3)
    video_io.write_video(folder / "a dog-0.mp4", rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), fps=8)

    inclip = {0: 0.91, 1: 0.93, 2: 0.95}
    calls = []

    def fake_vbench(dimension, units, **kwargs):  # the in-clip (slow) branch: vbench's own code needs DINO v1 weights
        calls.append(dimension)
        return {unit.path: inclip[unit.clip] for unit in units}

    monkeypatch.setattr(vbench_adapter, "_run_vbench_dimension", fake_vbench)
    fast_calls = []
    real_fast = long_video.dinov2_clip2clip_score
    monkeypatch.setattr(long_video, "dinov2_clip2clip_score",
                        lambda *a, **k: fast_calls.append(1) or real_fast(*a, **k))
    kwargs = dict(dimensions=["subject_consistency"], cache_dir=cache_dir, torch_home=torch_home,
                  clip_dir=tmp_path / "clips", score_cache_dir=tmp_path / "cache", slow_fast=True,
                  slow_fast_mapping_dir=mapping_dir, dinov2_path=checkpoint,
                  prompt_protocol="all")  # "a dog" is a VBench object_class prompt
    summary = score_videos(folder, scores_csv=tmp_path / "scores.csv", **kwargs)
    assert not summary.errors and fast_calls == [1]
    rows = read_scores(tmp_path / "scores.csv")
    assert [r["clip"] for r in rows] == [0, 1, 2]

    # the fast branch: first frame of each clip (0, 16, 32) joined into a 3-frame mp4 and scored with DINOv2
    fast_files = list((tmp_path / "clips").rglob("*_firstframes.mp4"))
    assert len(fast_files) == 1 and video_io.probe(fast_files[0]).num_frames == 3
    first_frames, _ = video_io.read_video(fast_files[0])
    model = long_video.load_dinov2_vitb14(checkpoint)
    clip2clip = _upstream_style_clip2clip(model, first_frames)
    assert 0.05 < clip2clip < 0.99  # random weights: the value itself is meaningless, only its path is checked
    mapped = long_video.map_clip2clip(clip2clip, table)
    for row in rows:
        assert float(row["clip2clip_score"]) == pytest.approx(clip2clip, abs=1e-5)
        assert float(row["mapped_clip2clip_score"]) == pytest.approx(mapped, abs=1e-5)
        assert row["raw_score"] == float(row["inclip_score"]) == inclip[row["clip"]]
        assert row["score"] == pytest.approx(0.5 * inclip[row["clip"]] + 0.5 * mapped, abs=1e-5)
        assert row["protocol"] == "clip:16f+slowfast"
    # mean over the video's clip rows = upstream's fused score 0.5 * mean(in-clip) + 0.5 * mapped
    assert aggregate_scores(rows)["subject_consistency"] == pytest.approx(0.5 * 0.93 + 0.5 * mapped, abs=1e-5)

    # a rerun takes in-clip and fast scores from the cache
    again = score_videos(folder, scores_csv=tmp_path / "scores2.csv", **kwargs)
    assert again.num_cached == 3 and calls == ["subject_consistency"] and fast_calls == [1]
    assert [r["score"] for r in read_scores(tmp_path / "scores2.csv")] == [r["score"] for r in rows]


def test_dinov2_loader_accepts_the_official_layout_and_resizes_pos_embed_like_dinov2(tmp_path):
    state = _random_dinov2_checkpoint(tmp_path / "ckpt.pth")
    model = long_video.load_dinov2_vitb14(tmp_path / "ckpt.pth")
    assert model.pos_embed.shape == (1, 1 + 16 * 16, 768)
    assert torch.equal(model.pos_embed[:, 0], state["pos_embed"][:, 0])  # class position kept
    grid = state["pos_embed"][:, 1:].reshape(1, 37, 37, 768).permute(0, 3, 1, 2)  # [1, 1369, D] -> [1, D, 37, 37]
    expected = torch.nn.functional.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic")
    assert torch.allclose(model.pos_embed[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 256, 768))
    features = model(torch.zeros(2, 3, 224, 224))
    assert features.shape == (2, 768)


# ------------------------------------------------------------------------------------------ checks and validation
def test_check_names_the_slow_fast_files_with_exact_paths(tmp_path):
    status = check_dimensions(["subject_consistency", "temporal_flickering"], cache_dir=tmp_path / "c",
                              slow_fast=True, slow_fast_mapping_dir=tmp_path / "cfg", dinov2_path=tmp_path / "d.pth")
    line = status["subject_consistency"].one_line()
    assert f"{tmp_path / 'cfg' / 'subject_mapping_table.yaml'} (set scorer.slow_fast_mapping_dir)" in line
    assert f"{tmp_path / 'd.pth'} (set scorer.dinov2_path)" in line
    assert status["temporal_flickering"].is_ready  # slow-fast touches subject_consistency only
    default = check_dimensions(["subject_consistency"], cache_dir=tmp_path / "c", slow_fast=True)
    assert str(tmp_path / "c/dinov2_model/dinov2_vitb14_pretrain.pth") in default["subject_consistency"].one_line()
    off = check_dimensions(["subject_consistency"], cache_dir=tmp_path / "c")
    assert "mapping_table" not in off["subject_consistency"].one_line()


def test_unsupported_or_meaningless_long_options_are_refused_before_any_work(tmp_path):
    video_io.write_video(tmp_path / "a cat-0.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=8)
    common = dict(scores_csv=tmp_path / "scores.csv", dimensions=["temporal_flickering"], cache_dir=tmp_path / "w")
    with pytest.raises(ValueError, match="DreamSim"):
        score_videos([tmp_path / "a cat-0.mp4"], slow_fast=True, slow_fast_dimensions=["background_consistency"], **common)
    with pytest.raises(ValueError, match="long_protocol='never'"):
        score_videos([tmp_path / "a cat-0.mp4"], scene_split=True, long_protocol="never", **common)
    assert not (tmp_path / "scores.csv").exists()
