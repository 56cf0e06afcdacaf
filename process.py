#!/usr/bin/env python
"""ReMIND2Reg algorithm entrypoint: iUS (fixed) <- pre-operative MR (moving) displacement fields.

No arguments: read /input, write /output (the containers' ENTRYPOINT). If <input>/inputs.json exists the
Grand Challenge layout is used (image sockets in, one DSPF .mha out), else the organisers' flat folder of
ReMIND2Reg_XXXX_000M files (disp_XXXX_0000_XXXX_000M.nii.gz out). Which MR sequences are registered:
$REMIND2REG_SEQUENCES = ceT1 | T2 | all (default all), baked into each image at build time.
$REMIND2REG_OVERLAP_IO = auto | 1 | 0: read the next case and write fields on background threads while the model
works (auto, the default: when the model runs on CUDA).
See README.md and docs/CONVENTIONS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

from interfaces import conventions as cv
from interfaces import cpus
from interfaces import grand_challenge as gc
from interfaces import logs
from interfaces import organisers as org
from interfaces.background_io import OVERLAP_ENV, BackgroundIO, overlap_mode
from interfaces.images import (InputError, LoadedImage, gzip_level, nifti_affine_for, onto_grid, read_images,
                               write_json_atomic, write_sitk_image, write_voxel_field_nifti)
from interfaces.logs import log
from interfaces.version import __version__

MODEL_DIR = "/opt/ml/model"  # Grand Challenge extracts an uploaded model tarball here
CONFIG_ENV = "REMIND2REG_CONFIG"  # model.config reads it (named here too: torch is imported only with the model)
DEFAULT_QC_DIR = "qc"        # relative to the output folder when --qc is given without a folder


# ---------------------------------------------------------------- the registration (lazy, injectable)
def model_config_path() -> str | None:
    """/opt/ml/model/config.json when a model tarball is mounted, else None (model's default: resources/)."""
    override = os.path.join(os.environ.get("REMIND2REG_MODEL_DIR", MODEL_DIR), "config.json")
    return override if os.path.isfile(override) else None


def load_registration(device=None):
    """The project's model (torch imported here, not before: `--help` stays instant)."""
    from model import Registration, load_config

    path = model_config_path()
    log.info("model config: %s", path or "resources/config.json (baked)")
    return Registration(load_config(path), device=device)


class _Lazy:
    """Creates the model on first use so that runs with only bad input never load it."""

    def __init__(self, registration):
        self._registration = registration
        self.load_seconds: float | None = None  # set when this run loaded the project's model

    def get(self):
        if self._registration is None:
            t0 = time.perf_counter()
            self._registration = load_registration()
            self.load_seconds = time.perf_counter() - t0
            log.info("model loaded in %.2fs, device %s, %s torch threads (allowed CPUs %s)", self.load_seconds,
                     getattr(self._registration, "device_name", "?"), getattr(self._registration, "threads", "?"),
                     cpus.describe())
        return self._registration


def _register(lazy: _Lazy, fixed: LoadedImage, movings: dict[str, object], target: str, timer: logs.Timer):
    registration = lazy.get()  # the model load is the run's cost (logged, timings.json), not the first pair's
    logs.reset_cuda_peak()
    with timer("register"):
        result = registration.register(fixed=fixed.array, moving=movings, spacing=fixed.grid.spacing, target=target)
    field = result.displacement
    cv.check_voxel_field(field, fixed.grid.shape)
    return result


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _describe(image: LoadedImage) -> str:
    g = image.grid
    return (f"{os.path.basename(image.path)} {'x'.join(map(str, g.shape))} @ "
            f"{'x'.join(f'{s:.3g}' for s in g.spacing)} mm")


def _read_case(paths: dict[int, str]) -> tuple[dict, float]:
    """Every file of a case read at once (threads): (modality -> LoadedImage or the InputError it raised,
    seconds). Returns its seconds rather than filling a timer: it may run on the read-ahead thread."""
    roles = {m: "iUS (fixed) image" if m == cv.FIXED_INDEX else f"{cv.MODALITIES[m]} image" for m in paths}
    t0 = time.perf_counter()
    images = read_images({m: (p, roles[m], m == cv.FIXED_INDEX) for m, p in paths.items()})
    return images, time.perf_counter() - t0


def _movings_on_grid(fixed: LoadedImage, images: dict, timer: logs.Timer, label: str):
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
                     label, name, _describe(image))
        movings[modality] = array
    return movings


