"""Environment record written beside every result (`env.json`).

House rule 13: every number in `results/` carries the versions, device, git sha and date it came from. This module
collects them at run time (never at import time) and writes them atomically.

`env.json` keys (all present; a value that cannot be determined is `null`):
    python, platform, hostname, date_utc (ISO 8601, seconds), seed,
    device (as passed, e.g. "cuda:0" or "cpu"), device_name (GPU name for CUDA devices, else "cpu (<processor>)"),
    cpu_count, torch, cuda (torch.version.cuda), cudnn, gpu_name, gpu_driver, gpu_count,
    packages ({distribution name: version or null}), git_sha, git_dirty, git_root,
    plus any extra keys given to `write_env_json`.

Reports compare `device_name` to decide whether two runs' wall times are comparable (`tokentrim.report.tables`).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tokentrim.report.atomic_io import write_json_atomic

logger = logging.getLogger(__name__)

TRACKED_PACKAGES: tuple[str, ...] = (
    "torch",
    "torchvision",
    "vbench",
    "transformers",
    "diffusers",
    "hydra-core",
    "omegaconf",
    "wandb",
    "numpy",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (importlib.metadata; no import of the package itself), null if absent."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _run_git(args: list[str], cwd: Path) -> str | None:
    """Output of `git <args>` in `cwd`, or None if git is missing or the command fails (not a repo, no commits)."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        completed = subprocess.run(
            [git, *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        logger.debug("git %s failed in %s: %s", " ".join(args), cwd, err)
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip()


def git_state(repo_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """`{"git_sha", "git_dirty", "git_root"}` of the repository holding `repo_dir` (default: this package's source).

    `git_sha` is null when git is absent, the directory is not a work tree, or the repo has no commit yet;
    `git_dirty` is true when `git status --porcelain` lists anything (untracked files included), null when unknown.
    """
    start = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent
    root = _run_git(["rev-parse", "--show-toplevel"], start)
    if root is None:
        return {"git_sha": None, "git_dirty": None, "git_root": None}
    sha = _run_git(["rev-parse", "HEAD"], start)
    status = _run_git(["status", "--porcelain"], start)
    return {"git_sha": sha, "git_dirty": None if status is None else bool(status), "git_root": root}


def _torch_info(device: str) -> dict[str, Any]:
    """torch / CUDA / cuDNN versions and the GPU behind `device` (lazy torch import; nulls if torch is missing)."""
    info: dict[str, Any] = {
        "torch": None, "cuda": None, "cudnn": None, "gpu_name": None, "gpu_count": 0, "gpu_driver": None,
    }
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if torch.cuda.is_available():
        info["gpu_count"] = torch.cuda.device_count()
        torch_device = torch.device(device)
        index = torch_device.index if torch_device.type == "cuda" and torch_device.index is not None else 0
        info["gpu_name"] = torch.cuda.get_device_name(index)
        info["gpu_driver"] = _nvidia_driver_version()
    return info


def _nvidia_driver_version() -> str | None:
    """Driver version reported by `nvidia-smi`, null if the tool is missing or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        completed = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = completed.stdout.strip().splitlines()
    return lines[0].strip() if completed.returncode == 0 and lines else None


def collect_env(
    device: str = "cpu",
    *,
    seed: int | None = None,
    repo_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Collect the environment record for a run on `device` (see module docstring for the keys).

    Args:
        device (`str`, default "cpu"): the torch device string the run used ("cpu", "cuda", "cuda:1").
        seed (`int | None`): the run's base seed, stored as is.
        repo_dir (`path | None`): a directory inside the git repo to describe; default: this package's source.
    """
    device = str(device)
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "device": device,
        "cpu_count": os.cpu_count(),
    }
    env.update(_torch_info(device))
    is_cuda = device.startswith("cuda") and env["gpu_name"] is not None
    env["device_name"] = env["gpu_name"] if is_cuda else f"cpu ({platform.processor() or platform.machine()})"
    env["packages"] = package_versions()
    env.update(git_state(repo_dir))
    return env


def write_env_json(
    path: str | os.PathLike,
    *,
    device: str = "cpu",
    seed: int | None = None,
    repo_dir: str | os.PathLike | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Collect the environment (`collect_env`), add `extra` keys (they win on clashes), write it atomically to `path`.

    Returns the dict written.
    """
    env = collect_env(device, seed=seed, repo_dir=repo_dir)
    env.update(extra)
    write_json_atomic(path, env)
    logger.info("wrote %s (device %s, git %s)", path, env["device_name"], env["git_sha"])
    return env
