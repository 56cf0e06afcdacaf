"""One case at a time: read its files, put every MR on the iUS grid, then per pair register, write, log, QC.

`process_case` runs for either layout; its arrays are freed when it returns, before the next case is read
(in line) or as soon as its writes are done (I/O overlapping the model, interfaces/background_io.py).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import Future
from dataclasses import dataclass

from interfaces import conventions as cv
from interfaces import logs
from interfaces.background_io import BackgroundIO
from interfaces.images import InputError, LoadedImage, onto_grid, read_images
from interfaces.logs import log, one_line


@dataclass
class RunContext:
    """What every case of a run shares."""
    io: BackgroundIO
    registration: object      # runner.model_loader.LazyRegistration
    writer: object            # a layout's field writer (runner/layouts.py)
    output_dir: str
    qc_dir: str | None
    overlap: str              # auto | on | off


@dataclass
class PairOutcome:
    label: str
    timings_key: str | None
    timings: dict | None      # its timings.json entry (seconds per stage, safety net); None: the pair failed


def finished(outcome: PairOutcome) -> Future:
    """An outcome known now, as a Future like the writer's."""
    future: Future = Future()
    future.set_result(outcome)
    return future


def read_case(paths: dict[int, str]) -> tuple[dict, float]:
    """Every file of a case read at once (threads): (modality -> LoadedImage or the InputError it raised,
    seconds). Returns its seconds rather than filling a timer: it may run on the read-ahead thread."""
    roles = {m: "iUS (fixed) image" if m == cv.FIXED_INDEX else f"{cv.MODALITIES[m]} image" for m in paths}
    t0 = time.perf_counter()
    images = read_images({m: (p, roles[m], m == cv.FIXED_INDEX) for m, p in paths.items()})
    return images, time.perf_counter() - t0


def describe(image: LoadedImage) -> str:
    g = image.grid
    return (f"{os.path.basename(image.path)} {'x'.join(map(str, g.shape))} @ "
            f"{'x'.join(f'{s:.3g}' for s in g.spacing)} mm")


def mr_on_fixed_grid(fixed: LoadedImage, images: dict, timer: logs.Timer, label: str) -> dict:
    """Every MR of the case on the fixed grid: modality -> array, or the InputError reading/resampling raised."""
    movings = {}
    for modality, image in sorted(images.items()):
        if modality == cv.FIXED_INDEX:
            continue
        name = cv.MODALITIES[modality]
        if isinstance(image, InputError):
            movings[modality] = image
            continue
        try:
            with timer("read"):
                array, resampled = onto_grid(image, fixed, f"{name} image")
        except InputError as exc:
            movings[modality] = exc
            continue
        if resampled:
            log.info("%s: %s on another grid (%s), resampled onto the iUS grid (identity, linear, 0 outside)",
                     label, name, describe(image))
        movings[modality] = array
    return movings


def model_inputs(mr_arrays: dict, target: int, label: str) -> dict[str, object]:
    """The model's `moving` dict for one target: the target must be readable, the others are optional."""
    if isinstance(mr_arrays.get(target), InputError):
        raise mr_arrays[target]
    usable = {}
    for modality, value in mr_arrays.items():
        if isinstance(value, InputError):
            log.warning("%s: extra sequence not used: %s", label, value)
        else:
            usable[cv.MODALITIES[modality]] = value
    return usable


def decide_overlap(run: RunContext) -> None:
    """Overlap I/O with the model when asked to, or (auto) when the model runs on CUDA; auto loads the model,
    which happens only once a case's iUS was read (bad-input-only runs never load it)."""
    if run.io.decided:
        return
    run.io.start(run.overlap == "on" or (run.overlap == "auto" and run.registration.on_cuda))
    if run.io.overlapping:
        log.info("I/O overlaps the registration: next case read ahead, fields written behind")


