"""The one atomic-write helper: normal permissions, no temp file left by an error, and a rerun removes the temp files
of killed writers (only theirs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokentrim.report import atomic_io
from tokentrim.report.atomic_io import (
    atomic_path,
    remove_stale_temps,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_files_get_the_permissions_of_open_under_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        text = write_text_atomic(tmp_path / "a.txt", "héllo")
        data = write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
        payload = write_json_atomic(tmp_path / "c.json", {"b": 1, "a": [1.5]})
    finally:
        os.umask(old)
    for path in (text, data, payload):
        assert path.stat().st_mode & 0o777 == 0o640, path  # 0o666 & ~0o027, not mkstemp's 0o600
    assert text.read_text(encoding="utf-8") == "héllo" and data.read_bytes() == b"\x00\x01"
    assert json.loads(payload.read_text()) == {"a": [1.5], "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json"]


def test_an_error_inside_the_write_leaves_no_temp_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "t.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_a_rerun_removes_only_the_temps_of_dead_writers_on_this_host(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: its temp files are orphans
    host = atomic_io._host()
    (tmp_path / "videos").mkdir()
    orphan = tmp_path / "videos" / f".a-0.tmp-{host}-{dead_pid}-x1y2.mp4"
    live = tmp_path / "videos" / f".b-0.tmp-{host}-{os.getpid()}-x1y2.mp4"
    remote = tmp_path / "videos" / f".c-0.tmp-otherhost-{dead_pid}-x1y2.mp4"  # another node of a shared filesystem
    unrelated = tmp_path / "videos" / ".hidden"
    for path in (orphan, live, remote, unrelated):
        path.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [orphan]
    assert not orphan.exists() and live.exists() and remote.exists() and unrelated.exists()
