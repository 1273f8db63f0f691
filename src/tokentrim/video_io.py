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

__all__ = ["VideoInfo", "ENCODINGS", "Encoding", "encoding", "write_video", "read_video", "probe", "clip_num_frames", "cut_clips", "clip_spans"]


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


# `video.encoding` (conf/config.yaml): how generated videos are encoded
ENCODINGS = ("official", "near_lossless")

# x264's SIMD sets up to AVX2 (its `asm` CPU-flag names). The official settings (mb-tree on) were NOT deterministic
# with the libx264 of PyAV 18.1 on an AVX-512 CPU: two encodes of the same frames differed by up to 21 levels. With
# AVX-512 left out (this list) or with no assembly at all (`asm=0`) every encode gave the same bytes; the capped list
# keeps the encode speed of the official writer (asm=0 was 5-7x slower) and its size within 1 % (measured on a smooth
# 49-frame 240x416 clip and 81 frames at 480x832; README "Video encoding"). x264 flag name -> /proc/cpuinfo flag.
X264_PORTABLE_ASM = {"MMX2": "sse", "SSE": "sse", "SSE2": "sse2", "SSE2Fast": "sse2", "SSSE3": "ssse3",
                     "SSE4": "sse4_1", "SSE4.2": "sse4_2", "LZCNT": "abm", "AVX": "avx", "FMA3": "fma",
                     "BMI2": "bmi2", "AVX2": "avx2"}


@dataclass(frozen=True)
class Encoding:
    """What `write_video` gives the encoder: the libx264 options and the frame rate it stores."""

    name: str
    options: dict
    integer_fps: bool  # torchvision's write_video rounds a float fps to an integer
    note: str  # the determinism fix in force (or the fallback taken), for env.json

    def record(self) -> dict:
        return {"encoding": self.name, "encoder": "libx264", "pix_fmt": "yuv420p", "options": dict(self.options),
                "note": self.note}


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux x86), None where they cannot be read."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    return set(line.split(":", 1)[1].split()) if line else None


def encoding(name: str, *, crf: int = 18, preset: str = "medium") -> Encoding:
    """The encoder settings of `video.encoding=name` (`crf`/`preset` are the near_lossless knobs).

    official: what the official Self-Forcing inference writes with (`torchvision.io.write_video(path, video, fps=16)`,
        torchvision <= 0.21): libx264, yuv420p, NO encoder options (libx264 defaults: crf 23, preset medium, mb-tree
        on), rgb24 frames with pict_type NONE, fps rounded to an integer; plus the determinism fix: x264's assembly
        capped at AVX2 (`X264_PORTABLE_ASM`), or `asm=0` where the CPU lacks one of those sets (slower; recorded).
    near_lossless: CRF `crf` (18), preset `preset`, mb-tree off (deterministic: the same frames give the same bytes).
    """
    if name == "near_lossless":
        return Encoding(name, {"crf": str(crf), "preset": preset, "x264-params": "mbtree=0"}, integer_fps=False,
                        note="mb-tree off (deterministic)")
    if name != "official":
        raise ValueError(f"video.encoding must be one of {list(ENCODINGS)}, got {name!r}")
    flags = _cpu_flags()
    if flags is not None and all(flag in flags for flag in X264_PORTABLE_ASM.values()):
        asm, note = ",".join(X264_PORTABLE_ASM), "x264 assembly capped at AVX2 (AVX-512 paths were not deterministic)"
    else:
        asm, note = "0", "x264 assembly off (asm=0): this CPU lacks one of the SIMD sets up to AVX2; slower encode"
    return Encoding(name, {"x264-params": f"asm={asm}"}, integer_fps=True, note=note)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, *, crf: int = 18, preset: str = "medium",
                encoding_name: str = "near_lossless") -> None:
    """Write `frames` `[T, H, W, 3]` uint8 RGB as an H.264 yuv420p mp4 at `fps`, atomically and reproducibly (the
    same frames give the same bytes).

    Args:
        path: target `.mp4` path; its directory is created if missing.
        frames: uint8 `[T, H, W, 3]` numpy array (a torch tensor is converted). H and W must be even, because
            yuv420p subsamples chroma 2x2; odd sizes raise ValueError instead of being silently cropped.
        fps: frames per second (> 0). Non-integer rates are stored as an exact fraction (limit 1/1001 steps), or
            rounded to an integer with the official encoding (as torchvision's write_video does).
        crf: near_lossless: libx264 constant rate factor (0 = lossless luma, 18 = visually lossless).
        preset: near_lossless: libx264 speed preset.
        encoding_name: `official` (torchvision's write_video settings, made deterministic) or `near_lossless`; see
            `encoding`.
    """
    import av  # local import: PyAV loads ffmpeg libraries

    settings = encoding(encoding_name, crf=crf, preset=preset)
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
    rate = Fraction(round(fps)) if settings.integer_fps else Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            # near_lossless keeps mbtree off: with x264's macroblock-tree rate control on, the libx264 of PyAV 18.1
            # encoded the same frames to different pixels from call to call (its AVX-512 paths; see X264_PORTABLE_ASM)
            stream.options = dict(settings.options)
            for frame in frames:  # [H, W, 3]
                packet_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                packet_frame.pict_type = av.video.frame.PictureType.NONE  # as torchvision's write_video
                container.mux(stream.encode(packet_frame))
            container.mux(stream.encode())  # flush the encoder
    logger.debug("wrote %s (%d frames, %dx%d, %.3f fps, %s)", path, num_frames, width, height, fps, settings.name)


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
