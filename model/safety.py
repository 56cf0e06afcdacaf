"""The safety net on independent evidence: is a result better than doing nothing?

The optimised cost alone cannot say so (a wrong structure matched well lowers it too). When both MR sequences
are given, they show the same pre-operative anatomy (ceT1 is co-registered to T2, docs/CONVENTIONS.md §2), so a right field
must also align the sequence it was not computed from. Each sequence's own result, the rigid pose alone of each,
and the identity are scored on BOTH sequences' features; the target's own result is kept when the other
sequence agrees, else the candidate that both sequences prefer, else the identity. docs/MODEL.md, "Safety net".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .pyramid import Level
from .stages import Deformation, GlobalPose, matching_cost
from .warp import apply_affine, resize_field


@dataclass
class Estimate:
    """One sequence's registration at working resolution, before the full-resolution field."""
    pose: GlobalPose
    deformation: Deformation | None
    scale: float
    evidence: Level            # the refinement level with this sequence's features: where candidates are compared
    sequence: str
    fell_back: bool = False    # the optimised cost said worse than identity: this estimate IS the identity


@dataclass
class Candidate:
    name: str                  # "ceT1 field", "T2 pose only", "identity", ...
    pose: torch.Tensor         # (4, 4)
    deformation: Deformation | None
    scale: float


@dataclass
class Decision:
    candidate: Candidate
    action: str                # "kept" or what was used instead
    reason: str                # one line for the log and timings.json
    ratios: dict               # candidate name -> {sequence: cost / identity cost}


def positions_of(candidate: Candidate, level: Level) -> torch.Tensor:
    """Where the level's voxels land in the moving image under a candidate: pose(x + scale * u(x))."""
    x = level.identity()
    if candidate.deformation is None or candidate.scale == 0:
        return apply_affine(candidate.pose, x)
    return apply_affine(candidate.pose, x + candidate.scale * resize_field(candidate.deformation.field, level.shape))


def candidates(estimates: dict[str, Estimate], device) -> list[Candidate]:
    """Each sequence's result, each sequence's rigid pose alone, the identity (in this order)."""
    identity = torch.eye(4, device=device)
    out = []
    for name, est in estimates.items():
        out.append(Candidate(f"{name} field", identity if est.fell_back else est.pose.matrix,
                             None if est.fell_back else est.deformation, 0.0 if est.fell_back else est.scale))
    for name, est in estimates.items():
        if not est.fell_back and est.deformation is not None:
            out.append(Candidate(f"{name} pose only", est.pose.matrix, None, 0.0))
    out.append(Candidate("identity", identity, None, 0.0))
    return out


def cost_ratios(cands: list[Candidate], estimates: dict[str, Estimate]) -> dict:
    """candidate name -> {sequence: its cost / the identity's cost}, each sequence on its own features."""
    identity_cost = {s: matching_cost(e.evidence, e.evidence.identity()) for s, e in estimates.items()}
    return {c.name: {s: matching_cost(e.evidence, positions_of(c, e.evidence)) / max(identity_cost[s], 1e-12)
                     for s, e in estimates.items()} for c in cands}


def fused_candidate(fields: list[Candidate]) -> Candidate:
    """The mean of several sequences' fields, as one candidate: positions mean_s A_s(x + s_s u_s(x)) + t_s =
    A(x + u(x)) + t with A, t the mean pose and u = A^-1 mean_s(A_s s_s u_s). The sequences' errors are partly
    independent (each has its own contrast-specific bias against the iUS), so their mean is closer to the truth
    on average (docs/MODEL.md, "Issue 15")."""
    name = "fused " + "+".join(c.name.split()[0] for c in fields)
    matrix = torch.stack([c.pose for c in fields]).mean(0)
    moved = [c.pose[:3, :3] @ (c.scale * c.deformation.field).reshape(3, -1)
             for c in fields if c.deformation is not None and c.scale != 0]
    if not moved:
        return Candidate(name, matrix, None, 0.0)
    template = next(c.deformation for c in fields if c.deformation is not None and c.scale != 0)
    mean_moved = torch.stack(moved).sum(0) / len(fields)
    field = torch.linalg.solve(matrix[:3, :3], mean_moved).reshape(template.field.shape)
    return Candidate(name, matrix, Deformation(field, template.spacing), 1.0)


