"""Video files in and out, and the VBench-Long clip cut.

Letters: T frames, H height, W width; pixel videos are uint8 RGB arrays `[T, H, W, 3]`.

Files are H.264 / yuv420p mp4 written with PyAV (its wheels carry their own ffmpeg), atomically: the encoder writes a
temporary file in the target directory and `os.replace` moves it into place, so a reader never sees half a video.

`cut_clips` reproduces the fixed-length clip split of VBench-Long (`vbench2_beta_long/utils.py::split_video_into_clips`,
vbench 0.1.5), which cannot be imported with torchvision >= 0.29 (`write_video` is gone), so it is re-done here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from tokentrim.report.atomic_io import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["VideoInfo", "write_video", "read_video", "probe", "clip_num_frames", "cut_clips", "clip_spans"]


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a file without keeping its frames."""

    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3], got {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got dtype {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("frames must hold at least one frame, got T=0")
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, *, crf: int = 18, preset: str = "medium") -> None:
    """Write `frames` `[T, H, W, 3]` uint8 RGB as an H.264 yuv420p mp4 at `fps`, atomically and reproducibly (the
    same frames give the same bytes).

    Args:
        path: target `.mp4` path; its directory is created if missing.
        frames: uint8 `[T, H, W, 3]` numpy array (a torch tensor is converted). H and W must be even, because
            yuv420p subsamples chroma 2x2; odd sizes raise ValueError instead of being silently cropped.
        fps: frames per second (> 0). Non-integer rates are stored as an exact fraction (limit 1/1001 steps).
        crf: libx264 constant rate factor (0 = lossless luma, 18 = visually lossless, 23 = ffmpeg default).
        preset: libx264 speed preset.
    """
    import av  # local import: PyAV loads ffmpeg libraries

    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = _check_frames(frames)
    num_frames, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"write_video: H.264 yuv420p needs even height and width, got {height}x{width} for {path}")
    if not fps > 0:
        raise ValueError(f"write_video: fps must be > 0, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            # mbtree off: with x264's macroblock-tree rate control on, the libx264 of PyAV 18.1 encoded the same
            # frames to different pixels from call to call (up to +-50 levels), and the scores moved in the 5th
            # decimal. The output is stable with mb-tree off or with x264's assembly off (so its SIMD mb-tree path is
            # the likely source); with mb-tree off the bytes are identical across calls and processes.
            stream.options = {"crf": str(crf), "preset": preset, "x264-params": "mbtree=0"}
            for frame in frames:  # [H, W, 3]
                packet_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                container.mux(stream.encode(packet_frame))
            container.mux(stream.encode())  # flush the encoder
    logger.debug("wrote %s (%d frames, %dx%d, %.3f fps)", path, num_frames, width, height, fps)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame of `path` to uint8 RGB `[T, H, W, 3]`; return `(frames, fps)`.

    Raises FileNotFoundError for a missing file and ValueError for a file with no decodable video frame.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_video: no such file {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"read_video: {path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]  # T x [H, W, 3]
    except av.error.FFmpegError as err:
        raise ValueError(f"read_video: cannot decode {path}: {err}") from err
    if not frames:
        raise ValueError(f"read_video: {path} has no decodable frame")
    return np.stack(frames), fps  # T x [H, W, 3] -> [T, H, W, 3]


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and size of `path`, counted by demuxing packets (exact, no pixel decode).

    The container's `frames` field is not trusted (it is 0 or approximate for some muxers); counting video packets is
    exact for H.264 mp4 without B-frame reordering issues, since each coded frame is one packet.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"probe: no such file {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"probe: {path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            height, width = stream.codec_context.height, stream.codec_context.width
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
    except av.error.FFmpegError as err:
        raise ValueError(f"probe: cannot read {path}: {err}") from err
    if num_frames == 0:
        raise ValueError(f"probe: {path} has no video frame")
    return VideoInfo(num_frames=num_frames, fps=fps, height=height, width=width)


def clip_num_frames(fps: float, clip_seconds: float) -> int:
    """Frames per VBench-Long clip: `int(fps) * clip_seconds`, rounded to an integer.

    Upstream truncates the rate with `int(vr.get_avg_fps())` (`vbench2_beta_long/utils.py::get_video_properties`) before
    multiplying by the clip duration, so a 23.976 fps video gets 23 * 2 = 46-frame clips; we keep that.
    """
    if not clip_seconds > 0:
        raise ValueError(f"clip_seconds must be > 0, got {clip_seconds}")
    frames = int(round(int(fps) * clip_seconds))
    if frames < 1:
        raise ValueError(f"clip of {clip_seconds} s at {fps} fps has no frame")
    return frames


def clip_spans(num_frames: int, fps: float, clip_seconds: float) -> list[tuple[int, int]]:
    """`[start, end)` frame spans of the VBench-Long clips of a video with `num_frames` frames.

    - A video shorter than one clip is one span covering the whole video (upstream saves it as `<name>_full.mp4`).
    - Otherwise `num_frames // L` back-to-back clips of `L = clip_num_frames(fps, clip_seconds)` frames; if frames
      remain, one more clip made of the LAST `L` frames, i.e. the short tail is padded with frames borrowed from the
      clip before it (upstream: `extended_start_frame = total_segments * L - (L - remaining)` = `num_frames - L`).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    length = clip_num_frames(fps, clip_seconds)
    if num_frames < length:
        return [(0, num_frames)]
    spans = [(i * length, (i + 1) * length) for i in range(num_frames // length)]
    if num_frames % length:
        spans.append((num_frames - length, num_frames))
    return spans


def cut_clips(frames: np.ndarray, fps: float, clip_seconds: float) -> list[np.ndarray]:
    """Cut `frames` `[T, H, W, 3]` into VBench-Long clips (see `clip_spans`); each clip is `[L, H, W, 3]`."""
    frames = _check_frames(frames)
    return [frames[start:end] for start, end in clip_spans(frames.shape[0], fps, clip_seconds)]  # [T,...] -> [L,...]