def register_pair(run: RunContext, fixed: LoadedImage, movings: dict, target: int, timer: logs.Timer):
    registration = run.registration.get()  # the model load is the run's cost (logged, timings.json)
    logs.reset_cuda_peak()
    with timer("register"):
        result = registration.register(fixed=fixed.array, moving=movings, spacing=fixed.grid.spacing,
                                       target=cv.MODALITIES[target])
    cv.check_voxel_field(result.displacement, fixed.grid.shape)
    return result


def write_pair(job: dict) -> PairOutcome:
    """Write one pair's field (atomic), log it, draw its QC. Runs on the write-behind thread when I/O overlaps."""
    pair, timer, result = job["pair"], job["timer"], job["result"]
    try:
        with timer("write"):
            job["write_field"](pair.output_path, result.displacement)
    except Exception as exc:  # noqa: BLE001 - one pair's failure must not stop the others
        log.error("FAILED %s: cannot write %s: %s: %s", pair.label, os.path.basename(pair.output_path),
                  type(exc).__name__, one_line(exc))
        remove_stale(pair.output_path, pair.label, job["output_dir"])
        return PairOutcome(pair.label, pair.timings_key, None)
    seconds = dict(timer.seconds, total=sum(timer.seconds.values()))
    written = os.path.relpath(pair.output_path, job["output_dir"])
    # the memory summary was taken right after the registration: now it could show the next pair's CUDA peak
    log.info("%s%s: wrote %s | device %s | %s | model stages: %s | %s", pair.progress_text(), pair.label,
             written, getattr(result, "device", "?"), logs.fmt_seconds(seconds),
             logs.fmt_seconds(getattr(result, "stage_seconds", {}) or {}), job["memory"])
    safety = safety_report(pair.label, result)
    write_qc(job["qc_dir"], pair.qc_name, job["fixed"], job["moving"], result.displacement)
    # microseconds: a small field is written in under a millisecond, which must not read as 0 s
    return PairOutcome(pair.label, pair.timings_key, {"seconds": round(seconds["total"], 6),
                                                      **{k: round(seconds[k], 6) for k in ("read", "register", "write")},
                                                      **model_stages(result), **safety})


def model_stages(result) -> dict:
    """The model's seconds per stage for timings.json (a stand-in model without them reports nothing)."""
    stages = getattr(result, "stage_seconds", None)
    return {"model_stages": {k: round(float(v), 6) for k, v in stages.items()}} if stages else {}


def safety_report(label: str, result) -> dict:
    """The safety net's answer for timings.json, and a WARNING when the field written is not the pair's own
    result (a model without a safety net, e.g. a benchmark's stand-in, reports nothing)."""
    action = getattr(result, "safety", None)
    if action is None:
        return {}
    reason = getattr(result, "safety_reason", "")
    if action == "fused":  # the normal path with both sequences (late fusion): not a warning
        log.info("%s: safety net: %s", label, reason)
    elif action != "kept":
        log.warning("%s: safety net: wrote %s instead of its own result: %s", label, action, reason)
    report = {"safety": action, **({"safety_reason": reason} if reason else {})}
    for key in ("evidence_ratio", "identity_evidence_ratio"):  # the match's cost against chance (model/evidence.py)
        value = getattr(result, key, None)
        if value is not None:
            report[key] = round(float(value), 4)
    rms, gain = getattr(result, "shift_rms_mm", None), getattr(result, "gain", 1.0)
    if rms is not None:
        report.update(shift_rms_mm=round(float(rms), 4), gain=round(float(gain), 4))
        if gain < 1.0 and action != "identity":  # the identity written: no field to scale
            kind = "the two sequences' fused field" if action == "fused" else "a field from one MR sequence"
            log.warning("%s: small shift: the field moves the fan by %.2f mm rms, within the matching's own "
                        "error on real iUS for %s; written x%.2f toward the identity", label, rms, kind, gain)
    return report


