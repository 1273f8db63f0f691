"""VBench-Long's two optional steps: scene splitting and slow-fast fusion (subject consistency).

Letters: T frames, H height, W width, C channels, D feature size, K clips of one (scene of a) video.

Upstream: `vbench2_beta_long/` of Vchitect/VBench (not in the vbench 0.1.5 wheel and not importable with torchvision
>= 0.29), re-done here from its semantics.

Scene splitting (`--use_semantic_splitting`, `VBenchLong.preprocess(threshold=35.0)` -> `utils.split_video_into_scenes`):
PySceneDetect's `ContentDetector` (HSV frame-difference score; a cut where it reaches `threshold`, at least
`min_scene_len` frames apart, PySceneDetect default 15) through a default `SceneManager` (which auto-downscales frames
as upstream does). No cut = one scene = the whole video. Each scene is then cut into fixed-length clips on its own
(`video_io.clip_spans` applied to the scene), named `<video>-Scene-<s>_<NNN>.mp4` as upstream.

Slow-fast fusion (`subject_consistency.py::compute_long_subject_consistency`, `utils.fuse_inclip_clip2clip`):
- slow branch = the in-clip score (vbench's `subject_consistency` on each clip; mean over the clips);
- fast branch = the first frame of every clip of one (scene of a) video, joined into a new video at the clip fps and
  scored with DINOv2 ViT-B/14 CLS features: for frames i >= 1, mean of `max(0, cos(f_{i-1}, f_i))` and
  `max(0, cos(f_0, f_i))`, averaged over the T-1 frames (`subject_consistency_dinov2`). Fewer than 2 clips: no fast
  branch (upstream skips such videos);
- the fast score is mapped onto the in-clip scale through `configs/subject_mapping_table.yaml` ({0.00 .. 0.99: value},
  looked up with `bisect_left` on the raw fast score and linear interpolation between neighbouring keys, clamped to the
  first / last value), then `fused = w_inclip * inclip + w_clip2clip * mapped`, except `fused = inclip` where the mapped
  value is exactly 0.0 (upstream's guard; the shipped tables map key 0.0 to 0.0, which is also what a video without a
  fast branch gets). Upstream's `--dev_flag` weights (`configs/slow_fast_params.yaml`) are 0.5 / 0.5; without
  `--dev_flag` upstream forces 1.0 / 0.0 (slow branch only).

background_consistency's fast branch needs DreamSim (`dreamsim` PyPI package); it is not supported here (installing
dreamsim 0.2.1 upgrades timm past the `timm<=1.0.12` pin vbench needs and pulls peft/accelerate), so only
subject_consistency can be fused.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokentrim import video_io

logger = logging.getLogger(__name__)

__all__ = [
    "SCENE_THRESHOLD",
    "SCENE_MIN_FRAMES",
    "SLOW_FAST_DIMENSIONS",
    "MAPPING_TABLE_FILES",
    "ClipTarget",
    "detect_scenes",
    "scene_clip_targets",
    "load_mapping_table",
    "map_clip2clip",
    "fuse_slow_fast",
    "first_frames_video",
    "load_dinov2_vitb14",
    "dinov2_clip2clip_score",
]

SCENE_THRESHOLD = 35.0  # VBenchLong.preprocess(threshold=35.0)
SCENE_MIN_FRAMES = 15  # PySceneDetect ContentDetector default min_scene_len, which upstream keeps
# Dimensions whose slow-fast fusion is supported here (background_consistency needs DreamSim, see module docstring).
SLOW_FAST_DIMENSIONS: tuple[str, ...] = ("subject_consistency",)
MAPPING_TABLE_FILES: dict[str, str] = {
    "subject_consistency": "subject_mapping_table.yaml",
    "background_consistency": "background_mapping_table.yaml",
}
_DINOV2_NATIVE_GRID = 37  # dinov2_vitb14 is trained at 518 px = 37 x 37 patches of 14 px
_DINOV2_IMAGE_PX = 224  # vbench2_beta_long.utils.dinov2_transform(224): Resize(256) + CenterCrop(224)
_DINOV2_RESIZE_PX = 256
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------------------------------
# scene splitting
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipTarget:
    """One clip of the clip protocol: global `clip` index, `scene` index (-1 = no scene split), frames `[start, end)`.

    `stem_suffix` is what follows the video stem in the clip file name (`_000`, `_full`, `-Scene-1_002`, ...).
    """

    clip: int
    scene: int
    start: int
    end: int
    stem_suffix: str


def detect_scenes(path: str | os.PathLike, *, threshold: float = SCENE_THRESHOLD,
                  min_scene_len: int = SCENE_MIN_FRAMES) -> list[tuple[int, int]]:
    """`[start, end)` frame spans of the scenes PySceneDetect's ContentDetector finds in `path`; `[]` = no cut.

    Same call as upstream `split_video_into_scenes` (default `SceneManager`, OpenCV backend, `ContentDetector`), with
    `threshold` 35.0 as `VBenchLong.preprocess` passes it.
    """
    from scenedetect import SceneManager, open_video
    from scenedetect.detectors import ContentDetector

    if not threshold > 0:
        raise ValueError(f"scene_threshold must be > 0, got {threshold}")
    if min_scene_len < 1:
        raise ValueError(f"scene_min_frames must be >= 1, got {min_scene_len}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detect_scenes: no such file {path}")
    from scenedetect.video_stream import VideoOpenFailure

    try:
        video = open_video(str(path))
    except VideoOpenFailure as err:  # scenedetect's own type (an Exception): an unreadable file is a ValueError here
        raise ValueError(f"detect_scenes: cannot open {path}: {err}") from err
    manager = SceneManager()
    manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=min_scene_len))
    manager.detect_scenes(video=video, show_progress=False)
    return [(int(start.get_frames()), int(end.get_frames())) for start, end in manager.get_scene_list()]


def scene_clip_targets(num_frames: int, fps: float, clip_seconds: float,
                       scenes: Sequence[tuple[int, int]] | None = None) -> list[ClipTarget]:
    """The clips of one video under the clip protocol, per scene when `scenes` is given.

    `scenes=None` (no splitting): `video_io.clip_spans` of the whole video, suffixes `_000`, ... or `_full`, scene -1.
    `scenes=[]` (`detect_scenes` found no cut): the same clips with scene 0; upstream then clips the original file, so
    the names carry no `-Scene-` part. Otherwise every scene `[a, b)` is clipped on its own (`clip_spans(b - a)`
    shifted by `a`), suffix `-Scene-<s>_<NNN>` / `-Scene-<s>_full` (upstream names the scene file
    `<video>-Scene-<s>.mp4`, then clips it). `clip` numbers run over the whole video.
    """
    length = video_io.clip_num_frames(fps, clip_seconds)
    if not scenes:
        spans = video_io.clip_spans(num_frames, fps, clip_seconds)
        is_full = len(spans) == 1 and spans[0][1] - spans[0][0] < length
        scene = -1 if scenes is None else 0
        return [ClipTarget(clip=k, scene=scene, start=s, end=e, stem_suffix="_full" if is_full else f"_{k:03d}")
                for k, (s, e) in enumerate(spans)]
    scene_spans = list(scenes)
    targets: list[ClipTarget] = []
    for index, (scene_start, scene_end) in enumerate(scene_spans):
        scene_end = min(scene_end, num_frames)
        if scene_end <= scene_start:
            raise ValueError(f"scene {index} has no frame: [{scene_start}, {scene_end}) of {num_frames}")
        spans = video_io.clip_spans(scene_end - scene_start, fps, clip_seconds)
        is_full = len(spans) == 1 and spans[0][1] - spans[0][0] < length
        for k, (s, e) in enumerate(spans):
            suffix = f"-Scene-{index}_" + ("full" if is_full else f"{k:03d}")
            targets.append(ClipTarget(clip=len(targets), scene=index, start=scene_start + s, end=scene_start + e,
                                      stem_suffix=suffix))
    return targets


# --------------------------------------------------------------------------------------------------------------------
# slow-fast fusion math
# --------------------------------------------------------------------------------------------------------------------
def load_mapping_table(path: str | os.PathLike) -> dict[float, float]:
    """Read a VBench-Long `*_mapping_table.yaml` (`{fast score key: mapped value}`) into floats."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"slow-fast mapping table not found: {path} (set scorer.slow_fast_mapping_dir)")
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    if not isinstance(raw, dict) or len(raw) < 2:
        raise ValueError(f"mapping table {path} must be a mapping of >= 2 numeric keys, got {type(raw).__name__}")
    return {float(key): float(value) for key, value in raw.items()}


