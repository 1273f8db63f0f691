"""Shared helpers for the per-dimension VBench tests on stand-in weights (not a test module).

`write_clip_suite` writes two short moving-shape videos named the VBench way (`<prompt>-<seed>.mp4`): one of
`short_seconds` (whole-video protocol) and one of `long_seconds` >= 5 s (VBench-Long clip protocol).
`direct_evaluate` runs vbench's own `VBench(...).evaluate(...)` in a fresh Python process with the user's environment
variables pointing at the weight roots, exactly as a user would, and returns its per-video results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tokentrim import video_io
from tokentrim.scoring.weights import WeightRoots


def moving_shapes(num_frames: int, height: int, width: int, *, seed: int) -> np.ndarray:
    """[T, H, W, 3] uint8: a drifting colour gradient with a square that moves across it (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 4)
    colour = rng.uniform(0, 255, size=3)
    for t in range(num_frames):
        phase = t / max(num_frames - 1, 1)
        grad = base + 50.0 * np.sin(2 * np.pi * (xx / width + phase))[..., None]  # [H, W, 3]
        y0 = int((height - side) * (0.5 + 0.4 * np.sin(2 * np.pi * phase)))
        x0 = int((width - side) * phase)
        grad[y0:y0 + side, x0:x0 + side] = colour
        frames[t] = np.clip(grad, 0, 255).astype(np.uint8)
    return frames


def write_clip_suite(folder: Path, prompts: Sequence[str], *, fps: int = 8, short_seconds: float = 2.0,
                     long_seconds: float = 5.5, height: int = 96, width: int = 160) -> list[Path]:
    """Write `<prompt>-0.mp4` per prompt: the first short, every other one long (>= 5 s: clip protocol)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, prompt in enumerate(prompts):
        seconds = short_seconds if index == 0 else long_seconds
        frames = moving_shapes(int(round(seconds * fps)), height, width, seed=index)
        path = folder / f"{prompt}-0.mp4"
        video_io.write_video(path, frames, fps=fps)
        paths.append(path)
    return paths


def user_env(roots: WeightRoots, dimension: str) -> dict[str, str]:
    """The environment a user sets for vbench with these roots (offline, no downloads)."""
    env = dict(os.environ)
    env.update({"VBENCH_CACHE_DIR": str(roots.cache_dir), "TORCH_HOME": str(roots.torch_home),
                "HF_HOME": str(roots.hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONHASHSEED": "0"})
    if dimension == "motion_smoothness":  # vbench 0.1.5 torch.loads the AMT pickle; torch>=2.6 needs this (README)
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    return env


_DIRECT = r"""
import json, sys
import torch
from vbench import VBench
args = json.loads(sys.argv[1])
with torch.set_grad_enabled(args["grad"]):
    # a torch.device, as vbench's launcher (vbench/launch/evaluate.py) passes it
    VBench(torch.device(args["device"]), args["full_info"], args["out"]).evaluate(
        videos_path=args["videos"], name="direct", dimension_list=[args["dimension"]], local=True, mode=args["mode"],
        **({"prompt_list": args["prompt_list"]} if args["prompt_list"] else {}), **args["kwargs"])
"""


def direct_evaluate(videos: Path, dimension: str, roots: WeightRoots, out: Path, *, mode: str = "custom_input",
                    prompt_list: Mapping[str, str] | None = None, full_info: str | None = None, device: str = "cpu",
                    kwargs: Mapping | None = None, timeout: float = 3600, grad: bool = True) -> dict[str, float]:
    """{video path: per-video result} from `VBench(device, full_info, out).evaluate(videos, ...)` in a subprocess.

    `mode="vbench_standard"` needs `full_info` (the installed vbench's VBench_full_info.json by default) and videos
    named `<standard prompt>-<i>.mp4`. `grad=False` runs evaluate under `torch.no_grad()` (for the dimensions our
    scorer runs that way, `vbench_adapter.NO_GRAD_DIMENSIONS`).
    """
    if mode == "vbench_standard" and full_info is None:
        import vbench  # noqa: PLC0415  (only to find the shipped json)

        full_info = str(Path(vbench.__file__).parent / "VBench_full_info.json")
    args = {"device": device, "full_info": full_info, "out": str(out), "videos": str(videos), "dimension": dimension,
            "mode": mode, "prompt_list": dict(prompt_list or {}), "kwargs": dict(kwargs or {}), "grad": grad}
    proc = subprocess.run([sys.executable, "-c", _DIRECT, json.dumps(args)], env=user_env(roots, dimension),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"vbench evaluate failed for {dimension}:\n{proc.stderr[-4000:]}")
    results = json.loads((out / "direct_eval_results.json").read_text())[dimension][1]
    return {item["video_path"]: item["video_results"] for item in results if "video_path" in item}