def write_qc(qc_dir: str | None, name: str, fixed: LoadedImage, moving, displacement) -> None:
    if not qc_dir:
        return
    try:
        from interfaces.qc import write_qc as draw

        os.makedirs(qc_dir, exist_ok=True)
        draw(os.path.join(qc_dir, name), fixed.array, moving, displacement)
    except Exception as exc:  # noqa: BLE001 - a QC picture never fails a case
        log.warning("QC picture %s not written: %s", name, one_line(exc))


def remove_stale(path: str, label: str, output_dir: str) -> None:
    """A pair that failed in this run keeps no field from an earlier run under its name (it would be scored as
    this run's answer); logged. A folder in that place is left alone (the write error names it)."""
    if os.path.isfile(path) or os.path.islink(path):
        try:
            os.unlink(path)
        except OSError as exc:
            log.warning("%s: cannot remove %s left by an earlier run: %s", label, os.path.relpath(path, output_dir),
                        one_line(exc))
            return
        log.warning("%s: removed %s left by an earlier run (this run has no field for it)", label,
                    os.path.relpath(path, output_dir))


def failed_pairs(run: RunContext, pairs) -> list:
    """PairOutcomes of pairs that failed together (e.g. their case's iUS), their stale fields removed."""
    for pair in pairs:
        remove_stale(pair.output_path, pair.label, run.output_dir)
    return [finished(PairOutcome(p.label, p.timings_key, None)) for p in pairs]


def failed_outcome(run: RunContext, pair, exc: BaseException) -> PairOutcome:
    if isinstance(exc, InputError):
        log.error("FAILED %s: %s", pair.label, exc)
    else:  # an unexpected error: its traceback goes to the log
        log.exception("FAILED %s: %s: %s", pair.label, type(exc).__name__, one_line(exc))
    remove_stale(pair.output_path, pair.label, run.output_dir)
    return PairOutcome(pair.label, pair.timings_key, None)


def process_pair(run: RunContext, pair, fixed: LoadedImage, mr_arrays: dict, read_seconds: float, write_field):
    """Register one pair and hand its field to the writer: a Future of its PairOutcome."""
    timer = logs.Timer()
    timer.seconds["read"] = read_seconds
    try:
        movings = model_inputs(mr_arrays, pair.target, pair.label)
        result = register_pair(run, fixed, movings, pair.target, timer)
    except Exception as exc:  # noqa: BLE001 - one pair's failure must not stop the others
        return finished(failed_outcome(run, pair, exc))
    return run.io.write(write_pair, {
        "pair": pair, "timer": timer, "result": result, "fixed": fixed, "write_field": write_field,
        "moving": movings[cv.MODALITIES[pair.target]], "output_dir": run.output_dir, "qc_dir": run.qc_dir,
        "memory": logs.memory_summary()})


def process_case(run: RunContext, case, images_future, read_ahead) -> list:
    """One case: its images (read ahead or now), every pair registered, each field handed to the writer.
    Returns the Futures of its PairOutcomes."""
    try:
        images, read_seconds = (images_future or run.io.read(read_case, case.files)).result()
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory while reading: this case only
        log.exception("FAILED %s: %s: %s", case.label, type(exc).__name__, one_line(exc))
        return failed_pairs(run, case.pairs)
    fixed = images[cv.FIXED_INDEX]
    if isinstance(fixed, InputError):
        log.error("FAILED %s: %s", case.label, fixed)
        return failed_pairs(run, case.pairs)
    log.info("%s: iUS %s", case.label, describe(fixed))
    decide_overlap(run)
    read_ahead()  # the next case reads while this one registers (overlap), else nothing happens yet
    case_timer = logs.Timer()
    case_timer.seconds["read"] = read_seconds
    mr_arrays = mr_on_fixed_grid(fixed, images, case_timer, case.label)
    del images
    write_field = run.writer.for_case(fixed)
    share = case_timer.seconds["read"] / len(case.pairs)  # the case's reads, shared by its pairs
    return [process_pair(run, pair, fixed, mr_arrays, share, write_field) for pair in case.pairs]
