"""What to do for each input layout: the cases, their pairs, and where each field goes.

Both layouts become one plan (a list of `CaseJob`s and a field writer), so that reading, registering,
writing, logging and QC are one code path (runner/cases.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from interfaces import conventions as cv
from interfaces import grand_challenge as sockets
from interfaces import organisers as org
from interfaces.images import nifti_affine_for, write_sitk_image, write_voxel_field_nifti
from interfaces.logs import Progress, log
from runner import shards
from runner.leftovers import Scope
from runner.settings import SetupError


@dataclass
class PairJob:
    target: int               # moving modality index the field is for
    label: str                # "case 0001 ceT1" (organisers) | "job ceT1" (Grand Challenge)
    output_path: str
    timings_key: str | None   # key in timings.json, None when the layout writes no timings
    qc_name: str
    ordinal: int = 0              # 1-based position among the run's pairs (progress), set by `plan`
    progress: Progress | None = None

    def progress_text(self) -> str:
        """`[k/N, about T left] ` for the log line of this pair once written ('' for a single pair)."""
        return self.progress.text(self.ordinal) if self.progress and self.progress.total > 1 else ""


@dataclass
class CaseJob:
    label: str                          # "case 0001" | "job"
    files: dict[int, str]               # modality index -> path
    pairs: list[PairJob] = field(default_factory=list)


@dataclass
class Plan:
    layout: str                          # "organisers" | "grand-challenge"
    cases: list[CaseJob]
    failed: list[str]                    # labels that failed while planning (logged already)
    writer: object                       # OrganisersWriter | GrandChallengeWriter
    write_timings: bool
    timings_name: str = cv.TIMINGS_NAME  # timings.json, or timings.K-of-N.json for a shard
    stale: list[tuple[str, str]] = field(default_factory=list)  # (label, output path) of cases failed here:
    # a field an earlier run left under such a name would be scored as this run's answer, so it is removed
    scope: Scope | None = None  # what the run answers for in its output folder (runner/leftovers.py)
    no_case: str = ""           # why the input has no case at all: the run's last line says it


class OrganisersWriter:
    """disp_XXXX_0000_XXXX_000M.nii.gz: voxel field, the fixed NIfTI's affine, the configured gzip level."""

    def __init__(self, gzip_level: int):
        self.gzip_level = gzip_level

    def for_case(self, fixed):
        affine = nifti_affine_for(fixed)  # once per case (it reads the iUS header again)
        return lambda path, displacement: write_voxel_field_nifti(path, displacement, affine, self.gzip_level)


class GrandChallengeWriter:
    """The displacement-field socket: DSPF .mha in mm on the ITK/LPS axes, the fixed geometry."""

    @staticmethod
    def for_case(fixed):
        return lambda path, displacement: write_sitk_image(path, cv.voxel_to_physical_field(displacement, fixed.grid))


def _names(modalities) -> str:
    return "+".join(cv.MODALITIES[m] for m in modalities)


