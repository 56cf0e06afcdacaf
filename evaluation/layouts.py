"""Where each pair's displacement field (and runtime) is: organisers' flat folder or Grand Challenge layout.

Organisers: `IN/disp_XXXX_0000_XXXX_000M.nii.gz` (or `.npz`, key arr_0), optional `IN/timings.json`
    `{"pairs": {"XXXX_0000<--XXXX_000M": {"seconds": 12.3, ...}}}` written by the algorithm container, and/or
    `IN/timings.K-of-N.json` written by its shards (`--shard K/N`), all merged.
Grand Challenge (chosen when `IN/predictions.json` exists): a list of algorithm jobs, each with "pk",
    "inputs" and "outputs" (each item has "interface" or, on the renamed platform, "socket", with "slug" and
    "relative_path", and "image": {"name": original file name}). The job's field is
    `IN/<pk>/output/<relative_path>/*.mha` (relative_path defaults to images/<slug>). The pair is
    identified from the input image names (ReMIND2Reg_XXXX_000M.*). The runtime is the job's
    "exec_duration": the platform's JobSerializer (comic/grand-challenge.org,
    app/grandchallenge/algorithms/serializers.py) lists pk, url, api_url, algorithm_image, inputs, outputs,
    status, hanging_protocol, optional_hanging_protocols, view_content, exec_duration and invoke_duration;
    "started_at"/"completed_at" were dropped from it in June 2025 (commit a9f9be1), the two durations added in
    October 2025 (commit dac9c0a) as ISO 8601 strings (Django duration_iso_string, e.g. "P0DT00H22M17S"),
    null when not measured. exec_duration includes model loading, input reading, processing and output
    writing, and excludes container pulling and data transfer (the model field's help text).
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field as dataclass_field

from interfaces.conventions import (DISP_NAME_RE, FIXED_INDEX, IMAGE_NAME_RE, TIMINGS_NAME_RE, displacement_name,
                                    pair_key)

# one definition of the socket slugs, shared with the algorithm container (interfaces/grand_challenge.py):
#   intraoperative-ultrasound (fixed iUS, _0000), preoperative-t1-contrast-mri (ceT1, _0001),
#   preoperative-t2-mri (T2, _0002), output displacement-field (DSPF)
from interfaces.grand_challenge import SLUG_CET1, SLUG_DISPLACEMENT, SLUG_IUS, SLUG_MODALITY, SLUG_T2  # noqa: F401
from interfaces.grand_challenge import choose_target, socket_of
from interfaces.organisers import SEQUENCES_ENV, wanted_modalities

PREDICTIONS = "predictions.json"
MODALITY_OF_SLUG = SLUG_MODALITY


@dataclass
class Located:
    """Per pair key: the field file (None when absent) and runtime in seconds (None when unknown)."""

    layout: str
    fields: dict[str, str | None] = dataclass_field(default_factory=dict)
    runtimes: dict[str, float] = dataclass_field(default_factory=dict)
    warnings: list[str] = dataclass_field(default_factory=list)
    errors: dict[str, str] = dataclass_field(default_factory=dict)  # pair key -> one-line problem
    runtime_source: str | None = None  # where runtimes came from (None: not available)


def detect_layout(input_dir: str) -> str:
    return "grand-challenge" if os.path.isfile(os.path.join(input_dir, PREDICTIONS)) else "organisers"


def locate(input_dir: str, pairs) -> Located:
    if detect_layout(input_dir) == "grand-challenge":
        return locate_grand_challenge(input_dir, pairs)
    return locate_organisers(input_dir, pairs)


# ---------------------------------------------------------------- organisers' flat folder
def locate_organisers(input_dir: str, pairs) -> Located:
    found = Located("organisers")
    for pair in pairs:
        candidates = [os.path.join(input_dir, displacement_name(pair.case, pair.moving, s)) for s in (".nii.gz", ".npz")]
        existing = [c for c in candidates if os.path.isfile(c)]
        if len(existing) > 1:
            found.warnings.append(f"{pair.key}: both .nii.gz and .npz present; using {os.path.basename(existing[0])}")
        found.fields[pair.key] = existing[0] if existing else candidates[0]
    wanted = {pair.key for pair in pairs}
    for name in sorted(os.listdir(input_dir)) if os.path.isdir(input_dir) else []:
        match = DISP_NAME_RE.match(name)
        if match and pair_key(match.group(1), int(match.group(3))) not in wanted:
            found.warnings.append(f"{name}: no ground-truth pair, not evaluated")
    names = sorted(n for n in os.listdir(input_dir) if TIMINGS_NAME_RE.match(n)) if os.path.isdir(input_dir) else []
    for name in names:  # timings.json and the shards' timings.K-of-N.json
        runtimes = read_timings(os.path.join(input_dir, name), found.warnings)
        for key in sorted(set(runtimes) & set(found.runtimes)):
            found.warnings.append(f"{name}: {key} also timed in another timings file (shards overlapping?); "
                                  f"using {name}")
        found.runtimes.update(runtimes)
    if found.runtimes:
        found.runtime_source = f"{' + '.join(names)} (the algorithm's own seconds per pair)"
    return found


def read_timings(path: str, warnings: list[str]) -> dict[str, float]:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            pairs = json.load(handle)["pairs"]
        return {key: float(value["seconds"]) for key, value in pairs.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.append(f"{os.path.basename(path)}: ignored, unreadable ({type(exc).__name__}: {exc})")
        return {}


# ---------------------------------------------------------------- Grand Challenge
def _image_name(item: dict) -> str:
    image = item.get("image") or {}
    return image.get("name") or "" if isinstance(image, dict) else ""


def _job_pair(job: dict) -> tuple[str, int]:
    """(case, moving modality) of one job from its input image names (slugs as a cross-check)."""
    modalities: dict[int, str] = {}
    for item in job.get("inputs", []):
        name = os.path.basename(_image_name(item))
        match = IMAGE_NAME_RE.match(name) or IMAGE_NAME_RE.search(name)
        slug = socket_of(item).get("slug", "")
        if match:
            case, modality = match.group(1), int(match.group(2))
            if slug in MODALITY_OF_SLUG and MODALITY_OF_SLUG[slug] != modality:
                raise ValueError(f"input {name} arrived on socket {slug}")
            if modality in modalities and modalities[modality] != case:
                raise ValueError(f"two different cases among the inputs ({modalities[modality]}, {case})")
            modalities[modality] = case
    if FIXED_INDEX not in modalities:
        raise ValueError("no iUS input (ReMIND2Reg_XXXX_0000) among the job's inputs")
    moving = sorted(m for m in modalities if m != FIXED_INDEX)
    if not moving:
        raise ValueError("no MR input (ReMIND2Reg_XXXX_0001 or _0002) among the job's inputs")
    # a job with both MRs is scored for the sequence the algorithm wrote its field for (the same rule):
    # ceT1, or the algorithm image's build-time sequence when $REMIND2REG_SEQUENCES says it (a T2 phase)
    target = choose_target(moving, wanted_modalities(os.environ.get(SEQUENCES_ENV)))
    case = modalities[FIXED_INDEX]
    if modalities[target] != case:
        raise ValueError(f"fixed case {case} but moving case {modalities[target]}")
    return case, target


def _job_field(input_dir: str, job: dict) -> str:
    outputs = [o for o in job.get("outputs", []) if socket_of(o).get("slug") == SLUG_DISPLACEMENT]
    if not outputs:
        raise ValueError(f"no '{SLUG_DISPLACEMENT}' output listed")
    relative = socket_of(outputs[0]).get("relative_path") or f"images/{SLUG_DISPLACEMENT}"
    folder = os.path.join(input_dir, str(job["pk"]), "output", relative)
    files = sorted(glob.glob(os.path.join(folder, "*.mha")) + glob.glob(os.path.join(folder, "*.tif*")))
    if not files:
        return os.path.join(folder, "<missing>.mha")
    return files[0]


EXEC_DURATION = "exec_duration"
RUNTIME_SOURCE_GC = "Grand Challenge job exec_duration (incl. model load, excl. data transfer)"
_ISO_DURATION = re.compile(r"^(-)?P(?:([0-9]+(?:\.[0-9]+)?)D)?(?:T(?:([0-9]+(?:\.[0-9]+)?)H)?"
                           r"(?:([0-9]+(?:\.[0-9]+)?)M)?(?:([0-9]+(?:\.[0-9]+)?)S)?)?$")


def parse_iso_duration(text) -> float | None:
    """Seconds of an ISO 8601 day-time duration as Django writes it ("P0DT00H22M17.500000S"); None when the
    value is null or not such a duration."""
    if not isinstance(text, str):
        return None
    match = _ISO_DURATION.match(text.strip())
    if not match or text.strip() in ("P", "-P", "PT", "-PT"):
        return None
    sign, days, hours, minutes, seconds = match.groups()
    total = (float(days or 0) * 86400 + float(hours or 0) * 3600 + float(minutes or 0) * 60 + float(seconds or 0))
    return -total if sign else total


def locate_grand_challenge(input_dir: str, pairs) -> Located:
    found = Located("grand-challenge")
    with open(os.path.join(input_dir, PREDICTIONS), encoding="utf-8") as handle:
        jobs = json.load(handle)
    if isinstance(jobs, dict):  # tolerate {"results": [...]} wrappers
        jobs = jobs.get("results", [])
    wanted = {pair.key for pair in pairs}
    for job in jobs:
        pk = job.get("pk", "?")
        try:
            case, moving = _job_pair(job)
        except ValueError as exc:
            found.warnings.append(f"job {pk}: {exc}; not evaluated")
            continue
        key = pair_key(case, moving)
        if key not in wanted:
            found.warnings.append(f"job {pk}: pair {key} has no ground truth, not evaluated")
            continue
        if key in found.fields:
            found.warnings.append(f"job {pk}: second job for {key}, ignored")
            continue
        try:
            found.fields[key] = _job_field(input_dir, job)
        except ValueError as exc:
            found.errors[key] = f"{key}: job {pk}: {exc}"
            continue
        duration = parse_iso_duration(job.get(EXEC_DURATION))
        if duration is not None:
            found.runtimes[key] = duration
            found.runtime_source = RUNTIME_SOURCE_GC
        elif job.get(EXEC_DURATION) is not None:
            found.warnings.append(f"job {pk}: {EXEC_DURATION} {job.get(EXEC_DURATION)!r} is not an ISO 8601 "
                                  f"duration; no runtime for {key}")
    for key in sorted(wanted - set(found.fields) - set(found.errors)):
        found.fields[key] = None
    return found
