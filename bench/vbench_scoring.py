"""VBench at full strength on stand-in weights: tokentrim's scorer vs vbench's own evaluate, every ready dimension.

Protocol (one process; the numbers of both runners are compared per video):
1. Stand-in weights of every family (`tokentrim.scoring.standins`: real architectures, seeded random weights, the
   published formats; **their scores mean nothing**) are written to a work folder; `check_dimensions` picks the
   dimensions that are ready there (GRiT needs detectron2).
2. `--num-videos` synthetic videos of `--num-frames` frames at `--height`x`--width`, `--fps`, written with
   `tokentrim.video_io` and named `<prompt>-0.mp4` after VBench standard prompts: half list `scene`, half
   `appearance_style` (the two dimensions that need the suite's auxiliary_info); every video gets every other dimension.
3. Runners, interleaved: ours, vbench, ours again (cold score cache each time; ours must run first, since vbench reads
   the clip files ours cut); ours' time is the mean of its two passes, and both passes are compared with vbench:
   - **ours**: `tokentrim.scoring.score_videos` with an empty score cache, `--workers` processes on the one device
     (models resident per process and dimension: one vbench call per dimension and worker, `chunk_size` = all), one call
     per prompt group (scene videos, style videos). Clip cutting (VBench-Long, videos >= 5 s) is timed as ours.
   - **vbench**: `VBench(device, full_info, out).evaluate(..., local=True)` per dimension, in this process, one
     dimension after another, as a user runs it: `custom_input` mode for the dimensions without auxiliary info,
     `vbench_standard` for scene and appearance_style. For clipped videos it reads the clip files ours cut (VBench-Long
     scores clips with the same compute functions): the prompt of each clip file is passed in `prompt_list`; scene and
     appearance_style clips (which `evaluate` refuses in custom_input mode and cannot find by name in standard mode) go
     through `compute_<dimension>` on a full_info json, the function `evaluate` calls.
4. Result: seconds per (video, dimension) unit for each runner and dimension (vbench) or overall (ours), videos per
   minute over all dimensions, and per-unit equality: max |ours - vbench| per dimension, and the count of units equal
   bit for bit.

Writes bench/results/vbench_scoring_<device>_<yyyymm>[_<tag>].{json,md}. Usage (GPU):
    PYTHONPATH=src python bench/vbench_scoring.py --device cuda --workers 8 --num-videos 20 --num-frames 81
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_config import with_config_defaults  # noqa: E402  (bench-only helper)

AUX_DIMENSIONS = ("scene", "appearance_style")


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/vbench_scoring.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-videos", type=int)
    parser.add_argument("--num-frames", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--fps", type=int)
    parser.add_argument("--device")
    parser.add_argument("--workers", type=int, help="our scorer's processes on the device")
    parser.add_argument("--dimensions", nargs="*", help="default: every dimension ready on the stand-ins")
    parser.add_argument("--ours-passes", type=int, help="2 = ours, vbench, ours (interleaved); 1 = ours, vbench")
    parser.add_argument("--standins-dir", help="reuse stand-ins written there (default: a fresh temp folder)")
    parser.add_argument("--tag", help="suffix of the results file name")
    parser.add_argument("--out-dir", help="default: bench/results next to this script")
    return with_config_defaults(parser, "vbench_scoring")


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in ["vbench", "torch", "torchvision", "numpy", "av", "decord", "transformers", "timm", "pyiqa",
                 "openai-clip", "opencv-python-headless", "opencv-python"]:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or "cpu"


def _bench_prompts(num_videos: int) -> list[tuple[str, str]]:
    """(prompt, aux dimension) pairs: alternately a `scene` and an `appearance_style` prompt of the VBench suite."""
    from tokentrim.scoring.prompts import load_vbench_suite

    pools = {dim: [entry.prompt for entry in load_vbench_suite([dim])] for dim in AUX_DIMENSIONS}
    return [(pools[AUX_DIMENSIONS[k % 2]][k // 2], AUX_DIMENSIONS[k % 2]) for k in range(num_videos)]


def _make_videos(folder: Path, prompts: list[tuple[str, str]], *, num_frames: int, height: int, width: int,
                 fps: int) -> dict[str, list[Path]]:
    """Moving-shape videos (`tests/vbench_direct.py`'s generator) per aux group; returns {aux dim: paths}."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from vbench_direct import moving_shapes  # noqa: PLC0415  (the tests' deterministic video generator)

    from tokentrim import video_io

    from concurrent.futures import ThreadPoolExecutor

    groups: dict[str, list[Path]] = defaultdict(list)
    for prompt, aux in prompts:
        groups[aux].append(folder / aux / f"{prompt}-0.mp4")
    paths = [folder / aux / f"{prompt}-0.mp4" for prompt, aux in prompts]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # the encoder releases the GIL
        list(pool.map(lambda k: video_io.write_video(paths[k], moving_shapes(num_frames, height, width, seed=k),
                                                     fps=fps), range(len(paths))))
    return groups