def map_clip2clip(score: float, table: Mapping[float, float]) -> float:
    """Map a raw fast-branch score onto the in-clip scale (upstream `fuse_inclip_clip2clip`'s table lookup).

    `i = bisect_left(keys, score)`: `i == 0` -> value of the first key; `i == len(keys)` -> value of the last key;
    otherwise linear interpolation between keys `i-1` and `i`. The keys are compared with the RAW fast score, as
    upstream does (the table was built from quantiles, but is looked up by score value).
    """
    keys = sorted(table)
    index = bisect.bisect_left(keys, score)
    if index == 0:
        return float(table[keys[0]])
    if index == len(keys):
        return float(table[keys[-1]])
    k0, k1 = keys[index - 1], keys[index]
    y0, y1 = table[k0], table[k1]
    return float(y0 + (y1 - y0) * (score - k0) / (k1 - k0))


def fuse_slow_fast(inclip: float, mapped: float, *, w_inclip: float = 0.5, w_clip2clip: float = 0.5) -> float:
    """`w_inclip * inclip + w_clip2clip * mapped`; `inclip` alone where `mapped == 0.0` (upstream's guard).

    NaN `mapped` (no fast branch: fewer than 2 clips) also returns `inclip`, which is what upstream computes with its
    shipped tables (a missing fast score is looked up as 0.0, which maps to 0.0).
    """
    if math.isnan(mapped) or mapped == 0.0:
        return float(inclip)
    return float(w_inclip * inclip + w_clip2clip * mapped)


