"""video_io: atomic H.264 writing, exact frame counts, and the VBench-Long clip cut."""

import numpy as np
import pytest

from tokentrim import video_io


def _frames(num_frames: int, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(num_frames, size, size, 3), dtype=np.uint8)  # [T, H, W, 3]


def test_write_then_read_keeps_frame_count_size_and_fps(tmp_path):
    path = tmp_path / "a cat-0.mp4"
    video_io.write_video(path, _frames(17), fps=8)
    frames, fps = video_io.read_video(path)
    assert frames.shape == (17, 32, 32, 3) and frames.dtype == np.uint8
    assert fps == 8.0
    info = video_io.probe(path)
    assert (info.num_frames, info.fps, info.height, info.width) == (17, 8.0, 32, 32)


def test_lossless_write_reproduces_flat_frames(tmp_path):
    flat = np.full((4, 16, 16, 3), 128, dtype=np.uint8)  # grey survives RGB->YUV->RGB exactly
    video_io.write_video(tmp_path / "g.mp4", flat, fps=4, crf=0)
    frames, _ = video_io.read_video(tmp_path / "g.mp4")
    assert np.array_equal(frames, flat)


def _moving_pattern(num_frames: int = 240, size: int = 64) -> np.ndarray:
    """A textured gradient panning under a moving disc: what made x264's mb-tree path vary between calls."""
    t = np.arange(num_frames)[:, None, None]
    y, x = np.mgrid[0:size, 0:size]
    frames = np.zeros((num_frames, size, size, 3), dtype=np.int64)  # [T, H, W, 3]
    frames[..., 0] = (x[None] + 2 * t) % 64 * 4
    frames[..., 1] = (y[None] + t) % 64 * 4
    disc = (x[None] - (size / 2 + size / 3 * np.sin(t / 10.0))) ** 2 + (y[None] - size / 2) ** 2 < (size / 8) ** 2
    frames[..., 2] = np.where(disc, 255, 30)
    noise = np.random.default_rng(0).integers(0, 8, size=frames.shape)
    return (frames + noise).clip(0, 255).astype(np.uint8)


def test_same_frames_give_the_same_bytes(tmp_path):
    """With libx264's mb-tree on, three writes of these frames gave three different files (pixels up to 50 apart)."""
    frames = _moving_pattern()
    blobs = []
    for i in range(3):
        video_io.write_video(tmp_path / f"v{i}.mp4", frames, fps=8)
        blobs.append((tmp_path / f"v{i}.mp4").read_bytes())
    assert blobs[0] == blobs[1] == blobs[2]


def test_odd_size_is_a_clear_error_and_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="even height and width"):
        video_io.write_video(tmp_path / "odd.mp4", _frames(3, size=31), fps=8)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "v.mp4"
    video_io.write_video(path, _frames(5), fps=8)
    before = path.read_bytes()
    import av

    def broken(*args, **kwargs):
        raise RuntimeError("encoder died")

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", broken)
    with pytest.raises(RuntimeError):
        video_io.write_video(path, _frames(9), fps=8)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_read_missing_or_corrupt_file_raises_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        video_io.read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 20)
    with pytest.raises(ValueError, match="bad.mp4"):
        video_io.probe(bad)


def test_clip_length_truncates_fps_like_vbench_long():
    assert video_io.clip_num_frames(16.0, 2.0) == 32
    assert video_io.clip_num_frames(23.976, 2.0) == 46  # int(23.976) * 2, as get_video_properties does
    assert video_io.clip_num_frames(16.0, 10.0) == 160


def test_clip_spans_pad_the_last_short_piece_with_earlier_frames():
    # 80 frames at 16 fps, 2 s clips (32 frames): two full clips, then the tail 64..79 padded back to 48..79.
    assert video_io.clip_spans(80, 16.0, 2.0) == [(0, 32), (32, 64), (48, 80)]
    assert video_io.clip_spans(64, 16.0, 2.0) == [(0, 32), (32, 64)]  # exact multiple: no extra clip
    assert video_io.clip_spans(33, 16.0, 2.0) == [(0, 32), (1, 33)]


def test_video_shorter_than_one_clip_is_one_whole_clip():
    assert video_io.clip_spans(20, 16.0, 2.0) == [(0, 20)]


def test_cut_clips_returns_exact_frames():
    frames = _frames(80, size=8)
    clips = video_io.cut_clips(frames, 16.0, 2.0)
    assert [clip.shape[0] for clip in clips] == [32, 32, 32]
    assert np.array_equal(clips[1], frames[32:64])
    assert np.array_equal(clips[2], frames[48:80])
