"""The background writer of `tokentrim generate`: while the GPU generates video n+1, video n is encoded and its files
written (mp4, events, latents, meta LAST) on one background thread fed by a bounded queue.

One thread is enough: PyAV releases the GIL while libx264 encodes (and x264 runs its own threads), and the rest is
file I/O. Tasks run in submission order (FIFO), so outputs never depend on timing. `depth` bounds how many finished
videos (their uint8 frames in host memory) wait for the writer; `depth=0` writes inline in the caller (the serial path,
`video.writer_queue=0`).

Failures: a task's exception is kept, every later task is dropped (its video is not done: meta is written last, so a
rerun makes it again), and the exception is re-raised in the caller at the next `submit` or at `close`, naming the
video. Leaving the `with` block on the caller's own exception finishes the videos already queued (their frames are
complete) before the exception propagates; a kill -9 loses at most the queued videos, never leaves a file that counts
as done (every file is written atomically, meta last).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

_STOP = object()


class WriterError(RuntimeError):
    """A background write failed; raised in the generating process, naming the video."""


class BackgroundWriter:
    """Runs `submit`ted write tasks in order on one background thread (`depth` >= 1) or inline (`depth` = 0)."""

    def __init__(self, depth: int):
        if depth < 0:
            raise ValueError(f"video.writer_queue must be >= 0, got {depth}")
        self.depth = depth
        self._failure: tuple[str, BaseException] | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if depth:
            self._queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._work, name="tokentrim-video-writer", daemon=True)
            self._thread.start()

    def submit(self, name: str, task: Callable[[], None]) -> float:
        """Queue `task` (writes video `name`); returns the seconds the caller waited for a free slot. Raises
        WriterError if an earlier task failed."""
        self._raise_failure()
        if self._queue is None:
            self._run(name, task)
            self._raise_failure()
            return 0.0
        start = time.perf_counter()
        self._queue.put((name, task))  # blocks while `depth` videos are waiting
        return time.perf_counter() - start

    def close(self) -> None:
        """Wait for every queued task; raise WriterError if one failed."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put((None, _STOP))
            self._thread.join()
        self._raise_failure()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the caller failed: finish what is queued, but its own exception is the one that propagates
            self.close()
        except WriterError as err:
            logger.error("%s (while handling %s)", err, exc_type.__name__)

    def _work(self) -> None:
        while True:
            name, task = self._queue.get()
            if task is _STOP:
                return
            if self._failure is None:
                self._run(name, task)
            else:
                logger.warning("video %s not written: an earlier write failed (%s)", name, self._failure[0])

    def _run(self, name: str, task: Callable[[], None]) -> None:
        try:
            task()
        except BaseException as err:  # noqa: BLE001 -- handed to the caller's thread, re-raised there
            self._failure = (name, err)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            name, err = self._failure
            raise WriterError(f"writing video {name} failed: {type(err).__name__}: {err}") from err
