#!/usr/bin/env python
"""Run the four GRiT dimensions once on stand-in weights: our scorer vs vbench's own evaluate, per video.

    PYTHONPATH=/tmp/d2site:$PWD/src python scripts/vbench_grit_standins.py WORK_DIR --json results/vbench_grit/grit_standins.json

Needs detectron2 (results/vbench_grit/README.md has the build recipe). For each dimension: two videos from
`tests/vbench_direct.write_clip_suite` named `<prompt>-0.mp4` after the first two prompts of vbench's
VBench_full_info.json that list it (one 2 s: whole-video protocol; one 5.5 s: VBench-Long 2 s clips), scored by
`tokentrim.scoring.score_videos`; then vbench's `VBench(...).evaluate(mode="vbench_standard")` in a fresh process on
the same files (the whole video as `<prompt0>-0.mp4`, the clips our scorer cut as `<prompt1>-<k>.mp4`, k = clip index),
and per-row equality. The JSON is rewritten after every dimension.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from vbench_direct import direct_evaluate, write_clip_suite  # noqa: E402

from tokentrim.scoring import check_dimensions, format_check, load_vbench_suite, read_scores, score_videos  # noqa: E402
from tokentrim.scoring.standins import grit, standin_roots  # noqa: E402
from tokentrim.scoring.weights import GRIT_DIMENSIONS  # noqa: E402


def _prompts(dimension: str, count: int) -> list[str]:
    return [entry.prompt for entry in load_vbench_suite() if dimension in entry.dimensions][:count]


def run_dimension(dimension: str, roots, work: Path, *, with_long: bool) -> dict:
    videos = work / "videos" / dimension
    prompts = _prompts(dimension, 2 if with_long else 1)
    paths = write_clip_suite(videos, prompts)

    # 1. our scorer
    started = time.perf_counter()
    scores_csv = work / "scores" / dimension / "scores.csv"
    try:
        summary = score_videos(videos, scores_csv=scores_csv, dimensions=[dimension], cache_dir=roots.cache_dir,
                               torch_home=roots.torch_home, hf_home=roots.hf_home, device="cpu")
        ours_error = "; ".join(f"{v}/{c}: {e}" for v, c, _, e in summary.errors)
    except Exception as err:  # noqa: BLE001  (recorded in the results, not swallowed)
        ours_error = f"{type(err).__name__}: {err}"
    ours_s = time.perf_counter() - started
    rows = read_scores(scores_csv) if scores_csv.is_file() else []

    # 2. vbench's own evaluate on the same files, named the standard way
    direct_videos = work / "direct_videos" / dimension
    shutil.rmtree(direct_videos, ignore_errors=True)
    direct_videos.mkdir(parents=True)
    name_of_row = {}
    for row in rows:
        prompt = row["video"].rsplit("-", 1)[0]
        index = max(row["clip"], 0)
        target = direct_videos / f"{prompt}-{index}.mp4"
        shutil.copyfile(row["path"], target)
        name_of_row[(row["video"], row["clip"])] = str(target)
    started = time.perf_counter()
    try:
        direct = direct_evaluate(direct_videos, dimension, roots, work / "direct_out" / dimension,
                                 mode="vbench_standard", timeout=3600)
        direct_error = ""
    except AssertionError as err:
        direct, direct_error = {}, str(err).strip().splitlines()[-1]
    direct_s = time.perf_counter() - started

    per_row = []
    for row in rows:
        theirs = direct.get(name_of_row[(row["video"], row["clip"])])
        ours = row["raw_score"]
        per_row.append({
            "video": row["video"], "clip": row["clip"], "protocol": row["protocol"], "ours_raw": ours,
            "vbench_raw": theirs, "ours_error": row["error"],
            "equal": theirs is not None and not math.isnan(ours) and float(theirs) == ours,
        })
    return {
        "prompts": prompts, "videos": [p.name for p in paths], "rows": per_row,
        "all_equal": bool(per_row) and all(item["equal"] for item in per_row),
        "ours_seconds": round(ours_s, 1), "vbench_seconds": round(direct_s, 1),
        "ours_error": ours_error, "vbench_error": direct_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--dimensions", nargs="+", default=list(GRIT_DIMENSIONS), choices=list(GRIT_DIMENSIONS))
    parser.add_argument("--long-dimensions", nargs="*", default=list(GRIT_DIMENSIONS), choices=list(GRIT_DIMENSIONS),
                        help="dimensions that also score the 5.5 s video (3 clips); the others score the 2 s one only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import detectron2
    import torch

    started = time.perf_counter()
    roots = standin_roots(args.work / "weights")
    grit.write(roots, seed=args.seed)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(),
        "torch": torch.__version__, "detectron2": detectron2.__version__, "torch_threads": torch.get_num_threads(),
        "seed": args.seed, "standins_seconds": round(time.perf_counter() - started, 1),
        "check": format_check(check_dimensions(args.dimensions, cache_dir=roots.cache_dir, torch_home=roots.torch_home,
                                               hf_home=roots.hf_home)).splitlines(),
        "dimensions": {},
    }
    if args.json.is_file():  # keep dimensions an earlier call recorded
        result["dimensions"] = json.loads(args.json.read_text())["dimensions"]
    print("\n".join(result["check"]), flush=True)
    for dimension in args.dimensions:
        result["dimensions"][dimension] = run_dimension(dimension, roots, args.work,
                                                        with_long=dimension in args.long_dimensions)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(dimension, json.dumps(result["dimensions"][dimension]), flush=True)


if __name__ == "__main__":
    main()
