"""Atomic file writes, the one helper of the package: a temp file in the target directory, then `os.replace`.

A reader never sees half a file: it sees the old file, the new one, or nothing. The temp file is named
`.<stem>.tmp-<host>-<pid>-<random><suffix>` (dot-prefixed, so every reader that lists a directory skips it; the
suffix kept, so writers that pick a format from it, matplotlib or ffmpeg, still work). A process killed mid-write
leaves its temp file behind; `remove_stale_temps` deletes those whose writer (same host, pid gone) is dead, and the
generation stage calls it on every rerun. Final files get the permissions of an ordinary `open()`:
0o666 & ~umask (mkstemp alone makes them 0o600).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_TEMP_RE = re.compile(r"^\..*\.tmp-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:20] or "host"


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (else set and restored at once)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on normal exit move it onto `path`, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.stem[:40]}.tmp-{_host()}-{os.getpid()}-"  # <= 255 bytes with 4-byte characters
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp_name)
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write `payload` as indented, key-sorted JSON (non-JSON values via `str`) to `path` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def remove_stale_temps(directory: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Delete the temp files of `atomic_path` under `directory` whose writer is dead (this host, pid gone).

    Temp files of live processes, and of other hosts (a shared filesystem), are left alone. Returns what was removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    host, removed = _host(), []
    for path in directory.rglob(".*") if recursive else directory.glob(".*"):
        match = _TEMP_RE.match(path.name)
        if match is None or not path.is_file() or match["host"] != host or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    if removed:
        logger.info("removed %d temp file(s) left by killed writers under %s", len(removed), directory)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
