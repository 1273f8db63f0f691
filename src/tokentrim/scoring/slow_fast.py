"""Slow-fast fusion of clip rows (VBench-Long `--dev_flag`), after every in-clip score of a call exists.

For subject_consistency on clipped videos, the fast branch (first frame of every clip of a scene, joined into
`<clip dir>/.../<video>[-Scene-<s>]_firstframes.mp4`, DINOv2 ViT-B/14) gives `clip2clip_score`, mapped through
`subject_mapping_table.yaml` to `mapped_clip2clip_score`. Each clip row keeps vbench's in-clip value in `raw_score` /
`inclip_score` and gets `score = w_inclip * inclip_k + w_clip2clip * mapped` (protocol `...+slowfast`); fusion is
linear, so the mean over a scene's clip rows is exactly upstream's fused score `w_inclip * mean_k(inclip_k) +
w_clip2clip * mapped`. A scene of one clip has no fast branch and keeps `score = inclip` (as upstream). Fast scores are
cached by (content hash, clip starts, checkpoint path/size/mtime). background_consistency fusion needs DreamSim, which
is not supported. The math lives in `long_video`; this module walks the rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from tokentrim import video_io
from tokentrim.scoring import long_video
from tokentrim.scoring.planning import CACHE_FORMAT, VideoJob, one_line
from tokentrim.scoring.scores_store import ScoreCache, ScoresStore
from tokentrim.scoring.weights import WeightRoots, block_downloads, slow_fast_paths

logger = logging.getLogger(__name__)

__all__ = ["fuse_slow_fast"]


def fast_branch_key(*, sha: str, dimension: str, starts: Sequence[int], crf: int, checkpoint: Path) -> str:
    stat = checkpoint.stat()
    material = {"format": CACHE_FORMAT, "fast_branch": "dinov2_vitb14", "content_hash": sha, "dimension": dimension,
                "starts": list(starts), "crf": crf, "checkpoint": [str(checkpoint), stat.st_size, stat.st_mtime_ns]}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def fuse_slow_fast(scores: ScoresStore, jobs: Sequence[VideoJob], dims: Sequence[str], *, roots: WeightRoots,
                   device: str, cache: ScoreCache, clip_root: Path, clip_crf: int, mapping_dir, dinov2_path,
                   w_inclip: float, w_clip2clip: float) -> None:
    """Rewrite this call's clip rows of `dims` with the fused score (module docstring).

    Groups = (video, scene) of clipped rows; the fast branch runs on groups of >= 2 clips whose in-clip rows all
    scored. A fast-branch failure on one video turns its rows into error rows (score NaN) and the run goes on.
    """
    mapping_root, checkpoint = slow_fast_paths(roots.cache_dir, slow_fast_mapping_dir=mapping_dir, dinov2_path=dinov2_path)
    model = None
    for dim in dims:
        table = long_video.load_mapping_table(mapping_root / long_video.MAPPING_TABLE_FILES[dim])
        for job in jobs:
            rows = [row for row in scores.rows_of(job.name, dim) if int(row["clip"]) >= 0 and row.get("content_hash")]
            if not rows or any(row["error"] or math.isnan(float(row["score"])) for row in rows):
                continue  # whole-video protocol, or an in-clip error already recorded
            groups: dict[int, list[dict]] = defaultdict(list)
            for row in rows:
                groups[int(row["scene"]) if str(row.get("scene", "")) not in ("", "-1") else -1].append(row)
            frames = fps = None
            try:
                for scene, group in sorted(groups.items()):
                    clip2clip = math.nan
                    if len(group) >= 2:
                        starts = [int(row["frame_start"]) for row in group]
                        key = fast_branch_key(sha=group[0]["content_hash"], dimension=dim, starts=starts, crf=clip_crf,
                                              checkpoint=checkpoint)
                        cached = cache.get(key)
                        if cached is not None:
                            clip2clip = float(cached["clip2clip_score"])
                        else:
                            if frames is None:
                                frames, fps = video_io.read_video(job.path)  # [T, H, W, 3]
                            if model is None:
                                with block_downloads(f"loading DINOv2 for {dim} slow-fast"):
                                    model = long_video.load_dinov2_vitb14(checkpoint, device=device)
                            suffix = f"-Scene-{scene}" if scene >= 0 else ""
                            fast_path = (clip_root / group[0]["content_hash"][:16] / "firstframes"
                                         / f"{Path(job.path).stem}{suffix}_{len(starts)}x_firstframes.mp4")
                            # upstream writes the joined video at int(fps), the clip frame rate
                            first = long_video.first_frames_video(frames, starts, fast_path, float(int(fps)), crf=clip_crf)
                            with block_downloads(f"scoring {dim} fast branch"):
                                clip2clip = long_video.dinov2_clip2clip_score(model, first, device=device)
                            cache.put(key, {"clip2clip_score": clip2clip, "dimension": dim, "video": job.name,
                                            "scene": scene})
                    mapped = long_video.map_clip2clip(clip2clip, table) if not math.isnan(clip2clip) else math.nan
                    for row in group:
                        inclip = float(row["raw_score"])
                        row.update({
                            "inclip_score": inclip, "clip2clip_score": clip2clip, "mapped_clip2clip_score": mapped,
                            "score": long_video.fuse_slow_fast(inclip, mapped, w_inclip=w_inclip, w_clip2clip=w_clip2clip),
                            "protocol": str(row["protocol"]).split("+slowfast")[0] + "+slowfast",
                        })
            except (OSError, ValueError, RuntimeError) as err:
                message = f"slow-fast failed: {one_line(err)}"
                logger.warning("%s %s: %s", job.name, dim, message)
                for row in rows:
                    row.update({"score": math.nan, "error": message})