# --------------------------------------------------------------------------------------------------------------------
# fast branch: first-frame video and DINOv2 ViT-B/14 similarity
# --------------------------------------------------------------------------------------------------------------------
def first_frames_video(frames: np.ndarray, starts: Sequence[int], out_path: str | os.PathLike, fps: float, *,
                       crf: int = 0) -> np.ndarray:
    """Write the first frame of every clip (`frames[starts]`) as an mp4 at `fps`; return the frames read back.

    Upstream (`utils.create_video_from_first_frames`) writes the joined first frames as a new video, then the scorer
    decodes it; we do the same so the fast branch sees an encoded video. Frames are taken from the long video at each
    clip's start index (upstream decodes them from the re-encoded clip files, one more lossy generation).
    Returns uint8 `[K, H, W, 3]`.
    """
    frames = np.asarray(frames)
    joined = frames[list(starts)]  # [T, H, W, 3] -> [K, H, W, 3]
    video_io.write_video(out_path, joined, fps, crf=crf)
    decoded, _ = video_io.read_video(out_path)  # [K, H, W, 3]
    return decoded


def _dinov2_pos_embed_for(pos_embed, grid: int):
    """Resize DINOv2's 37x37 position table to `grid` x `grid` the way DINOv2 does at run time.

    facebookresearch/dinov2 `DinoVisionTransformer.interpolate_pos_encoding`: bicubic, no antialias, scale factor
    `(grid + 0.1) / 37` (the +0.1 "avoid floating point error" offset, facebookresearch/dino#8). Doing it once at load
    time for the fixed 224 px input gives the same table. `pos_embed`: `[1, 1 + 37*37, D]` -> `[1, 1 + grid*grid, D]`.
    """
    import torch
    import torch.nn.functional as F

    _, num_tokens, dim = pos_embed.shape
    native = int(math.isqrt(num_tokens - 1))
    if native * native != num_tokens - 1:
        raise ValueError(f"DINOv2 pos_embed must hold 1 + n*n tokens, got {num_tokens}")
    if native == grid:
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:].float()  # [1, 1, D], [1, n*n, D]
    scale = (grid + 0.1) / native
    patch_grid = patch_pos.reshape(1, native, native, dim).permute(0, 3, 1, 2)  # [1, n*n, D] -> [1, D, n, n]
    resized = F.interpolate(patch_grid, scale_factor=(scale, scale), mode="bicubic", antialias=False)  # [1, D, g, g]
    if resized.shape[-2:] != (grid, grid):
        raise AssertionError(f"pos_embed resize gave {tuple(resized.shape[-2:])}, expected {grid}x{grid}")
    patch_pos = resized.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)  # [1, D, g, g] -> [1, g*g, D]
    return torch.cat([cls_pos, patch_pos.to(pos_embed.dtype)], dim=1)  # [1, 1 + g*g, D]