def _user_env(roots) -> dict[str, str]:
    return {"VBENCH_CACHE_DIR": str(roots.cache_dir), "TORCH_HOME": str(roots.torch_home), "HF_HOME": str(roots.hf_home),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_ours(groups: dict[str, list[Path]], dims: list[str], roots, *, device: str, workers: int, work: Path) -> tuple[float, dict]:
    """Our scorer over both groups (cold cache); returns (seconds, {(path, dim): row})."""
    from tokentrim.scoring import read_scores, score_videos

    rows: dict[tuple[str, str], dict] = {}
    start = time.perf_counter()
    for aux, paths in groups.items():
        group_dims = [dim for dim in dims if dim not in AUX_DIMENSIONS or dim == aux]
        csv = work / "ours" / aux / "scores.csv"
        summary = score_videos(paths, scores_csv=csv, dimensions=group_dims, cache_dir=roots.cache_dir,
                               torch_home=roots.torch_home, hf_home=roots.hf_home, device=device,
                               score_cache_dir=work / "ours" / aux / "cache", chunk_size=10_000,
                               num_workers=workers, devices=[device] * workers,
                               prompt_protocol="all")  # every video gets every dimension (vbench side: custom_input)
        if summary.errors:
            raise RuntimeError(f"our scorer had {len(summary.errors)} error row(s), first: {summary.errors[0]}")
        for row in read_scores(csv):
            rows[(row["path"], row["dimension"])] = row
    return time.perf_counter() - start, rows


def run_vbench(groups: dict[str, list[Path]], dims: list[str], ours_rows: dict, *, device: str, work: Path) -> tuple[dict, dict]:
    """vbench's own evaluate per dimension on the same files (clip files for clipped videos); in this process."""
    import torch
    import vbench
    from tokentrim.scoring.prompts import vbench_full_info_path

    full_info = str(vbench_full_info_path())
    seconds: dict[str, float] = {}
    values: dict[tuple[str, str], float] = {}
    for dim in dims:
        # the files ours scored for this dimension (whole videos or clips) and the prompt of each
        files = {path: row for (path, d), row in ours_rows.items() if d == dim}
        out = work / "vbench" / dim
        folder = out / "videos"
        folder.mkdir(parents=True)
        for path in files:
            os.symlink(path, folder / Path(path).name)
        prompts = {Path(path).name: _prompt_of(row) for path, row in files.items()}
        clipped = any(int(row["clip"]) >= 0 for row in files.values())
        start = time.perf_counter()
        if dim in AUX_DIMENSIONS and clipped:
            results = _compute_direct(dim, folder, prompts, device=device, out=out)
        else:
            mode = "vbench_standard" if dim in AUX_DIMENSIONS else "custom_input"
            extra = {"prompt_list": prompts} if mode == "custom_input" and clipped else {}
            vbench.VBench(torch.device(device), full_info, str(out)).evaluate(  # as vbench's launcher
                videos_path=str(folder), name="direct", dimension_list=[dim], local=True, mode=mode, **extra)
            results = json.loads((out / "direct_eval_results.json").read_text())[dim][1]
        seconds[dim] = time.perf_counter() - start
        by_name = {Path(item["video_path"]).name: float(item["video_results"]) for item in results if "video_path" in item}
        for path in files:
            values[(path, dim)] = by_name.get(Path(path).name, math.nan)
    return seconds, values


def _prompt_of(row: dict) -> str:
    from tokentrim.scoring.prompts import prompt_from_video_name

    return prompt_from_video_name(Path(row["video"]).name + ".mp4")


def _compute_direct(dim: str, folder: Path, prompts: dict[str, str], *, device: str, out: Path) -> list[dict]:
    """`compute_<dim>` on a full_info json with the suite's auxiliary_info, as `evaluate` calls it."""
    import importlib

    import torch
    import vbench.utils
    from tokentrim.scoring.prompts import auxiliary_info_for

    entries = [{"prompt_en": prompt, "dimension": [dim], "video_list": [str(folder / name)],
                "auxiliary_info": {dim: auxiliary_info_for(prompt)[dim]}} for name, prompt in sorted(prompts.items())]
    info = out / f"{dim}_full_info.json"
    info.write_text(json.dumps(entries))
    submodules = vbench.utils.init_submodules([dim], local=True, read_frame=False)[dim]
    compute = getattr(importlib.import_module(f"vbench.{dim}"), f"compute_{dim}")
    return compute(str(info), torch.device(device), submodules)[1]


def main() -> None:
    args = build_parser().parse_args()
    out_dir = Path(args.out_dir or Path(__file__).resolve().parent / "results")
    work = Path(tempfile.mkdtemp(prefix="tokentrim_vbench_bench_"))
    try:
        from tokentrim.scoring import check_dimensions
        from tokentrim.scoring.standins import standin_roots, write_standins

        t0 = time.perf_counter()
        standins = Path(args.standins_dir) if args.standins_dir else work / "standins"
        # as a user sets them, before anything imports vbench (vbench.utils reads VBENCH_CACHE_DIR at import)
        os.environ.update(_user_env(standin_roots(standins)))
        from tokentrim.scoring.totals import ALL_DIMENSIONS
        from tokentrim.scoring.weights import GRIT_DIMENSIONS

        has_detectron2 = importlib.util.find_spec("detectron2") is not None
        roots = write_standins(standins, [dim for dim in ALL_DIMENSIONS if has_detectron2 or dim not in GRIT_DIMENSIONS])
        standin_s = time.perf_counter() - t0
        status = check_dimensions(args.dimensions, cache_dir=roots.cache_dir, torch_home=roots.torch_home,
                                  hf_home=roots.hf_home)
        dims = [name for name, item in status.items() if item.is_ready]
        not_ready = {name: item.one_line() for name, item in status.items() if not item.is_ready}
        prompts = _bench_prompts(args.num_videos)
        groups = _make_videos(work / "videos", prompts, num_frames=args.num_frames, height=args.height,
                              width=args.width, fps=args.fps)
        print(f"stand-ins {standin_s:.1f} s; dimensions {dims}; not ready {list(not_ready)}", flush=True)

        # interleaved: ours (cuts the clips vbench then reads), vbench, ours again
        ours_1, ours_rows = run_ours(groups, dims, roots, device=args.device, workers=args.workers, work=work / "pass1")
        print(f"ours pass 1: {ours_1:.1f} s", flush=True)
        vbench_s, vbench_values = run_vbench(groups, dims, ours_rows, device=args.device, work=work)
        print(f"vbench: {sum(vbench_s.values()):.1f} s", flush=True)
        if args.ours_passes >= 2:
            ours_2, ours_rows_2 = run_ours(groups, dims, roots, device=args.device, workers=args.workers,
                                           work=work / "pass2")
            print(f"ours pass 2: {ours_2:.1f} s", flush=True)
        else:
            ours_2, ours_rows_2 = ours_1, ours_rows
        ours_s = (ours_1 + ours_2) / 2
        pass2 = {(Path(path).name, dim): row for (path, dim), row in ours_rows_2.items()}

        per_dim = []
        for dim in dims:
            keys = [key for key in ours_rows if key[1] == dim]
            diffs = [abs(float(ours_rows[key]["raw_score"]) - vbench_values[key]) for key in keys]
            diffs += [abs(float(pass2[(Path(path).name, dim)]["raw_score"]) - vbench_values[(path, dim)])
                      for path, _ in keys]
            per_dim.append({
                "dimension": dim, "units": len(keys), "vbench_s": vbench_s[dim],
                "vbench_s_per_unit": vbench_s[dim] / max(len(keys), 1),
                "max_abs_diff": max(diffs) if diffs else math.nan,
                "units_bit_equal": sum(d == 0.0 for d in diffs) / 2,  # over both passes of ours
                "units_nan": sum(math.isnan(d) for d in diffs),
            })
        units = sum(item["units"] for item in per_dim)
        videos = args.num_videos
        total_vbench = sum(vbench_s.values())
        now = dt.datetime.now(dt.timezone.utc)
        record = {
            "theme": "vbench_scoring", "date_utc": now.isoformat(timespec="seconds"), "device": args.device,
            "device_name": _device_name(args.device), "cpu_count": os.cpu_count(), "versions": _versions(),
            "config": vars(args), "dimensions": dims, "not_ready": not_ready, "standins_s": standin_s,
            "units": units, "ours_s": ours_s, "ours_passes_s": [ours_1, ours_2][:args.ours_passes],
            "vbench_s": total_vbench,
            "ours_videos_per_min": videos / ours_s * 60, "vbench_videos_per_min": videos / total_vbench * 60,
            "speedup": total_vbench / ours_s, "per_dimension": per_dim,
            "scores_note": "stand-in weights: the scores mean nothing; equality between runners is what counts",
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        name = _device_name(args.device).replace(" ", "_")
        stem = out_dir / (f"vbench_scoring_{name}_{now:%Y%m}" + (f"_{args.tag}" if args.tag else ""))
        from tokentrim.report.atomic_io import write_text_atomic

        write_text_atomic(stem.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
        lines = [
            f"# VBench scoring on stand-in weights ({record['device_name']}, {now:%Y-%m-%d})", "",
            f"{videos} videos x {args.num_frames} frames at {args.height}x{args.width}, {args.fps} fps; {len(dims)} "
            f"dimensions, {units} (file, dimension) units. Ours: {args.workers} processes on one {args.device}. "
            f"Stand-in weights: the scores mean nothing; equality is what counts.", "",
            f"**Videos per minute over all dimensions: ours {record['ours_videos_per_min']:.2f}, vbench evaluate "
            f"{record['vbench_videos_per_min']:.2f} ({record['speedup']:.2f}x)**; ours {ours_s:.1f} s (passes "
            f"{' / '.join(f'{t:.1f}' for t in record['ours_passes_s'])} s), vbench {total_vbench:.1f} s. Stand-ins written "
            f"in {standin_s:.1f} s (not counted).", "",
            "| dimension | units | vbench s | vbench s/unit | max abs diff | bit-equal units |",
            "|---|---|---|---|---|---|",
        ]
        lines += [f"| {p['dimension']} | {p['units']} | {p['vbench_s']:.2f} | {p['vbench_s_per_unit']:.3f} | "
                  f"{p['max_abs_diff']:.3g} | {p['units_bit_equal']:g}/{p['units']} |" for p in per_dim]
        lines += ["", "Not ready: " + ("; ".join(not_ready.values()) or "none"), "",
                  "Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()), ""]
        write_text_atomic(stem.with_suffix(".md"), "\n".join(lines))
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
