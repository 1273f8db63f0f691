"""video.encoding: `official` reproduces the settings of torchvision 0.21's `write_video` as the official Self-Forcing
inference calls it (`write_video(path, video, fps=16)`: libx264 with no options, yuv420p, rgb24 frames, pict_type
NONE), plus the determinism fix (x264 assembly capped at AVX2); `near_lossless` is CRF 18 with mb-tree off."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tokentrim import video_io


def _smooth_clip(num_frames: int = 33, height: int = 96, width: int = 160) -> np.ndarray:
    """Slowly moving smooth colour waves, like a generated video (not noise): [T, H, W, 3] uint8."""
    t = np.arange(num_frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    red = 128 + 100 * np.sin(x / 17 + t / 9) * np.cos(y / 13 - t / 11)
    green = 128 + 90 * np.sin((x + y) / 23 + t / 7)
    blue = 128 + 80 * np.cos(x / 11 - y / 19 + t / 5)
    return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


def _torchvision_021_write(path, frames: np.ndarray, fps: float) -> None:
    """What torchvision 0.21's `write_video(path, frames, fps)` does with PyAV (its source, restated): the container
    format from the file name, `rate=round(fps)`, no encoder options, every frame rgb24 with pict_type NONE."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {}
        for img in frames:  # [H, W, 3]
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def _x264_settings(path) -> str:
    """The settings string libx264 writes into the stream (its SEI user data)."""
    match = re.search(rb"x264 - core \d+.*? - options: ([^\x00]*)", path.read_bytes())
    assert match, f"no x264 settings in {path}"
    return match.group(1).decode(errors="replace")


def test_official_encoding_matches_torchvision_write_video_and_is_deterministic(tmp_path) -> None:
    clip = _smooth_clip()
    _torchvision_021_write(tmp_path / "tv.mp4", clip, fps=16.0)
    for i in range(2):
        video_io.write_video(tmp_path / f"ours{i}.mp4", clip, 16.0, encoding_name="official")
    assert (tmp_path / "ours0.mp4").read_bytes() == (tmp_path / "ours1.mp4").read_bytes()  # same frames, same bytes

    ours_settings, tv_settings = _x264_settings(tmp_path / "ours0.mp4"), _x264_settings(tmp_path / "tv.mp4")
    for setting in ("rc=crf", "crf=23.0", "mbtree=1", "rc_lookahead=40", "bframes=3"):  # libx264's defaults
        assert setting in ours_settings.split() and setting in tv_settings.split(), setting
    ours, ours_fps = video_io.read_video(tmp_path / "ours0.mp4")
    tv, tv_fps = video_io.read_video(tmp_path / "tv.mp4")
    assert ours.shape == tv.shape == clip.shape and ours_fps == tv_fps == 16.0
    # close, not equal (the assembly cap changes x264's decisions): measured 37.08 vs 37.06 dB against the source,
    # 39.9 dB between the two, bytes -1.8 % (the torchvision-style write itself varies from call to call)
    assert abs(_psnr(ours, clip) - _psnr(tv, clip)) < 0.2
    assert _psnr(ours, tv) > 37.0
    size_ratio = (tmp_path / "ours0.mp4").stat().st_size / (tmp_path / "tv.mp4").stat().st_size
    assert 0.95 < size_ratio < 1.05, size_ratio


def test_near_lossless_is_crf_18_without_mbtree_and_bigger_than_official(tmp_path) -> None:
    clip = _smooth_clip()
    video_io.write_video(tmp_path / "nl.mp4", clip, 16.0, encoding_name="near_lossless")
    video_io.write_video(tmp_path / "off.mp4", clip, 16.0, encoding_name="official")
    settings = _x264_settings(tmp_path / "nl.mp4").split()
    assert "crf=18.0" in settings and "mbtree=0" in settings
    near, _ = video_io.read_video(tmp_path / "nl.mp4")
    official, _ = video_io.read_video(tmp_path / "off.mp4")
    assert _psnr(near, clip) > _psnr(official, clip)
    assert (tmp_path / "nl.mp4").stat().st_size > 1.2 * (tmp_path / "off.mp4").stat().st_size


def test_official_rounds_fps_like_torchvision_and_names_unknown_encodings(tmp_path) -> None:
    video_io.write_video(tmp_path / "a.mp4", _smooth_clip(5, 16, 16), 7.6, encoding_name="official")
    assert video_io.probe(tmp_path / "a.mp4").fps == 8.0
    with pytest.raises(ValueError, match=r"video.encoding must be one of \['official', 'near_lossless'\], got 'fast'"):
        video_io.encoding("fast")


def test_official_encoding_falls_back_to_no_assembly_where_the_cpu_lacks_a_set(monkeypatch) -> None:
    monkeypatch.setattr(video_io, "_cpu_flags", lambda: {"sse", "sse2"})
    fallback = video_io.encoding("official")
    assert fallback.options == {"x264-params": "asm=0"} and "asm=0" in fallback.note
    monkeypatch.setattr(video_io, "_cpu_flags", lambda: set(video_io.X264_PORTABLE_ASM.values()))
    capped = video_io.encoding("official").options["x264-params"]
    assert capped.startswith("asm=") and "AVX2" in capped and "AVX512" not in capped


def test_decoded_pixels_become_the_official_pipelines_uint8_frames():
    """The official inference.py: decode -> fp32 clamp(-1, 1) -> x*0.5+0.5 -> clamp(0, 1) -> 255.0 * video ->
    torchvision's write_video casts with torch.as_tensor(video, dtype=torch.uint8): truncation, not rounding."""
    import torch

    from tokentrim.backbones import to_uint8_frames

    levels = torch.tensor([0.0, 0.4, 0.5, 0.7, 99.5, 100.7, 254.9, 255.0])  # 255 * (x*0.5+0.5) before the cast
    x = (levels / 255 - 0.5) / 0.5
    pixels = torch.cat([x, torch.tensor([-1.5, 1.5])]).view(1, 1, 1, 1, -1).expand(1, 2, 3, 2, -1)  # [1, T, 3, H, W]
    official = torch.as_tensor(255.0 * (pixels[0].float().clamp(-1, 1) * 0.5 + 0.5).clamp(0, 1), dtype=torch.uint8)
    ours = to_uint8_frames(pixels)  # [T, H, W, 3]
    assert torch.equal(ours, official.permute(0, 2, 3, 1))
    assert ours[0, 0, :, 0].tolist() == [0, 0, 0, 0, 99, 100, 254, 255, 0, 255]
