"""Per-video parity of our scorer with vbench's own evaluate on stand-in weights (not a test module).

`run_parities` takes one `Case` per dimension: it writes the case's clip suite, scores it with `score_videos`, and
hands vbench's own evaluate (a `DirectWorker`: one fresh process per call of `run_parities`) a folder holding exactly
the files our scorer fed vbench: the short video itself and the clip file(s) our scorer cut from the long one. In
`vbench_standard` mode the files are copied under the names that mode looks for (`<prompt>-<i>.mp4`, i < 5).
vbench evaluates one case while our scorer runs the next, so on two cores the two sides overlap; each side's seconds
are its own.

Both sides run torch on one CPU thread (`one_thread`): on a shared 2-core machine several OpenMP threads spin
against other jobs (RAFT went from 2 s to 12 s of CPU per frame pair), and a fixed thread count also keeps the two
processes' float reductions in the same order.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tokentrim.scoring.prompts import prompt_from_video_name
from tokentrim.scoring.vbench_adapter import NO_GRAD_DIMENSIONS, read_scores, score_videos
from tokentrim.scoring.weights import WeightRoots
from vbench_direct import DirectWorker, write_clip_suite

# prompts for custom_input dimensions (any text; the names only have to be VBench-style)
PLAIN_PROMPTS: tuple[str, ...] = ("a red square drifting", "a red square drifting slowly")
# the long video's length (write_clip_suite's default); as a dimension's clip length it makes that video ONE clip
# `<video>_000.mp4` (44 frames at 8 fps), so the VBench-Long path runs once per dimension, not three times
ONE_CLIP_SECONDS = 5.5


@dataclass(frozen=True)
class Case:
    """One dimension's parity run. `suite`: `write_clip_suite` keyword arguments (fps, size) for the networks that
    are slow on a CPU; `clip_seconds`: our scorer's clip length for the dimension (None: `DEFAULT_CLIP_SECONDS`)."""

    dimension: str
    prompts: Sequence[str] = PLAIN_PROMPTS
    mode: str = "custom_input"
    suite: Mapping = field(default_factory=dict)
    clip_seconds: float | None = ONE_CLIP_SECONDS


@dataclass
class Parity:
    """Our rows and vbench's per-video results keyed by (video, clip), plus what each side took in seconds."""

    ours: dict[tuple[str, int], dict] = field(default_factory=dict)
    direct: dict[tuple[str, int], float] = field(default_factory=dict)
    ours_s: float = 0.0
    direct_s: float = 0.0


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


def run_parities(tmp: Path, roots: WeightRoots, cases: Sequence[Case]) -> dict[str, Parity | Exception]:
    """{dimension: its Parity, or the error either side raised (`parity_of` re-raises it in that dimension's test)}."""
    outcome: dict[str, Parity | Exception] = {}
    pending = []  # (dimension, vbench job, {staged file: (video, clip)}), in submission order
    with one_thread(), DirectWorker(roots, tmp / "direct_worker.log") as worker:
        for case in cases:
            work = tmp / case.dimension
            try:
                videos = write_clip_suite(work / "videos", case.prompts, **dict(case.suite))
                ours, seconds = _score(work, videos, case, roots)
                folder, staged, prompts_of = _stage(work, ours, case.mode)
                job = worker.submit(folder, case.dimension, work / "direct_out", mode=case.mode,
                                    prompt_list=prompts_of if case.mode == "custom_input" else None,
                                    grad=case.dimension not in NO_GRAD_DIMENSIONS)
            except Exception as err:  # noqa: BLE001  (kept for that dimension's test; the other cases still run)
                outcome[case.dimension] = err
                continue
            outcome[case.dimension] = Parity(ours=ours, ours_s=seconds)
            pending.append((case.dimension, job, staged))
        for dimension, job, staged in pending:
            try:
                results, seconds = worker.wait(job)
            except Exception as err:  # noqa: BLE001
                outcome[dimension] = err
                continue
            outcome[dimension].direct = {staged[path]: float(value) for path, value in results.items()}
            outcome[dimension].direct_s = seconds
    return outcome


def parity_of(parities: Mapping[str, Parity | Exception], dimension: str) -> Parity:
    """The dimension's Parity from `run_parities`, raising the error it ended with."""
    parity = parities[dimension]
    if isinstance(parity, Exception):
        raise parity
    return parity


def score_and_direct(tmp: Path, dimension: str, roots: WeightRoots, **case) -> Parity:
    """One dimension (`Case` keyword arguments): `run_parities` for it alone."""
    return parity_of(run_parities(tmp, roots, [Case(dimension, **case)]), dimension)


def _score(work: Path, videos: Sequence[Path], case: Case, roots: WeightRoots) -> tuple[dict, float]:
    """Our rows keyed by (video, clip) and the seconds `score_videos` took."""
    start = time.perf_counter()
    summary = score_videos(videos, scores_csv=work / "scores.csv", dimensions=[case.dimension],
                           cache_dir=roots.cache_dir, torch_home=roots.torch_home, hf_home=roots.hf_home,
                           clip_dir=work / "clips", score_cache_dir=work / "score_cache",
                           clip_seconds={case.dimension: case.clip_seconds} if case.clip_seconds else None,
                           # vbench's mode as our prompt protocol: custom_input scores every file on the dimension
                           prompt_protocol="all" if case.mode == "custom_input" else "standard")
    seconds = time.perf_counter() - start
    assert not summary.errors, summary.describe()
    return {(row["video"], row["clip"]): row for row in read_scores(work / "scores.csv")}, seconds


def _stage(work: Path, ours: Mapping[tuple[str, int], dict], mode: str):
    """(folder, {staged path: (video, clip)}, {file name: prompt}): the files vbench reads for our rows, under the
    names its mode needs."""
    # the files vbench read for each row: whole video (clip -1) or the clip our scorer cut
    sources: dict[tuple[str, int], Path] = {}
    for (video, clip), row in ours.items():
        if clip < 0:
            assert row["clip_path"] == "", row  # a whole-video row has no clip file
            sources[(video, clip)] = Path(row["path"])
        else:
            # scores.csv's clip_path: `<video>_<NNN>.mp4`, `<video>_full.mp4` when the video is shorter than one clip
            # (upstream's names; the dimension tests check which)
            sources[(video, clip)] = Path(row["clip_path"])
            assert sources[(video, clip)].is_file() and sources[(video, clip)].is_relative_to(work / "clips"), row
    folder = work / "direct_videos"
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
    return folder, staged, prompts_of


def assert_equal_per_video(parity: Parity) -> None:
    """Two rows (the short video whole, the long one as one VBench-Long clip), each finite, one direct result per
    row, and raw_score == vbench's value exactly."""
    assert sorted(clip for _, clip in parity.ours) == [-1, 0], sorted(parity.ours)
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