def load_dinov2_vitb14(path: str | os.PathLike, *, device: str = "cpu"):
    """DINOv2 ViT-B/14 (timm `vit_base_patch14_dinov2`, CLS output after the final norm) from the official checkpoint.

    `path`: the state dict of `torch.hub.load('facebookresearch/dinov2', 'dinov2_vitb14')`
    (`dinov2_vitb14_pretrain.pth`, keys `cls_token`, `pos_embed` [1, 1370, 768], `mask_token`, `blocks.*`, ...), which the
    user supplies (nothing is downloaded). timm's block layout matches the official one key for key; `mask_token`
    (training only) is dropped and `pos_embed` is resized to the 224 px grid as DINOv2 would at run time. The model's
    forward returns `x_norm_clstoken`, as the hub model (head = Identity) does.
    """
    import timm
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DINOv2 ViT-B/14 checkpoint not found: {path} (set scorer.dinov2_path)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and "pos_embed" not in state:
        state = state["model"]
    state = dict(state)
    state.pop("mask_token", None)
    grid = _DINOV2_IMAGE_PX // 14
    if "pos_embed" not in state:
        raise ValueError(f"{path} is not a DINOv2 ViT-B/14 state dict: no 'pos_embed' key")
    state["pos_embed"] = _dinov2_pos_embed_for(state["pos_embed"], grid)
    model = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, img_size=_DINOV2_IMAGE_PX)
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def _dinov2_preprocess(frames: np.ndarray):
    """uint8 `[T, H, W, 3]` -> float `[T, 3, 224, 224]`: Resize(256, bicubic) + CenterCrop(224) + /255 + ImageNet norm.

    As `vbench2_beta_long.utils.dinov2_transform(224)` on decord's uint8 `[T, 3, H, W]` tensor (torchvision Resize on a
    tensor antialiases by default).
    """
    import torch
    from torchvision.transforms import functional as TF
    from torchvision.transforms import InterpolationMode

    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [T, H, W, 3] -> [T, 3, H, W]
    video = TF.resize(video, _DINOV2_RESIZE_PX, interpolation=InterpolationMode.BICUBIC, antialias=True)
    video = TF.center_crop(video, [_DINOV2_IMAGE_PX, _DINOV2_IMAGE_PX])  # [T, 3, 224, 224]
    video = video.float().div(255.0)
    return TF.normalize(video, mean=list(_IMAGENET_MEAN), std=list(_IMAGENET_STD))


def dinov2_clip2clip_score(model, frames: np.ndarray, *, device: str = "cpu") -> float:
    """Fast-branch score of a first-frame video `[K, H, W, 3]` (K >= 2): upstream `subject_consistency_dinov2`.

    Features `f_i` = L2-normalised CLS features; score = mean over i = 1..K-1 of
    `(max(0, cos(f_{i-1}, f_i)) + max(0, cos(f_0, f_i))) / 2`.
    """
    import torch
    import torch.nn.functional as F

    num_frames = frames.shape[0]
    if num_frames < 2:
        raise ValueError(f"the fast branch needs >= 2 first frames, got {num_frames}")
    images = _dinov2_preprocess(frames).to(device)  # [K, 3, 224, 224]
    with torch.no_grad():
        features = F.normalize(model(images).float(), dim=-1, p=2)  # [K, D]
    sim_previous = F.cosine_similarity(features[:-1], features[1:], dim=-1).clamp_min(0.0)  # [K-1]
    sim_first = F.cosine_similarity(features[:1], features[1:], dim=-1).clamp_min(0.0)  # [K-1]
    return float(((sim_previous + sim_first) / 2).mean())
