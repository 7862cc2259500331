"""One worker thread that draws and encodes a run's images while training goes on.

A run's images (map grids, filmstrips, outlines) take tens of milliseconds to draw and PNG-encode,
every run, inside the validation hook. During a fit the recorder hands that work to this worker,
so the next training epoch starts at once; the work runs in the order it was handed over (one
thread), and :meth:`BackgroundWork.drain` waits for all of it and returns what failed. The recorder
drains before its next run, at the end of the fit and before anything else it writes, so nothing is
lost or reordered; it only uses the worker where that is safe (TensorBoard's writer queues events
for its own thread; other loggers' clients are called from the hook's thread) and pays (a model on
an accelerator: on the CPU, training already uses every core, see
:func:`~lightning_xai.monitor.lifecycle.draw_in_background`).

Example:
    >>> work = BackgroundWork()
    >>> done = []
    >>> work.submit(lambda: done.append(1))
    >>> work.submit(lambda: 1 / 0)
    >>> work.submit(lambda: done.append(2))
    >>> [type(error).__name__ for error in work.drain()], done
    (['ZeroDivisionError'], [1, 2])
    >>> work.close()
    []
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["BackgroundWork"]


class BackgroundWork:
    """Runs submitted callables one after another on a single daemon-free worker thread."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []

    def submit(self, work: Callable[[], object]) -> None:
        """Queues ``work`` (its result is dropped; an exception it raises is returned by :meth:`drain`)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightning_xai-images")
        self._pending.append(self._executor.submit(_discard_result, work))

    def drain(self) -> list[BaseException]:
        """Waits for everything queued so far; the exceptions it raised, in order."""
        pending, self._pending = self._pending, []
        return [error for error in (future.exception() for future in pending) if error is not None]

    def close(self) -> list[BaseException]:
        """Drains, then stops the thread (a later :meth:`submit` starts a new one)."""
        errors = self.drain()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return errors


def _discard_result(work: Callable[[], object]) -> None:
    work()
