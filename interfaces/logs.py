"""Logging with stage timers and peak memory (no torch import here).

INFO (and below) goes to stdout, `<time> INFO <message>`; WARNING and ERROR go to stderr, `WARNING: <message>`
/ `ERROR: <message>` (the evaluation's format): the platform shows a failed job's last non-empty stderr line,
so runner/run.py ends a failing run with one ERROR line that names every failure (`failure_line`) and a
successful run that warned with a WARNING line that says it finished (never an error line).
"""
from __future__ import annotations

import logging
import re
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

LOGGER_NAME = "remind2reg"
log = logging.getLogger(LOGGER_NAME)
FAILED_PREFIX = "FAILED"  # every failure is logged as `FAILED <label>: <why>` (or `FAILED: <why>`)


@dataclass
class RunRecord:
    """What the log saw since `setup()`: stderr lines, and each failure as (label, why) in order."""
    warnings: int = 0
    errors: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


class _SplitHandler(logging.Handler):
    """INFO -> whatever sys.stdout is at the time (pytest's capture replaces it), with a timestamp;
    WARNING/ERROR -> sys.stderr as `LEVEL: message`. Records every failure line for the run's last line."""

    def __init__(self):
        super().__init__()
        self.record = RunRecord()
        self.info_format = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        self.problem_format = logging.Formatter("%(levelname)s: %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno < logging.WARNING:
                stream, text = sys.stdout, self.info_format.format(record)
            else:
                stream, text = sys.stderr, self.problem_format.format(record)
                self._note(record)
            stream.write(text + "\n")
            stream.flush()
        except Exception:  # pragma: no cover - logging must never break a run
            self.handleError(record)

    def _note(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:
            self.record.warnings += 1
            return
        self.record.errors += 1
        message = record.getMessage()
        if message.startswith(FAILED_PREFIX):
            label, _, why = message[len(FAILED_PREFIX):].partition(": ")
            self.record.failures.append((label.strip(), one_line(why)))


def _handler() -> _SplitHandler | None:
    return next((h for h in log.handlers if isinstance(h, _SplitHandler)), None)


def setup(level: int = logging.INFO) -> logging.Logger:
    """One stdout/stderr handler (idempotent); starts a new RunRecord."""
    handler = _handler()
    if handler is None:
        handler = _SplitHandler()
        log.addHandler(handler)
    handler.record = RunRecord()
    log.setLevel(level)
    log.propagate = False
    return log


def run_record() -> RunRecord:
    """What was logged to stderr since the last `setup()`."""
    handler = _handler()
    return handler.record if handler is not None else RunRecord()


def failure_line(failures: list[tuple[str, str]], counts: str, limit: int = 12, width: int = 240) -> str:
    """One line for the end of a failing run: `<counts>: <label>: <why>; ...` (each reason cut to `width`
    characters, at most `limit` listed, then `... and N more`)."""
    items = []
    for label, why in failures[:limit]:
        why = shorten(why, width)
        items.append(f"{label}: {why}" if label else why)
    more = f"; ... and {len(failures) - limit} more (see the lines above)" if len(failures) > limit else ""
    return f"{counts}: {'; '.join(items)}{more}" if items else counts


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


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut after a whole word (then "..."), never inside one."""
    if len(text) <= width:
        return text
    cut = text[:width - 2].rfind(" ")  # the kept text ends with the word before that space
    return (text[:cut] if cut > width // 2 else text[:width - 3]) + "..."


# SimpleITK's text for an ITK exception: `Exception thrown in SimpleITK <call>: <source>.cxx:99:
# sitk::ERROR: <reason>` or `... ITK ERROR: <Class>(0x55d0...): <reason>`: the reason is the part a user reads
_ITK_PREFIX = re.compile(r"(?:sitk::|ITK )ERROR: (?:\w+\(0x[0-9a-fA-F]+\): )?")


def itk_reason(text: str) -> str:
    """The reason in an ITK/SimpleITK error text, without its source-file location and object address;
    any other text as it is (on one line)."""
    text = " ".join(text.split())
    matches = list(_ITK_PREFIX.finditer(text))
    return text[matches[-1].end():] if matches and matches[-1].end() < len(text) else text


def fmt_seconds(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items())


def fmt_duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 2 h 07 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """`[k/N, about T left] ` for the k-th of N items done: T from the pace of the items since the first one
    done (the first may carry a model load), or from the elapsed time while only one is done."""

    def __init__(self, total: int, clock=time.perf_counter):
        self.total, self.clock = total, clock
        self.started = clock()
        self.first: tuple[int, float] | None = None  # (k, time) of the first item reported

    def text(self, k: int) -> str:
        now = self.clock()
        if self.first is None or k <= self.first[0]:
            self.first = self.first or (k, now)
            pace = (now - self.started) / max(k, 1)
        else:
            pace = (now - self.first[1]) / (k - self.first[0])
        left = self.total - k
        return f"[{k}/{self.total}, about {fmt_duration(pace * left)} left] " if left > 0 else f"[{k}/{self.total}] "
