"""Case reads ahead and field writes behind the registration, on background threads.

On a GPU the model leaves the CPU idle while a 256^3 case is read and its field written on the CPU, which
takes the same order of time as the registration itself (docs/CONTAINER.md); overlapping them is what an
end-to-end 3 s per pair needs.
On the CPU the model already uses every core, so `auto` keeps I/O in line there (measured: docs/CONTAINER.md).

Bounded memory: at most one case is read ahead and one field waits to be written (`write` first waits for
the previous write), i.e. about one extra case and one extra field beyond the pair being registered.
Without overlap the same calls run at once on the caller's thread, so both modes share one code path.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

def _done(fn, *args) -> Future:
    """fn(*args) run now, as a finished Future (the in-line mode)."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as exc:  # noqa: BLE001 - handed to whoever asks for the result, as a thread would
        future.set_exception(exc)
    return future


class BackgroundIO:
    """`read(fn, ...)` and `write(fn, ...)` return Futures; threads only once `start(True)` was called."""

    def __init__(self):
        self._readers: ThreadPoolExecutor | None = None
        self._writers: ThreadPoolExecutor | None = None
        self._last_write: Future | None = None
        self.decided = False

    @property
    def overlapping(self) -> bool:
        return self._readers is not None

    def start(self, overlap: bool) -> None:
        """Decide once (callers decide when the model's device is known)."""
        if self.decided:
            return
        self.decided = True
        if overlap:
            self._readers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
            self._writers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-behind")

    def read(self, fn, *args) -> Future:
        return self._readers.submit(fn, *args) if self._readers else _done(fn, *args)

    def write(self, fn, *args) -> Future:
        if self._last_write is not None:
            self._last_write.exception()  # wait only: one field pending at most (the caller reads results)
        self._last_write = self._writers.submit(fn, *args) if self._writers else _done(fn, *args)
        return self._last_write

    def close(self) -> None:
        """Wait for every pending read and write."""
        for pool in (self._readers, self._writers):
            if pool is not None:
                pool.shutdown(wait=True)
        self._readers = self._writers = None
