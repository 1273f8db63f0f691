"""The background writer of `tokentrim generate`: tasks run in submission order, a failure is re-raised in the
caller naming the video (later tasks are dropped, never half-run), and the caller's own exception still lets the
queued videos finish."""

from __future__ import annotations

import threading
import time

import pytest

from tokentrim.video_writer import BackgroundWriter, WriterError


def test_tasks_run_in_submission_order_on_a_background_thread() -> None:
    done: list[tuple[str, str]] = []
    main = threading.current_thread().name
    with BackgroundWriter(depth=2) as writer:
        for i, delay in enumerate([0.05, 0.0, 0.02, 0.0]):  # slow and fast tasks: completion order is still FIFO
            writer.submit(f"v{i}", lambda i=i, delay=delay: (time.sleep(delay), done.append((f"v{i}", threading.current_thread().name))))
    assert [name for name, _ in done] == ["v0", "v1", "v2", "v3"]
    assert {thread for _, thread in done} == {"tokentrim-video-writer"} != {main}


def test_a_failed_write_is_raised_at_the_next_submit_naming_the_video_and_later_tasks_are_dropped() -> None:
    done: list[str] = []

    def fail() -> None:
        raise OSError("disk full")

    writer = BackgroundWriter(depth=1)
    writer.submit("a cat-0", fail)
    time.sleep(0.2)  # the writer has run it
    with pytest.raises(WriterError, match=r"writing video a cat-0 failed: OSError: disk full"):
        writer.submit("a cat-1", lambda: done.append("a cat-1"))
    with pytest.raises(WriterError, match="a cat-0"):
        writer.close()
    assert done == []


def test_a_failure_queued_behind_the_last_submit_is_raised_at_close() -> None:
    done: list[str] = []
    writer = BackgroundWriter(depth=2)
    writer.submit("first", lambda: (time.sleep(0.05), done.append("first")))
    writer.submit("second", lambda: 1 / 0)
    writer.submit("third", lambda: done.append("third"))
    with pytest.raises(WriterError, match="writing video second failed: ZeroDivisionError"):
        writer.close()
    assert done == ["first"]  # third was dropped: never written, so a rerun makes it


def test_the_callers_exception_propagates_after_the_queued_videos_are_written() -> None:
    done: list[str] = []
    with pytest.raises(KeyError, match="rollout"):
        with BackgroundWriter(depth=2) as writer:
            writer.submit("v0", lambda: (time.sleep(0.05), done.append("v0")))
            raise KeyError("rollout")
    assert done == ["v0"]


def test_depth_zero_writes_inline_and_raises_at_once() -> None:
    seen: list[str] = []
    writer = BackgroundWriter(depth=0)
    writer.submit("v0", lambda: seen.append(threading.current_thread().name))
    assert seen == [threading.current_thread().name]
    with pytest.raises(WriterError, match="writing video v1 failed: ValueError: bad"):
        writer.submit("v1", lambda: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError, match="video.writer_queue must be >= 0, got -1"):
        BackgroundWriter(depth=-1)