def _for_target(movings: dict, target: int, label: str) -> dict[str, object]:
    """The model's `moving` dict for one target: the target must be readable, the others are optional."""
    if isinstance(movings.get(target), InputError):
        raise movings[target]
    usable = {}
    for modality, value in movings.items():
        if isinstance(value, InputError):
            log.warning("%s: extra sequence not used: %s", label, value)
        else:
            usable[cv.MODALITIES[modality]] = value
    return usable


def _log_written(label: str, written: str, result, timer: logs.Timer,
                 memory: str | None = None) -> dict[str, float]:
    """The per-pair log line (device, seconds per stage, model stages, memory); returns the stage seconds.
    `memory`: the summary taken right after the pair's registration (the default, now, would show the next
    pair's CUDA peak when the field is written behind it)."""
    seconds = dict(timer.seconds, total=sum(timer.seconds.values()))
    log.info("%s: wrote %s | device %s | %s | model stages: %s | %s", label, written, getattr(result, "device", "?"),
             logs.fmt_seconds(seconds), logs.fmt_seconds(getattr(result, "stage_seconds", {}) or {}),
             memory or logs.memory_summary())
    return seconds


def _write_qc(qc_dir: str | None, name: str, fixed: LoadedImage, moving, field) -> None:
    if not qc_dir:
        return
    try:
        from interfaces.qc import write_qc

        os.makedirs(qc_dir, exist_ok=True)
        write_qc(os.path.join(qc_dir, name), fixed.array, moving, field)
    except Exception as exc:  # noqa: BLE001 - a QC picture never fails a case
        log.warning("QC picture %s not written: %s", name, _short(exc))


# ---------------------------------------------------------------- organisers' flat folder
def _decide_overlap(io: BackgroundIO, lazy: _Lazy, mode: str) -> None:
    """Overlap I/O with the model when asked to, or (auto) when the model runs on CUDA; loads the model for
    auto, which callers do only once a case's iUS was read (bad-input-only runs never load it)."""
    if io.decided:
        return
    on_cuda = False
    if mode == "auto":
        try:
            on_cuda = str(getattr(lazy.get(), "device_name", "")).startswith("cuda")
        except Exception:  # noqa: BLE001 - the pair's register call reports a model that cannot load
            pass
    io.start(mode == "on" or on_cuda)
    if io.overlapping:
        log.info("I/O overlaps the registration: next case read ahead, fields written behind")


def _write_pair(job: dict) -> tuple[str, str | None, dict | None]:
    """Write one pair's field (atomic), log it, draw its QC; (pair label, timings key, stage seconds) or
    (label, None, None) when the write failed. Runs on the write-behind thread when I/O overlaps."""
    label, timer, result, fixed = job["label"], job["timer"], job["result"], job["fixed"]
    try:
        with timer("write"):
            write_voxel_field_nifti(job["path"], result.displacement, job["affine"])
    except Exception as exc:  # noqa: BLE001 - one pair's failure must not stop the others
        log.error("FAILED %s: cannot write %s: %s: %s", label, os.path.basename(job["path"]), type(exc).__name__,
                  _short(exc))
        return label, None, None
    seconds = _log_written(label, os.path.basename(job["path"]), result, timer, job["memory"])
    _write_qc(job["qc_dir"], job["qc_name"], fixed, job["moving"], result.displacement)
    return label, job["key"], {"seconds": round(seconds["total"], 3),
                               **{k: round(seconds[k], 3) for k in ("read", "register", "write")}}


@dataclass
class _OrganisersRun:
    """What every case of an organisers' run shares."""
    io: BackgroundIO
    lazy: _Lazy
    output_dir: str
    qc_dir: str | None
    overlap: str  # auto | on | off