def plan_organisers(input_dir: str, output_dir: str, settings) -> Plan:
    """Every case of a flat folder with an iUS and a wanted MR; a case with a problem fails on its own."""
    cases, ignored = org.find_cases(input_dir)
    if ignored:
        log.info("ignored %d file(s) that are not ReMIND2Reg images: %s", len(ignored), ", ".join(ignored[:10]))
    log.info("organisers' layout: %d case(s) in %s; sequences %s", len(cases), input_dir, _names(settings.sequences))
    everything = len(cases)
    scope = Scope("organisers", cases=set(cases), sequences=settings.sequences, shard=settings.shard,
                  timings_name=cv.timings_name(settings.shard), write_timings=settings.write_timings)
    if settings.shard is not None:
        mine = shards.select(cases, settings.shard)
        k, n = settings.shard
        log.info("shard %d of %d (from %s, K counts from 0): %d of the %d case(s)%s", k, n, settings.shard_source,
                 len(mine), everything, f" ({mine[0]} .. {mine[-1]})" if mine else "")
        cases = {case_id: cases[case_id] for case_id in mine}
    jobs, failed, stale = [], [], []
    for case_id, case in sorted(cases.items()):
        label = f"case {case_id}"
        for problem in case.problems:
            if "two" not in problem:  # a duplicate is the case's error (case_pairs), not a warning
                log.warning("%s: %s", label, problem)
        pairs, error = org.case_pairs(case, settings.sequences)
        if error:
            log.error("FAILED %s: %s", label, error)
            failed.append(label)
            stale += [(label, os.path.join(output_dir, org.output_name(case_id, m))) for m in settings.sequences]
            continue
        found = ", ".join(f"{cv.MODALITIES[m]} {os.path.basename(p)}" for m, p in sorted(case.files.items()))
        if not pairs:
            log.warning("%s: found %s; no %s image, nothing to do for this container", label, found,
                        "/".join(cv.MODALITIES[m] for m in settings.sequences))
            continue
        log.info("%s: found %s; registering %s", label, found, ", ".join(cv.MODALITIES[m] for m in pairs))
        jobs.append(CaseJob(label, case.files, [
            PairJob(m, f"{label} {cv.MODALITIES[m]}", os.path.join(output_dir, org.output_name(case_id, m)),
                    cv.pair_key(case_id, m), f"{case_id}_{m:04d}.png") for m in pairs]))
    scope.mine = set(cases)
    scope.outputs = {os.path.abspath(pair.output_path) for job in jobs for pair in job.pairs}
    no_case = ""
    if not everything:
        no_case = (f"no case found in {input_dir} (expected ReMIND2Reg_XXXX_0000.nii.gz, the iUS, with "
                   "ReMIND2Reg_XXXX_0001 (ceT1) or _0002 (T2); .nii.gz, .nii, .mha or .nrrd"
                   + (f"; {len(ignored)} other file(s) ignored)" if ignored else ")"))
        log.error("FAILED: %s", no_case)
        failed.append("input folder")
    return Plan("organisers", jobs, failed, OrganisersWriter(settings.gzip_level), settings.write_timings,
                cv.timings_name(settings.shard), stale, scope, no_case)


def plan_grand_challenge(input_dir: str, output_dir: str, settings) -> Plan:
    """One job: the image sockets of inputs.json in, one displacement-field socket out (no timings.json)."""
    writer = GrandChallengeWriter()
    try:
        paths, names, ignored = sockets.read_inputs(input_dir)
        if ignored:
            log.info("inputs.json: ignored sockets %s", ", ".join(ignored))
        target = sockets.choose_target(set(paths) - {cv.FIXED_INDEX}, settings.sequences)
    except sockets.SocketError as exc:
        log.error("FAILED job: %s", exc)
        output = sockets.output_path(output_dir)  # an earlier job's field would read as this one's answer
        return Plan("grand-challenge", [], ["job"], writer, False, stale=[("job", output)],
                    scope=Scope("grand-challenge", outputs={os.path.abspath(output)}))
    # the file each socket read (inside the input folder: interfaces/grand_challenge.py), and its upload name
    log.info("Grand Challenge layout: %s; output for %s", ", ".join(
        f"{sockets.INPUT_SLUGS[m]} read {os.path.relpath(paths[m], input_dir)}"
        + (f" (uploaded as {names[m]})" if names[m] != os.path.basename(paths[m]) else "") for m in sorted(paths)),
        cv.MODALITIES[target])
    if target not in settings.sequences:  # the sockets decide (docs/CONTAINER.md, "Grand Challenge")
        log.info("this image was built for %s (REMIND2REG_SEQUENCES); the job has no %s socket, so its %s "
                 "socket is registered", _names(settings.sequences), _names(settings.sequences),
                 cv.MODALITIES[target])
    pair = PairJob(target, f"job {cv.MODALITIES[target]}", sockets.output_path(output_dir), None, "job.png")
    return Plan("grand-challenge", [CaseJob("job", paths, [pair])], [], writer, False,
                scope=Scope("grand-challenge", outputs={os.path.abspath(pair.output_path)}))


def plan(input_dir: str, output_dir: str, settings) -> Plan:
    """The layout's plan, its pairs numbered for the progress log. SetupError: sharding a Grand Challenge job."""
    if sockets.is_grand_challenge_layout(input_dir):
        if settings.shard is not None:
            raise SetupError(f"shard {settings.shard[0]} of {settings.shard[1]} (from {settings.shard_source}): "
                             "sharding splits the organisers' folder; a Grand Challenge job is one case")
        job = plan_grand_challenge(input_dir, output_dir, settings)
    else:
        job = plan_organisers(input_dir, output_dir, settings)
    pairs = [pair for case in job.cases for pair in case.pairs]
    progress = Progress(len(pairs))
    for ordinal, pair in enumerate(pairs, 1):
        pair.ordinal, pair.progress = ordinal, progress
    return job