def cross_sequence_decision(estimates: dict[str, Estimate], target: str, tolerance: float, device,
                            fuse: bool = False) -> Decision:
    """Keep the target's own result when the other sequence fits it no worse than the identity (+ tolerance);
    else the candidate whose worse ratio over both sequences is lowest, if that is below 1; else the identity.
    With `fuse`, a kept result is replaced by the mean of every sequence's field that passes the same test
    (late fusion), when that mean too fits every sequence better than the identity."""
    cands = candidates(estimates, device)
    ratios = cost_ratios(cands, estimates)
    own = next(c for c in cands if c.name == f"{target} field")
    others = [s for s in estimates if s != target]
    if all(ratios[own.name][s] <= 1.0 + tolerance for s in others):
        # sorted by name (ceT1 before T2): every target of the case gets the same mean, bit for bit
        agreeing = sorted((c for c in cands if c.name.endswith(" field") and c.deformation is not None
                           and all(r <= 1.0 + tolerance for r in ratios[c.name].values())),
                          key=lambda c: c.name.lower())
        if fuse and len(agreeing) > 1 and any(c is own for c in agreeing):
            fused = fused_candidate(agreeing)
            ratios.update(cost_ratios([fused], estimates))
            if max(ratios[fused.name].values()) < 1.0:
                return Decision(fused, "fused", f"the fields of {', '.join(c.name.split()[0] for c in agreeing)} "
                                "agree with every sequence; their mean written", ratios)
        return Decision(own, "kept", f"{'/'.join(others)} agrees with the {target} field", ratios)
    worst = {c.name: max(ratios[c.name].values()) for c in cands}
    best = min((c for c in cands if c.name != "identity"), key=lambda c: worst[c.name])
    disagreeing = ", ".join(f"{s} cost x{ratios[own.name][s]:.3f} of identity" for s in others)
    if worst[best.name] < 1.0:
        return Decision(best, best.name, f"the {target} field fits {disagreeing}; {best.name} fits every "
                        f"sequence better than identity (worst x{worst[best.name]:.3f})", ratios)
    identity = cands[-1]
    return Decision(identity, "identity", f"the {target} field fits {disagreeing}; no candidate fits every "
                    f"sequence better than identity", ratios)


def single_sequence_decision(estimate: Estimate, device) -> Decision:
    """One sequence: its result, or the identity when the optimised cost says it matches worse."""
    if estimate.fell_back:
        return Decision(Candidate("identity", torch.eye(4, device=device), None, 0.0), "identity",
                        f"the {estimate.sequence} result matches worse than identity (optimised cost)", {})
    return Decision(Candidate(f"{estimate.sequence} field", estimate.pose.matrix, estimate.deformation,
                              estimate.scale), "kept", "", {})


def gate_gain(rms_mm: float, floor_mm: float, full_mm: float) -> float:
    """The small-shift gate's ramp: 0 at or below floor_mm, 1 from full_mm, linear between."""
    return min(max((rms_mm - floor_mm) / max(full_mm - floor_mm, 1e-9), 0.0), 1.0)


def small_shift_gain(candidate: Candidate, level: Level, floor_mm: float, full_mm: float) -> tuple[float, float]:
    """The rms displacement (mm) a candidate makes over the fan, and the gain its field is written with:
    0 at or below floor_mm, 1 from full_mm, linear between. On real iUS the matching lands 1-2 mm from the
    landmarks from any start (docs/MODEL.md, "Issue 15"), so a field that small is indistinguishable from
    the matching's own bias and writing it whole can only move a well-aligned case away from its alignment."""
    fan = level.weight[0] > 0
    if not bool(fan.any()):
        return 0.0, 1.0
    moved = positions_of(candidate, level) - level.identity()
    rms = float(moved[:, fan].double().pow(2).sum(0).mean().sqrt())
    return rms, gate_gain(rms, floor_mm, full_mm)