def _register_case(run: _OrganisersRun, case_id, case, pairs, images_future, read_ahead):
    """One case: its images (read ahead or now), every pair registered, each field handed to the writer.
    Returns (failed pair labels, write futures). A function of its own so that the case's arrays are freed
    when it returns, before the next case's are read (in line) or as soon as its writes are done (overlap)."""
    io, lazy = run.io, run.lazy
    label = f"case {case_id}"
    pair_labels = [f"{label} {cv.MODALITIES[m]}" for m in pairs]
    try:
        images, read_seconds = (images_future or io.read(_read_case, case.files)).result()
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory while reading: this case only
        log.exception("FAILED %s: %s: %s", label, type(exc).__name__, _short(exc))
        return pair_labels, []
    fixed = images[cv.FIXED_INDEX]
    if isinstance(fixed, InputError):
        log.error("FAILED %s: %s", label, fixed)
        return pair_labels, []
    log.info("%s: iUS %s", label, _describe(fixed))
    _decide_overlap(io, lazy, run.overlap)
    read_ahead()  # the next case reads while this one registers (overlap), else nothing happens yet
    case_timer = logs.Timer()
    case_timer.seconds["read"] = read_seconds
    mr_arrays = _movings_on_grid(fixed, images, case_timer, label)
    del images
    affine = nifti_affine_for(fixed)  # the output's header, once per case (it reads the iUS header again)
    failed, writes = [], []
    for moving, pair_label in zip(pairs, pair_labels):
        timer = logs.Timer()
        timer.seconds["read"] = case_timer.seconds["read"] / len(pairs)  # the case's reads, shared by its pairs
        try:
            movings = _for_target(mr_arrays, moving, pair_label)
            result = _register(lazy, fixed, movings, cv.MODALITIES[moving], timer)
        except InputError as exc:
            log.error("FAILED %s: %s", pair_label, exc)
            failed.append(pair_label)
            continue
        except Exception as exc:  # noqa: BLE001 - one pair's failure must not stop the others
            log.exception("FAILED %s: %s: %s", pair_label, type(exc).__name__, _short(exc))
            failed.append(pair_label)
            continue
        writes.append(io.write(_write_pair, {
            "label": pair_label, "timer": timer, "result": result, "fixed": fixed, "affine": affine,
            "path": os.path.join(run.output_dir, org.output_name(case_id, moving)),
            "key": cv.pair_key(case_id, moving), "qc_dir": run.qc_dir, "qc_name": f"{case_id}_{moving:04d}.png",
            "moving": movings[cv.MODALITIES[moving]], "memory": logs.memory_summary()}))
        del result, movings
    return failed, writes


def run_organisers(input_dir, output_dir, lazy, wanted, qc_dir=None, write_timings=True, overlap="auto"):
    t_run = time.perf_counter()
    cases, ignored = org.find_cases(input_dir)
    if ignored:
        log.info("ignored %d file(s) that are not ReMIND2Reg images: %s", len(ignored), ", ".join(ignored[:10]))
    log.info("organisers' layout: %d case(s) in %s; sequences %s", len(cases), input_dir,
             "+".join(cv.MODALITIES[m] for m in wanted))
    jobs = [(case_id, case, *org.case_pairs(case, wanted)) for case_id, case in sorted(cases.items())]
    to_read = [case_id for case_id, _, pairs, error in jobs if pairs and not error]
    failed, writes, reads = [], [], {}
    io = BackgroundIO()
    shared = _OrganisersRun(io, lazy, output_dir, qc_dir, overlap)

    def read_ahead_after(case_id):
        following = to_read[to_read.index(case_id) + 1:]
        if following and io.overlapping and following[0] not in reads:
            reads[following[0]] = io.read(_read_case, cases[following[0]].files)

    try:
        for case_id, case, pairs, error in jobs:
            label = f"case {case_id}"
            for problem in case.problems:
                if "two" not in problem:
                    log.warning("%s: %s", label, problem)
            if error:
                log.error("FAILED %s: %s", label, error)
                failed.append(label)
                continue
            found = ", ".join(f"{cv.MODALITIES[m]} {os.path.basename(p)}" for m, p in sorted(case.files.items()))
            if not pairs:
                log.warning("%s: found %s; no %s image, nothing to do for this container", label, found,
                            "/".join(cv.MODALITIES[m] for m in wanted))
                continue
            log.info("%s: found %s; registering %s", label, found, ", ".join(cv.MODALITIES[m] for m in pairs))
            case_failed, case_writes = _register_case(shared, case_id, case, pairs, reads.pop(case_id, None),
                                                      lambda: read_ahead_after(case_id))
            failed.extend(case_failed)
            writes.extend(case_writes)
    finally:
        io.close()
    ok, timings = 0, {}
    for future in writes:
        pair_label, key, seconds = future.result()
        if key is None:
            failed.append(pair_label)
        else:
            timings[key] = seconds
            ok += 1
    if write_timings and timings:
        extra = {} if lazy.load_seconds is None else {"model_load_seconds": round(lazy.load_seconds, 3)}
        write_json_atomic({"pairs": timings, **extra}, os.path.join(output_dir, org.TIMINGS_NAME))
    if not cases:
        log.error("FAILED: no ReMIND2Reg_XXXX_000M image files in %s", input_dir)
        failed.append("input folder")
    return ok, failed, time.perf_counter() - t_run


