"""`scores.csv` (one row per video x clip x dimension) and the per-unit score cache.

Several processes may write one `scores.csv` at once (two `tokentrim score` on one run directory, `scorer.num_shards`
processes, `scorer.num_workers` processes). Each process keeps only the rows IT produced, and every flush is a
read-merge-write of the file on disk under an exclusive `fcntl.flock`:

    lock <dir>/.<name>.lock -> read scores.csv -> drop stale rows of the (video, dimension) pairs this process claimed
    -> put this process's rows -> write a temp file + os.replace -> unlock

so a flush never erases rows another process wrote in between (the old design rewrote the file from one process's
memory and lost them). A lock, rather than per-process part files merged at the end, because readers (`tokentrim
report`, a resumed run) then see one complete `scores.csv` at every moment, and a killed process leaves nothing to
merge. The lock file exists only while held: the holder unlinks it before unlocking, and a waiter that wakes on an
unlinked file retries on the new one (the inode check in `scores_lock`). `flock` works on local file systems and on
NFS (emulated with POSIX locks); Lustre needs the `flock` mount option.

Claims: `claim(video, dimension, clips)` declares that this process (re)scores that pair with exactly these clip
indices. At a flush, disk rows of a claimed pair with another clip index are stale (an earlier clip protocol, a
regenerated video of another length) and are dropped; disk rows of a claimed clip this process has not produced yet are
kept (another process may have scored it), so an unfinished process never erases a finished one's rows.

Cache: one JSON file per unit key under `score_cache_dir/<key[:2]>/<key>.json`, written atomically; shared across
runs and processes (a unit two processes score at once is written twice with the same value).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from tokentrim.report.atomic_io import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "SCORES_COLUMNS",
    "ScoresStore",
    "ScoreCache",
    "merge_rows",
    "read_scores",
    "scores_lock",
    "write_scores",
]

SCORES_COLUMNS: tuple[str, ...] = (
    "video", "clip", "dimension", "score", "error", "scorer", "content_hash",
    "raw_score", "protocol", "frame_start", "frame_end", "device", "vbench_version", "path",
    # the clip file vbench scored (VBench-Long clip protocol); empty when `path` itself was scored (clip = -1).
    "clip_path",
    # VBench-Long options (empty when off): scene index; slow-fast branches of a fused row.
    "scene", "inclip_score", "clip2clip_score", "mapped_clip2clip_score",
)

RowKey = tuple[str, int, str]  # (video, clip, dimension)


def row_key(row: Mapping) -> RowKey:
    return (str(row["video"]), int(row["clip"]), str(row["dimension"]))


def read_scores(path: str | os.PathLike) -> list[dict]:
    """Rows of a scores.csv with `clip` as int and `score`/`raw_score` as float (NaN when empty)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            row["clip"] = int(row["clip"])
            for key in ("score", "raw_score"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
            rows.append(row)
    return rows


def _cell(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def write_scores(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    """Rewrite scores.csv atomically (`atomic_io.write_text_atomic`), rows sorted by (video, dimension, clip)."""
    ordered = sorted(rows, key=lambda row: (str(row["video"]), str(row["dimension"]), int(row["clip"])))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SCORES_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in ordered:
        writer.writerow({key: _cell(row.get(key, "")) for key in SCORES_COLUMNS})
    write_text_atomic(path, buffer.getvalue())


@contextlib.contextmanager
def scores_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive flock on `<dir>/.<name>.lock` (module docstring); the file is removed before unlocking."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder unlinked this file after we opened it: lock the current one
                continue
            try:
                yield
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_path)
            return
        finally:
            os.close(fd)  # also releases the flock


def merge_rows(path: str | os.PathLike, rows: Iterable[Mapping], *,
               drop: Callable[[Mapping], bool] = lambda row: False) -> int:
    """Under the lock: read `path`, remove rows where `drop(row)`, put `rows` (same key = replaced), write atomically.

    Returns the number of rows in the file after the merge.
    """
    path = Path(path)
    with scores_lock(path):
        merged: dict[RowKey, Mapping] = {}
        if path.is_file():
            for row in read_scores(path):
                if not drop(row):
                    merged[row_key(row)] = row
        for row in rows:
            merged[row_key(row)] = row
        write_scores(path, list(merged.values()))
        return len(merged)


class ScoresStore:
    """This process's rows for one scores.csv, merged into the file under the lock at every `flush`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.rows: dict[RowKey, dict] = {}  # rows this process produced
        self._claims: dict[tuple[str, str], set[int]] = {}  # (video, dimension) -> clip indices this process writes

    def claim(self, video: str, dimension: str, clips: Iterable[int]) -> None:
        """This process writes exactly `clips` for (video, dimension); other clip rows of the pair are stale."""
        self._claims[(video, dimension)] = {int(clip) for clip in clips}
        for key in [key for key in self.rows if key[0] == video and key[2] == dimension and key[1] not in
                    self._claims[(video, dimension)]]:
            del self.rows[key]

    def put(self, row: dict) -> None:
        self.rows[row_key(row)] = row

    def rows_of(self, video: str, dimension: str) -> list[dict]:
        """This process's rows of (video, dimension), by clip index."""
        return sorted((row for key, row in self.rows.items() if key[0] == video and key[2] == dimension),
                      key=lambda row: int(row["clip"]))

    def _stale(self, row: Mapping) -> bool:
        clips = self._claims.get((str(row["video"]), str(row["dimension"])))
        return clips is not None and int(row["clip"]) not in clips

    def flush(self) -> None:
        merge_rows(self.path, list(self.rows.values()), drop=self._stale)


class ScoreCache:
    """Per-unit results: `<root>/<key[:2]>/<key>.json`, written atomically; unreadable entries count as absent."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            logger.warning("ignoring unreadable score cache entry %s", path)
            return None

    def put(self, key: str, value: Mapping) -> None:
        write_text_atomic(self.path(key), json.dumps(dict(value), sort_keys=True))
