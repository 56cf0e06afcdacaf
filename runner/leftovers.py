"""What earlier runs left in the output folder: removed where this run answers for it, else kept and named.

A field the scorer finds is scored as this run's answer, with the runtime timings.json gives it: a rerun
must not leave a field of a pair it no longer has (a case taken out of the input, a sequence no longer
there), an old timings.json it did not confirm, or a temporary `.partial-<pid>-<random>-<name>` a killed run
left (SIGKILL runs no cleanup; interfaces/images.py `atomic_path`). Before any work (`sweep`), each such file
whose name this run answers for is removed, with a WARNING naming it. A name it does not answer for is kept,
in one WARNING that says why: another container's sequence, a case that is not in this shard's input, the
timings of another sharding. Another shard's fields and timings (same N) are expected there and kept silently:
shards, and containers built for other sequences, may share one output folder and run at the same time.

What a run answers for (organisers' layout): the fields `disp_XXXX_0000_XXXX_000M.(nii.gz|npz)` of its
sequences, for every case (unsharded) or its shard's cases of the input; its own timings file. Grand Challenge:
the temporaries of its one output socket. Nothing else in the folder is touched (QC pictures, a user's files).
An input without any case removes nothing (a wrong mount must not wipe an earlier run's results).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from interfaces import conventions as cv
from interfaces.logs import log, one_line

# mkstemp's name: .partial-<pid>-<random from [a-z0-9_]>-<final name> (interfaces/images.py atomic_path)
PARTIAL_RE = re.compile(r"^\.partial-[0-9]+-[a-z0-9_]+-(.+)$")
LISTED = 10  # names listed per reason in the kept WARNING, then "and N more"


@dataclass
class Scope:
    """What one run answers for in its output folder (runner/layouts.py fills it while planning)."""
    layout: str                              # "organisers" | "grand-challenge"
    cases: set[str] = field(default_factory=set)   # every case id of the input
    mine: set[str] = field(default_factory=set)    # this run's cases (its shard's; all when unsharded)
    sequences: tuple[int, ...] = ()
    shard: tuple[int, int] | None = None
    outputs: set[str] = field(default_factory=set)  # paths this run writes (absolute)
    timings_name: str = cv.TIMINGS_NAME             # this run's timings file (written or not)
    write_timings: bool = True
    old_timings: bool = False               # set by `sweep`: an earlier run's timings file was removed


def _sequence_names(sequences) -> str:
    return "+".join(cv.MODALITIES[m] for m in sequences)


def _decide(scope: Scope, output_dir: str, name: str) -> tuple[str, str]:
    """('write' | 'remove' | 'other' | 'keep' | 'ignore', why) for a final name in the organisers' folder."""
    pair = cv.parse_displacement_name(name)
    if pair is not None:
        case, modality = pair
        if os.path.abspath(os.path.join(output_dir, name)) in scope.outputs:
            return "write", ""
        if modality not in scope.sequences:
            return "keep", (f"fields of sequences this run does not register: it registers "
                            f"{_sequence_names(scope.sequences)} only ($REMIND2REG_SEQUENCES or --sequences)")
        if scope.shard is None or case in scope.mine:
            return "remove", ""
        if case in scope.cases:
            return "other", ""  # another shard's case
        return "keep", (f"fields of cases not in the input: shard {scope.shard[0]} of {scope.shard[1]} cannot tell "
                        "which shard answers for them (an unsharded run removes them)")
    match = cv.TIMINGS_NAME_RE.match(name)
    if match is None:
        return "ignore", ""
    if name == scope.timings_name:
        return "remove", ""
    if scope.shard is None:
        return "keep", ("timings of sharded runs: the evaluation merges them with timings.json; remove them if "
                        "those runs' fields are gone")
    if match.group(1) and int(match.group(3)) == scope.shard[1]:
        return "other", ""  # another shard of the same N
    return "keep", (f"timings of an unsharded run or another sharding, beside shard {scope.shard[0]} of "
                    f"{scope.shard[1]}'s {scope.timings_name}: the evaluation merges them")


def _remove(path: str, output_dir: str, why: str) -> bool:
    name = os.path.relpath(path, output_dir)
    try:
        os.unlink(path)
    except FileNotFoundError:  # gone meanwhile (another shard's cleanup)
        return False
    except OSError as exc:
        log.warning("cannot remove %s left by an earlier run: %s", name, one_line(exc))
        return False
    if why:
        log.warning("removed %s left by an earlier run (%s)", name, why)
    return True


def _kept_line(kept: dict[str, list[str]]) -> None:
    if not kept:
        return
    parts = []
    for why, names in kept.items():
        more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
        parts.append(f"{', '.join(names[:LISTED])}{more} ({why})")
    log.warning("kept %d file(s) of earlier runs in the output folder, which this run does not answer for: %s",
                sum(map(len, kept.values())), "; ".join(parts))


def sweep(scope: Scope | None, output_dir: str) -> None:
    """Remove what this run answers for and will not write; name what it keeps. Before any work."""
    if scope is None:
        return
    if scope.layout == "grand-challenge":
        for path in scope.outputs:
            folder, final = os.path.split(path)
            if os.path.isdir(folder):
                for name in sorted(os.listdir(folder)):
                    match = PARTIAL_RE.match(name)
                    if match and match.group(1) == final:
                        _remove(os.path.join(folder, name), output_dir, "a write that never finished")
        return
    try:
        names = sorted(os.listdir(output_dir))
    except OSError:
        return
    kept: dict[str, list[str]] = {}
    for name in names:
        path = os.path.join(output_dir, name)
        if not (os.path.isfile(path) or os.path.islink(path)):
            continue
        partial = PARTIAL_RE.match(name)
        action, why = _decide(scope, output_dir, partial.group(1) if partial else name)
        if action in ("ignore", "other") or (action == "write" and not partial):
            continue  # not ours, or ours and replaced when written
        if not scope.cases:  # no case in the input: nothing removed (a wrong mount must not wipe results)
            kept.setdefault("the input has no case, so this run answers for nothing", []).append(name)
        elif action == "keep":
            kept.setdefault(why, []).append(name)
        elif partial:
            _remove(path, output_dir, "a write that never finished")
        elif name == scope.timings_name and scope.write_timings:
            # rewritten when the run ends; until then no stale runtimes sit beside new fields (a killed run)
            scope.old_timings = _remove(path, output_dir, "") or scope.old_timings
            if scope.old_timings:
                log.info("%s of an earlier run removed; this run writes its own when it ends", name)
        elif name == scope.timings_name:
            _remove(path, output_dir, "this run writes no timings: $REMIND2REG_TIMINGS=0")
        else:
            case, modality = cv.parse_displacement_name(name)
            _remove(path, output_dir, f"this run has no {cv.MODALITIES[modality]} field for case {case}: "
                    + ("the case is not in the input" if case not in scope.cases else
                       f"the input has no {cv.MODALITIES[modality]} image for it"))
    _kept_line(kept)


def timings_not_rewritten(scope: Scope | None, output_dir: str) -> None:
    """An earlier run's timings file was removed and this run wrote none: say so (after the run)."""
    if scope is not None and scope.old_timings and not os.path.exists(os.path.join(output_dir, scope.timings_name)):
        log.warning("removed %s left by an earlier run (this run wrote no timings: no pair was written)",
                    scope.timings_name)