# ---------------------------------------------------------------- Grand Challenge sockets
def run_grand_challenge(input_dir, output_dir, lazy, wanted, qc_dir=None):
    t_run = time.perf_counter()
    timer = logs.Timer()
    label = "job"
    try:
        paths, names, ignored = gc.read_inputs(input_dir)
        if ignored:
            log.info("inputs.json: ignored sockets %s", ", ".join(ignored))
        target = gc.choose_target(set(paths) - {cv.FIXED_INDEX}, wanted)
        log.info("Grand Challenge layout: %s; output for %s",
                 ", ".join(f"{gc.INPUT_SLUGS[m]} ({names[m]})" for m in sorted(paths)), cv.MODALITIES[target])
        label = f"job {cv.MODALITIES[target]}"
        images, timer.seconds["read"] = _read_case(paths)
        fixed = images[cv.FIXED_INDEX]
        if isinstance(fixed, InputError):
            raise fixed
        log.info("%s: iUS %s", label, _describe(fixed))
        movings = _for_target(_movings_on_grid(fixed, images, timer, label), target, label)
        result = _register(lazy, fixed, movings, cv.MODALITIES[target], timer)
        with timer("write"):
            write_sitk_image(gc.output_path(output_dir), cv.voxel_to_physical_field(result.displacement, fixed.grid))
    except (InputError, gc.SocketError) as exc:
        log.error("FAILED %s: %s", label, exc)
        return 0, [label], time.perf_counter() - t_run
    except Exception as exc:  # noqa: BLE001
        log.exception("FAILED %s: %s: %s", label, type(exc).__name__, _short(exc))
        return 0, [label], time.perf_counter() - t_run
    _log_written(label, os.path.relpath(gc.output_path(output_dir), output_dir), result, timer)
    _write_qc(qc_dir, "job.png", fixed, movings[cv.MODALITIES[target]], result.displacement)
    return 1, [], time.perf_counter() - t_run


