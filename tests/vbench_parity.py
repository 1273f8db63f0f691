"""Per-video parity of our scorer with vbench's own evaluate on stand-in weights (not a test module).

`score_and_direct` scores the clip suite with `score_videos` and runs `direct_evaluate` on a folder holding exactly
the files our scorer fed vbench: the short video itself and the clip files our scorer cut from the long one. In
`vbench_standard` mode the files are copied under the names that mode looks for (`<prompt>-<i>.mp4`, i < 5).

Both sides run torch on one CPU thread (`one_thread`): on a shared 2-core machine several OpenMP threads spin
against other jobs (RAFT went from 2 s to 12 s of CPU per frame pair), and a fixed thread count also keeps the two
processes' float reductions in the same order.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tokentrim.scoring.prompts import prompt_from_video_name
from tokentrim.scoring.vbench_adapter import NO_GRAD_DIMENSIONS, read_scores, score_videos
from tokentrim.scoring.weights import WeightRoots
from vbench_direct import direct_evaluate, write_clip_suite

# prompts for custom_input dimensions (any text; the names only have to be VBench-style)
PLAIN_PROMPTS: tuple[str, ...] = ("a red square drifting", "a red square drifting slowly")


@dataclass
class Parity:
    """Our rows and vbench's per-video results keyed by (video, clip), plus what each side took in seconds."""

    ours: dict[tuple[str, int], dict]
    direct: dict[tuple[str, int], float]
    ours_s: float
    direct_s: float


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread here and (through OMP_NUM_THREADS, read at torch import) in the vbench subprocess."""
    threads, saved = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


def score_and_direct(tmp: Path, dimension: str, roots: WeightRoots, *, prompts: Sequence[str] = PLAIN_PROMPTS,
                     mode: str = "custom_input", kwargs: Mapping | None = None,
                     suite: Mapping | None = None) -> Parity:
    """`suite`: keyword arguments of `write_clip_suite` (fps, size) for the networks that are slow on a CPU."""
    with one_thread():
        return _score_and_direct(tmp, dimension, roots, prompts=prompts, mode=mode, kwargs=kwargs, suite=suite)


def _score_and_direct(tmp: Path, dimension: str, roots: WeightRoots, *, prompts, mode, kwargs, suite) -> Parity:
    videos = write_clip_suite(tmp / "videos", prompts, **dict(suite or {}))
    clip_root = tmp / "clips"
    start = time.perf_counter()
    summary = score_videos(videos, scores_csv=tmp / "scores.csv", dimensions=[dimension], cache_dir=roots.cache_dir,
                           torch_home=roots.torch_home, hf_home=roots.hf_home, clip_dir=clip_root,
                           score_cache_dir=tmp / "score_cache",
                           # vbench's mode as our prompt protocol: custom_input scores every file on the dimension
                           prompt_protocol="all" if mode == "custom_input" else "standard", **dict(kwargs or {}))
    ours_s = time.perf_counter() - start
    assert not summary.errors, summary.describe()
    ours = {(row["video"], row["clip"]): row for row in read_scores(tmp / "scores.csv")}

    # the files vbench read for each row: whole video (clip -1) or the clip our scorer cut
    sources: dict[tuple[str, int], Path] = {}
    for (video, clip), row in ours.items():
        if clip < 0:
            sources[(video, clip)] = Path(row["path"])
        else:
            # `<video>_<NNN>.mp4`; `<video>_full.mp4` when the video is shorter than one clip (upstream's names)
            names = [f"{video}_{clip:03d}.mp4"] + ([f"{video}_full.mp4"] if clip == 0 else [])
            (found,) = [hit for name in names for hit in clip_root.glob(f"*/*/{glob.escape(name)}")]
            sources[(video, clip)] = found
    folder = tmp / "direct_videos"
    folder.mkdir()
    staged: dict[str, tuple[str, int]] = {}
    prompts_of: dict[str, str] = {}  # custom_input: file name -> the prompt our scorer used (clip names carry suffixes)
    for key, source in sorted(sources.items()):
        video, clip = key
        if mode == "vbench_standard":  # `<prompt>-<i>.mp4`: the i-th file of this prompt
            prompt = video.rsplit("-", 1)[0]
            index = sum(1 for other in staged.values() if other[0] == video)
            assert index < 5, "vbench_standard mode reads at most 5 files per prompt"
            name = f"{prompt}-{index}.mp4"
        else:
            name = source.name
        shutil.copyfile(source, folder / name)
        staged[str(folder / name)] = key
        prompts_of[name] = prompt_from_video_name(Path(ours[key]["path"]).name)
    start = time.perf_counter()
    results = direct_evaluate(folder, dimension, roots, tmp / "direct_out", mode=mode, kwargs=kwargs,
                              prompt_list=prompts_of if mode == "custom_input" else None,
                              grad=dimension not in NO_GRAD_DIMENSIONS)
    direct_s = time.perf_counter() - start
    direct = {staged[path]: float(value) for path, value in results.items()}
    return Parity(ours=ours, direct=direct, ours_s=ours_s, direct_s=direct_s)


def assert_equal_per_video(parity: Parity, *, expect_rows: int = 4) -> None:
    """Every row finite, one direct result per row, and raw_score == vbench's value exactly."""
    assert len(parity.ours) == expect_rows, sorted(parity.ours)
    assert set(parity.direct) == set(parity.ours)
    for key, row in parity.ours.items():
        assert math.isfinite(row["raw_score"]) and math.isfinite(row["score"]), (key, row)
        assert row["raw_score"] == parity.direct[key], (key, row["raw_score"], parity.direct[key])


def assert_ready_and_named_when_missing(dimensions: Sequence[str], roots: WeightRoots, empty: Path) -> None:
    """`check_dimensions` says ready for each dimension on `roots`, and on empty roots under `empty` names every
    file `required_files` lists (the `tokentrim vbench-check` line)."""
    from tokentrim.scoring.weights import check_dimensions, required_files

    status = check_dimensions(dimensions, cache_dir=roots.cache_dir, torch_home=roots.torch_home, hf_home=roots.hf_home)
    assert all(status[dim].is_ready for dim in dimensions), [item.one_line() for item in status.values()]
    empty_roots = WeightRoots(empty / "c", empty / "t", empty / "h")
    missing = check_dimensions(dimensions, cache_dir=empty_roots.cache_dir, torch_home=empty_roots.torch_home,
                               hf_home=empty_roots.hf_home)
    for dim in dimensions:
        assert not missing[dim].is_ready
        for req in required_files(dim, empty_roots):
            assert str(req.path) in missing[dim].one_line(), (dim, req.path)


def assert_write_is_idempotent(family, roots: WeightRoots) -> None:
    """A family's `write` again on complete files returns the same paths and rewrites nothing (mtimes unchanged)."""
    written = family.write(roots, seed=0)
    assert written and all(path.is_file() for path in written)
    before = {path: path.stat().st_mtime_ns for path in written}
    assert family.write(roots, seed=0) == written and {path: path.stat().st_mtime_ns for path in written} == before
