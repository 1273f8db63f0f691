"""Shared helpers for the per-dimension VBench tests on stand-in weights (not a test module).

`write_clip_suite` writes two short moving-shape videos named the VBench way (`<prompt>-<seed>.mp4`): one of
`short_seconds` (whole-video protocol) and one of `long_seconds` >= 5 s (VBench-Long clip protocol).
`direct_evaluate` runs vbench's own `VBench(...).evaluate(...)` in a fresh Python process with the user's environment
variables pointing at the weight roots, exactly as a user would, and returns its per-video results; `DirectWorker` is
that process kept for several evaluate calls (one vbench import), running while the caller does other work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


def user_env(roots: WeightRoots, dimension: str = "") -> dict[str, str]:
    """The environment a user sets for vbench with these roots (offline, no downloads)."""
    env = dict(os.environ)
    env.update({"VBENCH_CACHE_DIR": str(roots.cache_dir), "TORCH_HOME": str(roots.torch_home),
                "HF_HOME": str(roots.hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONHASHSEED": "0"})
    env.update(dimension_env(dimension))
    return env


def dimension_env(dimension: str) -> dict[str, str]:
    """What one dimension adds to `user_env` (torch reads it at each `torch.load`, so a worker sets it per job)."""
    if dimension == "motion_smoothness":  # vbench 0.1.5 torch.loads the AMT pickle; torch>=2.6 needs this (README)
        return {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    return {}


# One Python process running vbench's evaluate for each job line on stdin; after each job it writes
# `<out>/direct_done.json` (ok, seconds, error). vbench is imported once per worker, not once per dimension.
_WORKER = r"""
import json, os, sys, time, traceback
import torch
from vbench import VBench
for line in sys.stdin:
    args = json.loads(line)
    saved = {key: os.environ.get(key) for key in args["env"]}
    os.environ.update(args["env"])
    start, error = time.perf_counter(), None
    try:
        with torch.set_grad_enabled(args["grad"]):
            # a torch.device, as vbench's launcher (vbench/launch/evaluate.py) passes it
            VBench(torch.device(args["device"]), args["full_info"], args["out"]).evaluate(
                videos_path=args["videos"], name="direct", dimension_list=[args["dimension"]], local=True,
                mode=args["mode"], **({"prompt_list": args["prompt_list"]} if args["prompt_list"] else {}),
                **args["kwargs"])
    except Exception:
        error = traceback.format_exc()[-4000:]
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    done = {"ok": error is None, "seconds": time.perf_counter() - start, "error": error}
    with open(os.path.join(args["out"], "direct_done.json"), "w") as handle:
        json.dump(done, handle)
"""


@dataclass
class DirectJob:
    """One `evaluate` a worker runs: its output folder (results + done marker) and dimension."""

    out: Path
    dimension: str


class DirectWorker:
    """vbench's own `VBench(...).evaluate(...)` in ONE fresh Python process with the user's environment (the weight
    roots; `dimension_env` per job), fed jobs one after another. `submit` returns at once, so the caller can score the
    next dimension with our scorer while vbench evaluates this one; `wait` returns a job's per-video results.
    The worker's stdout and stderr go to `log`."""

    def __init__(self, roots: WeightRoots, log: Path, *, timeout: float = 3600):
        self.timeout = timeout
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115  (closed in close())
        self._proc = subprocess.Popen([sys.executable, "-c", _WORKER], env=user_env(roots), stdin=subprocess.PIPE,
                                      stdout=self._log_file, stderr=subprocess.STDOUT, text=True)

    def submit(self, videos: Path, dimension: str, out: Path, *, mode: str = "custom_input",
               prompt_list: Mapping[str, str] | None = None, full_info: str | None = None, device: str = "cpu",
               kwargs: Mapping | None = None, grad: bool = True) -> DirectJob:
        """Queue `evaluate(videos, [dimension])` writing to `out`; arguments as `direct_evaluate`."""
        if mode == "vbench_standard" and full_info is None:
            import vbench  # noqa: PLC0415  (only to find the shipped json)

            full_info = str(Path(vbench.__file__).parent / "VBench_full_info.json")
        out.mkdir(parents=True, exist_ok=True)
        (out / "direct_done.json").unlink(missing_ok=True)
        args = {"device": device, "full_info": full_info, "out": str(out), "videos": str(videos),
                "dimension": dimension, "mode": mode, "prompt_list": dict(prompt_list or {}),
                "kwargs": dict(kwargs or {}), "grad": grad, "env": dimension_env(dimension)}
        self._proc.stdin.write(json.dumps(args) + "\n")
        self._proc.stdin.flush()
        return DirectJob(out=out, dimension=dimension)

    def wait(self, job: DirectJob) -> tuple[dict[str, float], float]:
        """({video path: per-video result}, seconds vbench took) of a submitted job, in submission order."""
        done_file = job.out / "direct_done.json"
        deadline = time.monotonic() + self.timeout
        while not done_file.exists():
            if self._proc.poll() is not None:
                raise AssertionError(f"vbench worker exited ({self._proc.returncode}) before {job.dimension}:\n"
                                     f"{self.log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"vbench evaluate of {job.dimension} took over {self.timeout:.0f} s")
            time.sleep(0.2)
        done = json.loads(done_file.read_text())
        if not done["ok"]:
            raise AssertionError(f"vbench evaluate failed for {job.dimension}:\n{done['error']}")
        results = json.loads((job.out / "direct_eval_results.json").read_text())[job.dimension][1]
        return {item["video_path"]: item["video_results"] for item in results if "video_path" in item}, done["seconds"]

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log_file.close()

    def __enter__(self) -> DirectWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def direct_evaluate(videos: Path, dimension: str, roots: WeightRoots, out: Path, *, mode: str = "custom_input",
                    prompt_list: Mapping[str, str] | None = None, full_info: str | None = None, device: str = "cpu",
                    kwargs: Mapping | None = None, timeout: float = 3600, grad: bool = True) -> dict[str, float]:
    """{video path: per-video result} from `VBench(device, full_info, out).evaluate(videos, ...)` in a fresh process.

    `mode="vbench_standard"` needs `full_info` (the installed vbench's VBench_full_info.json by default) and videos
    named `<standard prompt>-<i>.mp4`. `grad=False` runs evaluate under `torch.no_grad()` (for the dimensions our
    scorer runs that way, `vbench_adapter.NO_GRAD_DIMENSIONS`).
    """
    out.mkdir(parents=True, exist_ok=True)
    with DirectWorker(roots, out / "direct_worker.log", timeout=timeout) as worker:
        job = worker.submit(videos, dimension, out, mode=mode, prompt_list=prompt_list, full_info=full_info,
                            device=device, kwargs=kwargs, grad=grad)
        return worker.wait(job)[0]