# ---------------------------------------------------------------- one call for both layouts
def run(input_dir: str, output_dir: str, registration=None, sequences: str | None = None,
        qc_dir: str | None = None, write_timings: bool | None = None) -> int:
    """Process a folder; return the exit code (0: every case ok, 1: any failure, 2: unusable setup).

    `registration`: any object with `.register(fixed=, moving=, spacing=, target=)` returning an object with
    `.displacement` (voxel field); None loads the project's model on first use.
    `sequences`: ceT1 | T2 | all; None reads $REMIND2REG_SEQUENCES (default all).
    """
    logs.setup()
    try:
        wanted = org.wanted_modalities(sequences if sequences is not None else os.environ.get(org.SEQUENCES_ENV))
        overlap = overlap_mode(os.environ.get(OVERLAP_ENV))
        gzip_level()  # a bad $REMIND2REG_GZIP_LEVEL is a setup error, not a failure of every pair
        config_file = os.environ.get(CONFIG_ENV)
        if registration is None and config_file and not os.path.isfile(config_file):
            raise ValueError(f"{CONFIG_ENV}={config_file!r}: no such model config file")
    except ValueError as exc:
        log.error("FAILED: %s", exc)
        return 2
    if not os.path.isdir(input_dir):
        log.error("FAILED: input folder %s does not exist", input_dir)
        return 2
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as exc:
        log.error("FAILED: cannot create output folder %s: %s", output_dir, _short(exc))
        return 2
    if write_timings is None:
        write_timings = os.environ.get(org.TIMINGS_ENV, "1") != "0"
    lazy = _Lazy(registration)
    if gc.is_grand_challenge_layout(input_dir):
        ok, failed, seconds = run_grand_challenge(input_dir, output_dir, lazy, wanted, qc_dir)
    else:
        ok, failed, seconds = run_organisers(input_dir, output_dir, lazy, wanted, qc_dir, write_timings, overlap)
    per_pair = f" ({seconds / ok:.2f}s per written pair)" if ok else ""
    log.info("summary: %d ok, %d failed, total %.1fs%s, %s%s", ok, len(failed), seconds, per_pair,
             logs.memory_summary(), f" (failed: {', '.join(failed)})" if failed else "")
    return 1 if failed else 0


# ---------------------------------------------------------------- demo
def demo(out_dir: str = "demo_output") -> int:
    """Simulate one small case, register it into out_dir, score it with the evaluation code, write QC PNGs."""
    logs.setup()
    try:  # only the demo needs the simulator and the evaluation (neither is in the image)
        from evaluation.evaluate import run as evaluate
        from simulation.demo import make_demo_dataset
    except ImportError as exc:
        log.error("FAILED: the demo needs the simulation and evaluation packages (%s)", _short(exc))
        return 2
    os.makedirs(out_dir, exist_ok=True)
    dataset = str(make_demo_dataset(os.path.join(out_dir, "dataset")))
    log.info("demo dataset (SIMULATED): %s", dataset)
    qc_dir = os.path.join(out_dir, "qc")
    code = run(os.path.join(dataset, "imagesTr"), out_dir, qc_dir=qc_dir)
    metrics_path = os.path.join(out_dir, "metrics.json")
    evaluate(out_dir, dataset, metrics_path, name="demo", quiet=True)
    with open(metrics_path) as handle:
        metrics = json.load(handle)
    for key, case in sorted(metrics["cases"].items()):
        print(f"{key}: TRE before {case['TRE_initial']['mean']:.2f} mm -> after {case['TRE']['mean']:.2f} mm, "
              f"SDlogJ {case['LogJacDetStd']['mean']:.3f}, folds {case['num_folds_true']['mean']:.0f}")
    for error in metrics["errors"]:
        print(f"evaluation error: {error}")
    print(f"fields in {out_dir}/, metrics in {metrics_path}, QC pictures in {qc_dir}/")
    return code or (1 if metrics["errors"] else 0)


# ---------------------------------------------------------------- CLI
class _Terminated(SystemExit):
    """SIGTERM (`docker stop`) as an exception: the finally blocks remove a half-written file and finish a field
    already being written behind, instead of the process vanishing mid-write."""


def _on_sigterm(signum, _frame):
    raise _Terminated(128 + signum)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default="/input", help="input folder (default /input)")
    parser.add_argument("--output", default="/output", help="output folder (default /output)")
    parser.add_argument("--sequences", choices=sorted(org.SEQUENCE_CHOICES),
                        help=f"override ${org.SEQUENCES_ENV} (ceT1 | T2 | all)")
    parser.add_argument("--qc", nargs="?", const="", default=None, metavar="DIR",
                        help=f"write a QC PNG per pair into DIR (default <output>/{DEFAULT_QC_DIR})")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--demo", action="store_true",
                        help="simulate one small case, register it into demo_output/, print TRE before/after")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.demo:
            return demo()
        qc_dir = None if args.qc is None else (args.qc or os.path.join(args.output, DEFAULT_QC_DIR))
        return run(args.input, args.output, sequences=args.sequences, qc_dir=qc_dir)
    except _Terminated:
        log.error("STOPPED by SIGTERM: the pairs written so far are complete; no partial file is left")
        raise


if __name__ == "__main__":
    sys.exit(main())
