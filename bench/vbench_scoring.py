"""VBench at full strength on stand-in weights: tokentrim's scorer vs vbench's own evaluate, every ready dimension.

Protocol (one process; both runners score exactly the same files, compared per (file, dimension) unit):
1. Stand-in weights of every family (`tokentrim.scoring.standins`: real architectures, seeded random weights, the
   published formats; **their scores mean nothing**) are written to a work folder; `check_dimensions` picks the
   dimensions that are ready there (GRiT needs detectron2).
2. Up to two video sets, each timed and compared on its own and summed overall:
   - the short set: `--num-videos` videos of `--num-frames` frames, scored under `--long-protocol` (auto: VBench-Long
     clips for videos >= 5 s; never: whole videos, VBench's standard path; always: clips);
   - the long set: `--long-videos` videos of `--long-frames` frames (481 = 30 s at 16 fps), always through clips.
   Synthetic moving-shape videos at `--height`x`--width`, `--fps`, named `<prompt>-0.mp4` after VBench suite prompts:
   half list `scene`, half `appearance_style` (the dimensions that need the suite's auxiliary_info). A bench prompt
   file (the suite's entries of those prompts, each listing every dimension but the other aux one) makes one scorer
   call per set score every video on every dimension it can, and is vbench's `full_info` too.
3. Per set, interleaved: ours, vbench, ours again (`--ours-passes 2`; cold score cache each time; ours first, since
   vbench reads the clip files ours cut):
   - **ours**: `tokentrim.scoring.score_videos` (one call, empty score cache, `--workers` processes pulling
     dimension-major tasks; clip cutting counted as ours).
   - **vbench**: `VBench(device, full_info, out).evaluate(..., local=True)` per dimension, in this process, one
     dimension after another, as a user runs it, on a folder holding exactly the files ours scored for it (each row's
     `clip_path` for a clip row, else its `path`): `custom_input` mode with the clip prompts in `prompt_list`, or
     `vbench_standard` for scene and appearance_style; their clip files (which `evaluate` refuses in custom_input mode
     and cannot find by name in standard mode) go through `compute_<dimension>` on a full_info json, the function
     `evaluate` calls.
4. Result per set and overall: per dimension the units, vbench seconds, max |ours - vbench| over both passes and the
   units equal bit for bit; ours' seconds overall (its workers run dimensions side by side); videos per minute both
   ways and the speedup. Also recorded: workers, torch threads per worker, vbench calls (tasks) per pass.

Writes bench/results/vbench_scoring_<device>_<yyyymm>[_<tag>].{json,md}. Usage (GPU), one set per call:
    PYTHONPATH=src python bench/vbench_scoring.py --device cuda --workers 8 --num-videos 20 --num-frames 81 \\
        --long-protocol never --long-videos 0 --tag short81
    PYTHONPATH=src python bench/vbench_scoring.py --device cuda --workers 8 --num-videos 0 --long-videos 2 \\
        --long-frames 481 --tag long481
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_config import with_config_defaults  # noqa: E402  (bench-only helper)

AUX_DIMENSIONS = ("scene", "appearance_style")


def build_parser() -> argparse.ArgumentParser:
    """The flags; their defaults are conf/bench/vbench_scoring.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-videos", type=int, help="short set size (0 = no short set)")
    parser.add_argument("--num-frames", type=int)
    parser.add_argument("--long-protocol", choices=["auto", "always", "never"], help="short set's clip protocol")
    parser.add_argument("--long-videos", type=int, help="long set size, scored through clips (0 = no long set)")
    parser.add_argument("--long-frames", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--fps", type=int)
    parser.add_argument("--device")
    parser.add_argument("--workers", type=int, help="our scorer's processes on the device")
    parser.add_argument("--dimensions", nargs="*", help="default: every dimension ready on the stand-ins")
    parser.add_argument("--ours-passes", type=int, choices=[1, 2], help="2 = ours, vbench, ours; 1 = ours, vbench")
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


def _bench_prompts(count: int) -> list[tuple[str, str]]:
    """(prompt, aux dimension) pairs: alternately a `scene` and an `appearance_style` prompt of the VBench suite."""
    from tokentrim.scoring.prompts import load_vbench_suite

    pools = {dim: [entry.prompt for entry in load_vbench_suite([dim])] for dim in AUX_DIMENSIONS}
    return [(pools[AUX_DIMENSIONS[k % 2]][k // 2], AUX_DIMENSIONS[k % 2]) for k in range(count)]


def _write_full_info(path: Path, prompts: list[tuple[str, str]], dims: list[str]) -> Path:
    """The bench's prompt file (VBench_full_info.json format): each prompt lists every bench dimension but the other
    aux one, with the suite's auxiliary_info. Both runners read it."""
    from tokentrim.scoring.prompts import auxiliary_info_for

    entries = [{"prompt_en": prompt, "dimension": [d for d in dims if d not in AUX_DIMENSIONS or d == aux],
                "auxiliary_info": {aux: auxiliary_info_for(prompt)[aux]}} for prompt, aux in prompts]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=1))
    return path


def _make_videos(folder: Path, prompts: list[tuple[str, str]], *, num_frames: int, height: int, width: int,
                 fps: int, seed0: int) -> list[Path]:
    """Moving-shape videos (`tests/vbench_direct.py`'s generator), `<prompt>-0.mp4`."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from concurrent.futures import ThreadPoolExecutor

    from vbench_direct import moving_shapes  # noqa: PLC0415  (the tests' deterministic video generator)

    from tokentrim import video_io

    paths = [folder / f"{prompt}-0.mp4" for prompt, _ in prompts]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # the encoder releases the GIL
        list(pool.map(lambda k: video_io.write_video(paths[k], moving_shapes(num_frames, height, width,
                                                                             seed=seed0 + k), fps=fps),
                      range(len(paths))))
    return paths


def _user_env(roots) -> dict[str, str]:
    return {"VBENCH_CACHE_DIR": str(roots.cache_dir), "TORCH_HOME": str(roots.torch_home), "HF_HOME": str(roots.hf_home),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def scored_file(row: dict) -> str:
    """The file our scorer gave vbench for a row: the clip file of a clip row, else the video."""
    return row["clip_path"] or row["path"]


def run_ours(paths: list[Path], dims: list[str], roots, *, full_info: Path, long_protocol: str, device: str,
             workers: int, work: Path) -> tuple[float, dict, int]:
    """Our scorer over one set (one call, cold cache); returns (seconds, {(video, clip, dim): row}, vbench calls)."""
    from tokentrim.scoring import read_scores, score_videos

    csv = work / "scores.csv"
    start = time.perf_counter()
    summary = score_videos(paths, scores_csv=csv, dimensions=dims, cache_dir=roots.cache_dir,
                           torch_home=roots.torch_home, hf_home=roots.hf_home, device=device,
                           score_cache_dir=work / "cache", chunk_size=10_000, num_workers=workers,
                           devices=[device] * workers, long_protocol=long_protocol, full_info_path=full_info,
                           prompt_protocol="standard")  # the bench prompt file: every dimension a prompt can take
    seconds = time.perf_counter() - start
    if summary.errors:
        raise RuntimeError(f"our scorer had {len(summary.errors)} error row(s), first: {summary.errors[0]}")
    rows = {(row["video"], row["clip"], row["dimension"]): row for row in read_scores(csv)}
    if len({(scored_file(row), row["dimension"]) for row in rows.values()}) != summary.num_rows:
        raise RuntimeError(f"{summary.num_rows} rows but not as many distinct (file, dimension) units")
    return seconds, rows, summary.vbench_calls


def run_vbench(dims: list[str], ours_rows: dict, *, full_info: Path, device: str,
               work: Path) -> tuple[dict, dict]:
    """vbench's own evaluate per dimension on exactly the files ours scored; in this process.
    Returns ({dim: seconds}, {(file, dim): raw value})."""
    import torch
    import vbench

    seconds: dict[str, float] = {}
    values: dict[tuple[str, str], float] = {}
    for dim in dims:
        files = {scored_file(row): row for (_, _, d), row in ours_rows.items() if d == dim}  # videos or clips
        if not files:
            continue
        out = work / dim
        folder = out / "videos"
        folder.mkdir(parents=True)
        for path in files:
            os.symlink(path, folder / Path(path).name)  # names are unique per dimension (`<video>[_NNN].mp4`)
        if len(os.listdir(folder)) != len(files):
            raise RuntimeError(f"{dim}: file names collide in {folder}")
        prompts = {Path(path).name: _prompt_of(row) for path, row in files.items()}
        clipped = any(int(row["clip"]) >= 0 for row in files.values())
        start = time.perf_counter()
        if dim in AUX_DIMENSIONS and clipped:
            results = _compute_direct(dim, folder, prompts, full_info=full_info, device=device, out=out)
        else:
            mode = "vbench_standard" if dim in AUX_DIMENSIONS else "custom_input"
            extra = {"prompt_list": prompts} if mode == "custom_input" and clipped else {}
            vbench.VBench(torch.device(device), str(full_info), str(out)).evaluate(  # as vbench's launcher
                videos_path=str(folder), name="direct", dimension_list=[dim], local=True, mode=mode, **extra)
            results = json.loads((out / "direct_eval_results.json").read_text())[dim][1]
        seconds[dim] = time.perf_counter() - start
        by_name = {Path(item["video_path"]).name: float(item["video_results"]) for item in results if "video_path" in item}
        for path in files:
            values[(path, dim)] = by_name.get(Path(path).name, math.nan)
    return seconds, values


def _prompt_of(row: dict) -> str:
    from tokentrim.scoring.prompts import prompt_from_video_name

    return prompt_from_video_name(Path(row["path"]).name)


def _compute_direct(dim: str, folder: Path, prompts: dict[str, str], *, full_info: Path, device: str,
                    out: Path) -> list[dict]:
    """`compute_<dim>` on a full_info json with the bench prompts' auxiliary_info, as `evaluate` calls it."""
    import importlib

    import torch
    import vbench.utils
    from tokentrim.scoring.prompts import auxiliary_info_for

    entries = [{"prompt_en": prompt, "dimension": [dim], "video_list": [str(folder / name)],
                "auxiliary_info": {dim: auxiliary_info_for(prompt, full_info_path=full_info)[dim]}}
               for name, prompt in sorted(prompts.items())]
    info = out / f"{dim}_full_info.json"
    info.write_text(json.dumps(entries))
    submodules = vbench.utils.init_submodules([dim], local=True, read_frame=False)[dim]
    compute = getattr(importlib.import_module(f"vbench.{dim}"), f"compute_{dim}")
    return compute(str(info), torch.device(device), submodules)[1]


def run_set(name: str, paths: list[Path], dims: list[str], roots, *, full_info: Path, long_protocol: str, args,
            work: Path) -> dict:
    """Ours, vbench, [ours again] on one set; the set's record (timings, per-dimension equality)."""
    ours_s, ours_rows, calls = [], [], []
    for index in range(args.ours_passes):
        if index == 1:  # interleaved: vbench between our two passes
            vbench_s, vbench_values = run_vbench(dims, ours_rows[0], full_info=full_info, device=args.device,
                                                 work=work / "vbench")
            print(f"[{name}] vbench: {sum(vbench_s.values()):.1f} s", flush=True)
        seconds, rows, num_calls = run_ours(paths, dims, roots, full_info=full_info, long_protocol=long_protocol,
                                           device=args.device, workers=args.workers, work=work / f"ours{index + 1}")
        ours_s.append(seconds)
        ours_rows.append(rows)
        calls.append(num_calls)
        print(f"[{name}] ours pass {index + 1}: {seconds:.1f} s, {num_calls} vbench calls", flush=True)
        if index == 0 and args.ours_passes == 1:
            vbench_s, vbench_values = run_vbench(dims, ours_rows[0], full_info=full_info, device=args.device,
                                                 work=work / "vbench")
            print(f"[{name}] vbench: {sum(vbench_s.values()):.1f} s", flush=True)
    if any(set(rows) != set(ours_rows[0]) for rows in ours_rows):
        raise RuntimeError(f"[{name}] our passes scored different (video, clip, dimension) units")
    per_dim = []
    for dim in dims:  # vbench read pass 1's files; pass 2 cut the same clips again (same frames, same bytes)
        keys = [key for key in ours_rows[0] if key[2] == dim]
        diffs = [[abs(float(rows[key]["raw_score"]) - vbench_values[(scored_file(ours_rows[0][key]), dim)])
                  for key in keys] for rows in ours_rows]
        flat = [d for pass_diffs in diffs for d in pass_diffs]
        per_dim.append({
            "dimension": dim, "units": len(keys), "vbench_s": vbench_s.get(dim, 0.0),
            "vbench_s_per_unit": vbench_s.get(dim, 0.0) / max(len(keys), 1),
            "max_abs_diff": max(flat) if flat else math.nan,
            "units_bit_equal": min(sum(d == 0.0 for d in pass_diffs) for pass_diffs in diffs),  # in every pass
            "units_nan": sum(math.isnan(d) for d in flat),
        })
    mean_ours = sum(ours_s) / len(ours_s)
    total_vbench = sum(vbench_s.values())
    return {
        "set": name, "videos": len(paths), "long_protocol": long_protocol, "units": len(ours_rows[0]),
        "ours_s": mean_ours, "ours_passes_s": ours_s, "vbench_calls_per_pass": calls, "vbench_s": total_vbench,
        "ours_videos_per_min": len(paths) / mean_ours * 60, "vbench_videos_per_min": len(paths) / total_vbench * 60,
        "speedup": total_vbench / mean_ours, "units_bit_equal": sum(p["units_bit_equal"] for p in per_dim),
        "per_dimension": per_dim,
    }


def _set_lines(item: dict, frames: int, args) -> list[str]:
    lines = [
        f"## {item['set']} set: {item['videos']} videos x {frames} frames, long_protocol={item['long_protocol']}", "",
        f"{item['units']} (file, dimension) units; vbench calls of ours per pass: "
        f"{' / '.join(map(str, item['vbench_calls_per_pass']))}.", "",
        f"**Videos per minute: ours {item['ours_videos_per_min']:.2f}, vbench evaluate "
        f"{item['vbench_videos_per_min']:.2f} ({item['speedup']:.2f}x)**; ours {item['ours_s']:.1f} s (passes "
        f"{' / '.join(f'{t:.1f}' for t in item['ours_passes_s'])} s), vbench {item['vbench_s']:.1f} s; bit-equal "
        f"units {item['units_bit_equal']}/{item['units']}.", "",
        "| dimension | units | vbench s | vbench s/unit | max abs diff | bit-equal units (every pass) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {p['dimension']} | {p['units']} | {p['vbench_s']:.2f} | {p['vbench_s_per_unit']:.3f} | "
              f"{p['max_abs_diff']:.3g} | {p['units_bit_equal']}/{p['units']} |" for p in item["per_dimension"]]
    return lines + [""]


def main() -> None:
    args = build_parser().parse_args()
    if args.num_videos < 0 or args.long_videos < 0 or args.num_videos + args.long_videos == 0:
        raise SystemExit(f"need --num-videos >= 0, --long-videos >= 0 and at least one video, got "
                         f"{args.num_videos} and {args.long_videos}")
    out_dir = Path(args.out_dir or Path(__file__).resolve().parent / "results")
    work = Path(tempfile.mkdtemp(prefix="tokentrim_vbench_bench_"))
    try:
        from tokentrim.scoring import check_dimensions
        from tokentrim.scoring.prompts import prompt_from_video_name
        from tokentrim.scoring.standins import standin_roots, write_standins
        from tokentrim.scoring.worker_pool import threads_per_worker

        t0 = time.perf_counter()
        standins = Path(args.standins_dir) if args.standins_dir else work / "standins"
        # as a user sets them, before anything imports vbench (vbench.utils reads VBENCH_CACHE_DIR at import)
        os.environ.update(_user_env(standin_roots(standins)))
        from tokentrim.scoring.totals import ALL_DIMENSIONS
        from tokentrim.scoring.weights import GRIT_DIMENSIONS

        has_detectron2 = importlib.util.find_spec("detectron2") is not None
        wanted = args.dimensions or [dim for dim in ALL_DIMENSIONS if has_detectron2 or dim not in GRIT_DIMENSIONS]
        roots = write_standins(standins, wanted)
        standin_s = time.perf_counter() - t0
        status = check_dimensions(args.dimensions, cache_dir=roots.cache_dir, torch_home=roots.torch_home,
                                  hf_home=roots.hf_home)
        dims = [name for name, item in status.items() if item.is_ready]
        not_ready = {name: item.one_line() for name, item in status.items() if not item.is_ready}
        prompts = _bench_prompts(args.num_videos + args.long_videos)
        full_info = _write_full_info(work / "bench_full_info.json", prompts, dims)
        t0 = time.perf_counter()
        sets = []  # (name, paths, long protocol, frames)
        if args.num_videos:
            sets.append(("short", _make_videos(work / "short", prompts[:args.num_videos], num_frames=args.num_frames,
                                               height=args.height, width=args.width, fps=args.fps, seed0=0),
                         args.long_protocol, args.num_frames))
        if args.long_videos:
            sets.append(("long", _make_videos(work / "long", prompts[args.num_videos:], num_frames=args.long_frames,
                                              height=args.height, width=args.width, fps=args.fps,
                                              seed0=args.num_videos), "always", args.long_frames))
        videos_s = time.perf_counter() - t0
        print(f"stand-ins {standin_s:.1f} s, videos {videos_s:.1f} s; dimensions {dims}; not ready {list(not_ready)}",
              flush=True)

        aux_of = dict(prompts)
        results = []
        for name, paths, protocol, _ in sets:  # an aux dimension only where a video of the set has its prompt
            set_aux = {aux_of[prompt_from_video_name(path.name)] for path in paths}
            set_dims = [dim for dim in dims if dim not in AUX_DIMENSIONS or dim in set_aux]
            results.append(run_set(name, paths, set_dims, roots, full_info=full_info, long_protocol=protocol,
                                   args=args, work=work / name))
        videos = sum(item["videos"] for item in results)
        ours_s = sum(item["ours_s"] for item in results)
        vbench_s = sum(item["vbench_s"] for item in results)
        units = sum(item["units"] for item in results)
        bit_equal = sum(item["units_bit_equal"] for item in results)
        now = dt.datetime.now(dt.timezone.utc)
        record = {
            "theme": "vbench_scoring", "date_utc": now.isoformat(timespec="seconds"), "device": args.device,
            "device_name": _device_name(args.device), "cpu_count": os.cpu_count(), "versions": _versions(),
            "config": vars(args), "dimensions": dims, "not_ready": not_ready, "standins_s": standin_s,
            "videos_s": videos_s, "num_workers": args.workers, "threads_per_worker": threads_per_worker(args.workers),
            "overall": {"videos": videos, "units": units, "units_bit_equal": bit_equal, "ours_s": ours_s,
                        "vbench_s": vbench_s, "ours_videos_per_min": videos / ours_s * 60,
                        "vbench_videos_per_min": videos / vbench_s * 60, "speedup": vbench_s / ours_s},
            "sets": results,
            "scores_note": "stand-in weights: the scores mean nothing; equality between runners is what counts",
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        name = _device_name(args.device).replace(" ", "_")
        stem = out_dir / (f"vbench_scoring_{name}_{now:%Y%m}" + (f"_{args.tag}" if args.tag else ""))
        from tokentrim.report.atomic_io import write_text_atomic

        write_text_atomic(stem.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
        overall = record["overall"]
        lines = [
            f"# VBench scoring on stand-in weights ({record['device_name']}, {now:%Y-%m-%d})", "",
            f"{len(dims)} dimensions at {args.height}x{args.width}, {args.fps} fps. Ours: {args.workers} processes "
            f"on one {args.device}, {record['threads_per_worker']} torch thread(s) each ({os.cpu_count()} cores), "
            f"dimension-major tasks. Stand-in weights: the scores mean nothing; equality is what counts. Stand-ins "
            f"written in {standin_s:.1f} s, videos in {videos_s:.1f} s (neither counted).", "",
            f"**Overall: {videos} videos, {units} units; videos per minute ours {overall['ours_videos_per_min']:.2f}, "
            f"vbench evaluate {overall['vbench_videos_per_min']:.2f} ({overall['speedup']:.2f}x); bit-equal units "
            f"{bit_equal}/{units}**", "",
        ]
        for item, (_, _, _, frames) in zip(results, sets):
            lines += _set_lines(item, frames, args)
        lines += ["Not ready: " + ("; ".join(not_ready.values()) or "none"), "",
                  "Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()), ""]
        write_text_atomic(stem.with_suffix(".md"), "\n".join(lines))
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
