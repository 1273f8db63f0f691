"""Scoring throughput: videos/minute per dimension, tokentrim's adapter vs vbench's own `evaluate`, same files/device.

Protocol: N synthetic videos (seeded noise + ramps, written with tokentrim.video_io) are scored per dimension by
  (a) `VBench(device, None, out).evaluate(..., mode="custom_input", local=True)` (direct), and
  (b) `tokentrim.scoring.score_videos` with an empty score cache (cold), then again with the filled cache (warm).
One warm-up pass of each (imports, first decode) is discarded; then `--repeats` timed passes; the median wall time is
reported as videos/minute. Both run in this process on the same device. Only dimensions that are ready (weights
present) are timed. Writes bench/results/scoring_<device>_<yyyymm>.{md,json}.

Usage: PYTHONPATH=src python bench/scoring_throughput.py [--num-videos 16] [--num-frames 33] [--size 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_config import with_config_defaults  # noqa: E402  (bench-only helper)

from tokentrim import video_io  # noqa: E402
from tokentrim.scoring import check_dimensions, read_scores, score_videos  # noqa: E402


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device)).replace(" ", "-").lower()
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return cpu


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unavailable (no commit)"


def _versions() -> dict[str, str]:
    names = ["vbench", "torch", "torchvision", "av", "opencv-python", "decord", "numpy"]
    out = {"python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def _make_videos(folder: Path, *, num_videos: int, num_frames: int, size: int, fps: int) -> None:
    rng = np.random.default_rng(0)
    for k in range(num_videos):
        base = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        noise = rng.integers(-20, 21, (num_frames, size, size, 3))
        frames = np.clip(base.astype(np.int64) + noise, 0, 255).astype(np.uint8)  # [T, H, W, 3]
        video_io.write_video(folder / f"synthetic prompt {k}-0.mp4", frames, fps=fps)


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up, discarded
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/scoring_throughput.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-videos", type=int)
    parser.add_argument("--num-frames", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--fps", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--device")
    parser.add_argument("--cache-dir", help="VBench weights root (VBENCH_CACHE_DIR)")
    parser.add_argument("--dimensions", nargs="*")
    parser.add_argument("--out-dir", help="default: bench/results next to this script")
    return with_config_defaults(parser, "scoring_throughput")


def main() -> None:
    args = build_parser().parse_args()
    if args.out_dir is None:
        args.out_dir = str(Path(__file__).resolve().parent / "results")

    status = check_dimensions(args.dimensions, cache_dir=args.cache_dir)
    dims = [name for name, item in status.items() if item.is_ready]
    skipped = {name: item.one_line() for name, item in status.items() if not item.is_ready}
    work = Path(tempfile.mkdtemp(prefix="tokentrim_bench_"))
    try:
        videos = work / "videos"
        videos.mkdir()
        _make_videos(videos, num_videos=args.num_videos, num_frames=args.num_frames, size=args.size, fps=args.fps)
        import vbench
        import vbench.utils

        if args.cache_dir:
            vbench.utils.CACHE_DIR = args.cache_dir
        rows = []
        for dim in dims:
            runs = {"n": 0}

            def direct() -> None:
                runs["n"] += 1
                out = work / f"direct_{dim}_{runs['n']}"
                vbench.VBench(args.device, None, str(out)).evaluate(
                    videos_path=str(videos), name="bench", dimension_list=[dim], local=True, mode="custom_input")

            def ours_cold() -> None:
                runs["n"] += 1
                score_videos(videos, scores_csv=work / f"ours_{dim}_{runs['n']}" / "scores.csv", dimensions=[dim],
                             cache_dir=args.cache_dir, device=args.device, score_cache_dir=work / f"cold_{runs['n']}")

            warm_cache = work / "warm_cache"

            def ours_warm() -> None:
                runs["n"] += 1
                score_videos(videos, scores_csv=work / f"warm_{dim}_{runs['n']}" / "scores.csv", dimensions=[dim],
                             cache_dir=args.cache_dir, device=args.device, score_cache_dir=warm_cache)

            t_direct = _time(direct, args.repeats)
            t_cold = _time(ours_cold, args.repeats)
            t_warm = _time(ours_warm, args.repeats)
            # Same numbers check: our per-video raw scores equal the direct run's.
            direct_json = json.loads(next((work / f"direct_{dim}_1").glob("bench_eval_results.json")).read_text())
            direct_scores = {item["video_path"]: item["video_results"] for item in direct_json[dim][1]}
            ours_scores = {row["path"]: row["raw_score"] for row in read_scores(next(work.glob(f"ours_{dim}_*/scores.csv")))}
            identical = ours_scores == direct_scores
            for label, times in (("vbench evaluate (direct)", t_direct), ("tokentrim cold cache", t_cold),
                                 ("tokentrim warm cache", t_warm)):
                median = statistics.median(times)
                rows.append({"dimension": dim, "runner": label, "median_s": median,
                             "videos_per_min": args.num_videos / median * 60.0, "times_s": times,
                             "per_video_scores_identical": identical})
        now = dt.datetime.now(dt.timezone.utc)
        device_name = _device_name(args.device)
        record = {
            "theme": "scoring", "date_utc": now.isoformat(timespec="seconds"), "device": args.device,
            "device_name": device_name, "git_sha": _git_sha(), "versions": _versions(),
            "config": {key: value for key, value in vars(args).items()}, "results": rows, "not_ready": skipped,
            "protocol": "1 warm-up pass discarded, then median of --repeats passes; videos/minute = N / median * 60",
        }
        tag = "cpu" if args.device == "cpu" else device_name
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"scoring_{tag}_{now:%Y%m}"
        stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        lines = [
            f"# Scoring throughput ({args.device}: {device_name}, {now:%Y-%m-%d})", "",
            f"{args.num_videos} videos x {args.num_frames} frames, {args.size}x{args.size}, {args.fps} fps (synthetic, "
            f"H.264 via tokentrim.video_io). Protocol: {record['protocol']}. git {record['git_sha']}.", "",
            "| dimension | runner | median s | videos/min | per-video scores identical |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {r['dimension']} | {r['runner']} | {r['median_s']:.3f} | {r['videos_per_min']:.1f} | "
                  f"{r['per_video_scores_identical']} |" for r in rows]
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()), "",
                  f"Not timed (weights or packages missing here): {', '.join(skipped) or 'none'}.", ""]
        stem.with_suffix(".md").write_text("\n".join(lines))
        print("\n".join(lines))
        print(f"wrote {stem}.md and {stem}.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
