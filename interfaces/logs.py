"""Logging to stdout with timestamps, stage timers and peak memory (no torch import here)."""
from __future__ import annotations

import logging
import resource
import sys
import time
from contextlib import contextmanager

LOGGER_NAME = "remind2reg"
log = logging.getLogger(LOGGER_NAME)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of the record (pytest's capture replaces it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def setup(level: int = logging.INFO) -> logging.Logger:
    """One stdout handler with timestamps (idempotent)."""
    if not any(getattr(h, "_remind2reg", False) for h in log.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handler._remind2reg = True
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    return log


class Timer:
    """Named stage durations in seconds: `with timer("read"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB); ru_maxrss is KiB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _torch_cuda():
    torch = sys.modules.get("torch")  # only when the model has imported it; never import torch here
    if torch is not None and torch.cuda.is_available():
        return torch
    return None


def reset_cuda_peak() -> None:
    torch = _torch_cuda()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()


def memory_summary() -> str:
    text = f"peak RSS {peak_rss_mb():.0f} MB"
    torch = _torch_cuda()
    if torch is not None:
        text += f", CUDA max allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MB"
    return text


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (the platform and the organisers read logs line by line)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def fmt_seconds(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items())
