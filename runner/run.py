"""A whole run: settings, output folder, the layout's plan, every case, timings.json, the summary line."""
from __future__ import annotations

import os
import time

from interfaces import logs
from interfaces.background_io import BackgroundIO
from interfaces.images import check_writable, write_json_atomic
from interfaces.logs import log, one_line
from runner import cases, leftovers
from runner.cases import RunContext
from runner.layouts import plan
from runner.model_loader import LazyRegistration
from runner.settings import SetupError, config_label, load_model_config, read_settings

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2


def run(input_dir: str, output_dir: str, registration=None, sequences: str | None = None,
        qc_dir: str | None = None, write_timings: bool | None = None, shard: str | None = None) -> int:
    """Process a folder; return the exit code (0: every case ok, 1: any failure, 2: unusable setup).

    `registration`: any object with `.register(fixed=, moving=, spacing=, target=)` returning an object with
    `.displacement` (voxel field); None loads the project's model on first use.
    `sequences`: ceT1 | T2 | all; None reads $REMIND2REG_SEQUENCES (default all).
    `shard`: K/N; None reads the environment (runner/shards.py).
    The last stderr line of a failing run says why and names each failed case or pair (interfaces/logs.py).
    """
    logs.setup()
    t_run = time.perf_counter()
    try:
        settings, config, job = prepare(input_dir, output_dir, registration, sequences, write_timings, shard)
    except SetupError as exc:
        log.error("FAILED: %s", exc)
        return EXIT_SETUP
    for label, path in job.stale:  # cases that failed while planning (pairs that fail later: runner/cases.py)
        cases.remove_stale(path, label, output_dir)
    leftovers.sweep(job.scope, output_dir)  # what earlier runs left that this run answers for (or a WARNING)
    lazy = LazyRegistration(registration, config, config_label(settings.config_file, settings.config_source))
    context = RunContext(BackgroundIO(), lazy, job.writer, output_dir, qc_dir, settings.overlap)
    outcomes = run_cases(context, job.cases)
    if job.write_timings:
        write_timings_file(job, outcomes, lazy.load_seconds, output_dir)
    leftovers.timings_not_rewritten(job.scope, output_dir)
    return finish(job, outcomes, time.perf_counter() - t_run)


def prepare(input_dir, output_dir, registration, sequences, write_timings, shard):
    """Everything that can make the run impossible, checked before any work: (settings, the model config or
    None for an injected registration, the plan). Raises SetupError (exit 2) naming the setting or folder."""
    settings = read_settings(sequences=sequences, write_timings=write_timings, shard=shard)
    if not os.path.isdir(input_dir):
        what = "is a file, not a folder" if os.path.exists(input_dir) else "does not exist"
        raise SetupError(f"input folder {input_dir} {what}")
    # the project's model: its config read and checked once, now
    config = load_model_config(settings.config_file, settings.config_source) if registration is None else None
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as exc:
        raise SetupError(f"cannot create output folder {output_dir}: {one_line(exc)}") from None
    try:
        check_writable(output_dir)
    except OSError as exc:
        raise SetupError(f"output folder {output_dir} cannot be written: {one_line(exc)}") from None
    return settings, config, plan(input_dir, output_dir, settings)


def write_timings_file(job, outcomes: list, model_load_seconds: float | None, output_dir: str) -> None:
    """Seconds per written pair (and the model load): a side file, so a failure to write it is a warning."""
    timings = {o.timings_key: o.timings for o in outcomes if o.timings is not None and o.timings_key}
    if not timings:
        return
    extra = {} if model_load_seconds is None else {"model_load_seconds": round(model_load_seconds, 3)}
    try:
        write_json_atomic({"pairs": timings, **extra}, os.path.join(output_dir, job.timings_name))
    except (OSError, ValueError) as exc:  # the fields are written, the run goes on
        log.warning("%s not written: %s: %s", job.timings_name, type(exc).__name__, one_line(exc))


def finish(job, outcomes: list, seconds: float) -> int:
    """The summary line, then the exit status; a failing run's last stderr line names every failure."""
    failed = job.failed + [o.label for o in outcomes if o.timings is None]
    ok = sum(o.timings is not None for o in outcomes)
    per_pair = f" ({seconds / ok:.2f}s per written pair)" if ok else ""
    log.info("summary: %d ok, %d failed, total %.1fs%s, %s%s", ok, len(failed), seconds, per_pair,
             logs.memory_summary(), f" (failed: {', '.join(failed)})" if failed else "")
    pairs = sum(len(case.pairs) for case in job.cases)
    if failed:
        log.error(final_failure_line(job, outcomes, pairs))
        return EXIT_FAILED
    record = logs.run_record()
    if record.warnings or record.errors:  # the run's last stderr line must not read as a failure
        log.warning("finished, exit status 0: %d of %d pair(s) written, no failure (%d warning(s) above)",
                    ok, pairs, record.warnings)
    return EXIT_OK


def final_failure_line(job, outcomes: list, pairs: int) -> str:
    """`<n> of <N> pairs failed[, <m> case(s) ...]: <label>: <why>; ...` from the run's FAILED lines: the
    platform shows a failed job's last non-empty stderr line."""
    if job.no_case:  # nothing was there to fail: say that, not "1 case(s) not started"
        return f"run failed: {job.no_case}"
    failed_pairs = sum(o.timings is None for o in outcomes)
    counts = [f"{failed_pairs} of {pairs} pair(s) failed"] if pairs or failed_pairs else []
    if job.failed:
        counts.append(f"{len(job.failed)} {'job' if job.layout == 'grand-challenge' else 'case(s)'} not started")
    failures = logs.run_record().failures
    named = {label for label, _ in failures}
    for outcome in outcomes:  # a failure without its own FAILED line (should not happen): named anyway
        if outcome.timings is None and not any(outcome.label == label or outcome.label.startswith(label + " ")
                                               for label in named if label):
            failures.append((outcome.label, "failed (see the log)"))
    return logs.failure_line(failures, "run failed: " + ", ".join(counts))


def run_cases(context: RunContext, jobs: list) -> list:
    """Every case in order, the next one read ahead while this one registers when I/O overlaps; the
    PairOutcome of every pair once all writes are done."""
    reads, futures = {}, []

    def read_ahead_after(index):
        if index + 1 < len(jobs) and context.io.overlapping and index + 1 not in reads:
            reads[index + 1] = context.io.read(cases.read_case, jobs[index + 1].files)

    try:
        for index, job in enumerate(jobs):
            futures += cases.process_case(context, job, reads.pop(index, None), lambda: read_ahead_after(index))
    finally:
        context.io.close()
    return [future.result() for future in futures]
