"""BackgroundWork: one worker thread, work in order, failures returned by drain."""

from __future__ import annotations

import threading
import time

from lightning_xai.monitor.background import BackgroundWork


def test_work_runs_in_order_on_one_other_thread_and_drain_waits_for_it():
    work, seen = BackgroundWork(), []

    def slow(index: int) -> None:
        time.sleep(0.01 * (3 - index))  # the first is the slowest: order comes from the single thread
        seen.append((index, threading.current_thread().name))

    for index in range(3):
        work.submit(lambda index=index: slow(index))
    assert work.drain() == []
    assert [index for index, _ in seen] == [0, 1, 2]
    assert {name for _, name in seen} == {seen[0][1]} and seen[0][1] != threading.current_thread().name
    work.close()


def test_a_failure_is_returned_once_and_the_work_after_it_still_runs():
    work, seen = BackgroundWork(), []
    work.submit(lambda: (_ for _ in ()).throw(OSError("disk full")))
    work.submit(lambda: seen.append("after"))
    (error,) = work.drain()
    assert isinstance(error, OSError) and str(error) == "disk full" and seen == ["after"]
    assert work.drain() == []  # reported once
    work.close()


def test_close_stops_the_thread_and_a_later_submit_starts_a_new_one():
    work, seen = BackgroundWork(), []
    work.submit(lambda: seen.append(threading.current_thread().name))
    assert work.close() == []
    assert not any(thread.name == seen[0] and thread.is_alive() for thread in threading.enumerate())
    work.submit(lambda: seen.append(threading.current_thread().name))
    assert work.close() == [] and len(seen) == 2
