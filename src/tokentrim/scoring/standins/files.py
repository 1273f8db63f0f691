"""Writing stand-in files: seeded init, atomic writes, idempotent skips (shared by every family module).

A file is complete once it exists: it only ever appears through `os.replace` of a finished temp file in the same
folder, so a killed run leaves at most a `.<name>.*.tmp` file that no check mistakes for the real one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

__all__ = ["seeded", "write_atomic", "save_torch", "write_text", "copy_file"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """`torch.manual_seed(seed)` on a forked CPU RNG (the caller's RNG state is restored), default dtype fp32."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def write_atomic(path: Path, write: Callable[[Path], None]) -> bool:
    """`write(tmp)` then `os.replace(tmp, path)`; skip (False) when `path` already exists."""
    path = Path(path)
    if path.is_file():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return True


def save_torch(obj: object, path: Path) -> bool:
    """`torch.save(obj)` atomically (the zip container torch >= 1.6 writes, as the published checkpoints)."""
    return write_atomic(path, lambda tmp: torch.save(obj, tmp))


def write_text(text: str, path: Path) -> bool:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def copy_file(source: Path, path: Path) -> bool:
    return write_atomic(path, lambda tmp: shutil.copyfile(source, tmp))
