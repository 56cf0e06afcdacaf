"""Registration: features -> robust global pose -> deformable discrete -> Adam refinement -> full field."""
import hashlib
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from interfaces.cpus import allowed_cpus  # standard library only: the CPUs this process may use

from .config import ModelConfig
from .crop import fan_box, pose_in_full_frame
from .evidence import chance_figures
from .pyramid import FeaturePyramid
from .safety import (Candidate, Decision, Estimate, cross_sequence_decision, positions_of, single_sequence_decision,
                     small_shift_gain)
from .stages import (GlobalPose, adam_refinement, deformable_search, evidence_level_mm, full_resolution_field,
                     global_pose, matches_worse_than_identity, plausible_scale, refine_stages)


@dataclass
class Result:
    displacement: np.ndarray
    stage_seconds: dict = field(default_factory=dict)
    device: str = "cpu"
    affine_mm: np.ndarray = None    # global pose: fixed mm -> moving mm
    min_jacobian: float = None      # of the written field
    deform_scale: float = 1.0       # < 1 when the plausibility check had to shrink the deformable part
    global_passes: int = 0          # pyramid passes the global stage ran (convergence check)
    fell_back: bool = False         # True when the result matched worse than identity (identity written)
    global_rejected: bool = False   # True when the global pose moved the fan > max_mean_shift_mm (identity kept)
    safety: str = "kept"            # the safety net's action: "kept", or what was written instead
    safety_reason: str = ""         # why, in one line
    shift_rms_mm: float = None      # rms displacement of the chosen field over the fan (None: gate off)
    gain: float = 1.0               # < 1: the small-shift gate wrote the field scaled toward the identity
    evidence_ratio: float = None    # the chosen field's matching cost / the median chance cost (model/evidence.py)
    identity_evidence_ratio: float = None  # the same for the identity (no registration)


def _to_device(array, dev):
    """(1, i, j, k) float32 tensor on dev from an array of any memory layout: the bytes go as they are (e.g.
    the NIfTI's Fortran order) and the transposition to C order happens on the device."""
    return torch.from_numpy(np.asarray(array, dtype=np.float32)).to(dev).contiguous()[None]


def _pick_device(device):
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Registration:
    """The model: `register(fixed, moving, spacing, target)` -> Result, with the settings of `config`."""

    def __init__(self, config: ModelConfig, device=None):
        if not isinstance(config, ModelConfig):
            raise TypeError(f"Registration needs a ModelConfig (model.load_config()), got {type(config).__name__}")
        self.cfg = config
        self.device = _pick_device(device if device is not None else config.device)
        torch.set_num_threads(config.threads or allowed_cpus())  # null: affinity and cgroup quota
        self.threads = torch.get_num_threads()
        # the first use_deterministic_algorithms call imports torch._inductor's config (seconds, docs/MODEL.md):
        # pay it here, with the model load, not inside the first pair's registration (state unchanged)
        torch.use_deterministic_algorithms(torch.are_deterministic_algorithms_enabled(),
                                           warn_only=torch.is_deterministic_algorithms_warn_only_enabled())
        self._case = None           # fingerprint of the case the memo below belongs to
        self._estimates: dict = {}  # target sequence -> Estimate, for that case
        self._fixed_base = None     # its iUS features and weight on the base grid

    @property
    def device_name(self):
        if self.device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(self.device)})"
        return "cpu"

    def register(self, fixed: np.ndarray, moving: dict[str, np.ndarray], spacing, target: str = "ceT1") -> Result:
        """fixed: the iUS, moving: {sequence: MR}, all float32 (i, j, k) arrays on the fixed grid, `spacing` its
        mm per voxel (i, j, k); target: the sequence the field is for (the others are independent evidence)."""
        if target not in moving:
            raise KeyError(f"target {target!r} not in moving sequences {sorted(moving)}")
        prev = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32,
                torch.backends.cuda.matmul.allow_tf32)
        torch.use_deterministic_algorithms(True, warn_only=True)
        # TF32 (on by default for cuDNN convolutions) rounds like fp16, which moves the field by tenths of a
        # mm (docs/MODEL.md): full fp32 keeps CUDA within rounding of the CPU result
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            torch.manual_seed(self.cfg.seed)
            with torch.no_grad(), warnings.catch_warnings():
                # grid_sample's CUDA backward always warns; its atomicAdd writes only the gradient of the
                # sampled volume, which is never requested here (only the grid is optimised), so it is
                # deterministic in this use. Any other nondeterministic op still warns.
                warnings.filterwarnings("ignore", message=".*grid_sampler_3d_backward_cuda.*")
                return self._register(fixed, moving, tuple(float(s) for s in spacing), target)
        finally:
            torch.use_deterministic_algorithms(prev[0])
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev[1:]

    def _register(self, fixed, moving, spacing, target):
        cfg, times = self.cfg, {}
        cross_check = cfg.safety.cross_sequence and len(moving) > 1
        sequences = [target] + ([n for n in moving if n != target] if cross_check else [])
        # every estimate of the case works on the same box (the fan's, model/crop.py): one frame for the net
        box = fan_box(fixed, spacing, cfg.crop, cfg.features.fixed_mask_threshold)
        fixed, moving = box.cut(fixed), {n: box.cut(v) for n, v in moving.items()}
        estimates = {n: self._estimate_once(fixed, moving, spacing, n, times) for n in sequences}
        with self._stage(times, "full_field"):
            if cross_check and not estimates[target].fell_back:
                decision = cross_sequence_decision(estimates, target, cfg.safety.tolerance, self.device,
                                                   cfg.safety.fuse_sequences)
            else:
                decision = single_sequence_decision(estimates[target], self.device)
            level = estimates[target].evidence
            chance = chance_figures(level, positions_of(decision.candidate, level))
            identity_chance = chance_figures(level, level.identity())
            decision = self._evidence_check(decision, chance.ratio)
            chosen = decision.candidate
            shift_rms, gain = self._small_shift(chosen, estimates[target], decision.action == "fused")
            pose = pose_in_full_frame(chosen.pose, box, spacing)
            disp, jmin, scale = full_resolution_field(GlobalPose(pose), chosen.deformation, chosen.scale,
                                                      box.full_shape, spacing, box, gain)
        times["total"] = sum(times.values())
        own = estimates[target]
        return Result(displacement=disp, stage_seconds=times, device=self.device_name,
                      affine_mm=pose.cpu().numpy(), min_jacobian=jmin, deform_scale=scale,
                      global_passes=own.pose.passes, fell_back=own.fell_back, global_rejected=own.pose.rejected,
                      safety=decision.action, safety_reason=decision.reason, shift_rms_mm=shift_rms, gain=gain,
                      evidence_ratio=chance.ratio, identity_evidence_ratio=identity_chance.ratio)

    def _evidence_check(self, decision: Decision, ratio: float) -> Decision:
        """The identity instead of a field the images do not support better than chance (model/evidence.py)."""
        evidence = self.cfg.safety.evidence
        if not evidence.enabled or ratio <= evidence.max_chance_ratio or decision.action == "identity":
            return decision
        identity = Candidate("identity", torch.eye(4, device=self.device), None, 0.0)
        return Decision(identity, "identity", f"no evidence in the images: the {decision.candidate.name}'s matching "
                        f"cost is x{ratio:.3f} of the median of the MR mirrored out of register (evidence needs at most "
                        f"x{evidence.max_chance_ratio:g}); the iUS may be noise or not this patient's", decision.ratios)

    def _small_shift(self, chosen, estimate, fused: bool) -> tuple[float | None, float]:
        """(rms displacement over the fan in mm, gain) of the chosen field; (None, 1) with the gate off. A field
        from one sequence's registration alone carries that sequence's whole error (the mean of two partly
        cancels it), so it has its own, higher floor (docs/MODEL.md, "One MR sequence")."""
        gate = self.cfg.safety.small_shift
        if not gate.enabled:
            return None, 1.0
        ramp = gate if fused else gate.one_sequence
        return small_shift_gain(chosen, estimate.evidence, ramp.floor_mm, ramp.full_mm)

    def _estimate_once(self, fixed, moving, spacing, sequence, times) -> Estimate:
        """The estimate for one target sequence, computed once per case: the next pair of the same case
        (the other sequence as target) finds it here instead of registering it again."""
        case = _fingerprint(fixed, moving, spacing)
        if self._case != case:  # a new case: keep one case's estimates and iUS features at most
            self._case, self._estimates, self._fixed_base = case, {}, None
        if sequence not in self._estimates:
            self._estimates[sequence] = self._estimate(fixed, moving, spacing, sequence, times)
        return self._estimates[sequence]

    def _estimate(self, fixed, moving, spacing, target, times) -> Estimate:
        """Features -> global pose -> deformable search -> Adam refinement -> plausibility, for one target
        sequence's MR alone."""
        cfg = self.cfg
        with self._stage(times, "features"):
            pyramid = FeaturePyramid(_to_device(fixed, self.device), _to_device(moving[target], self.device),
                                     spacing, cfg, self._fixed_base)
            self._fixed_base = pyramid.fixed_base  # the case's other sequence reuses the iUS features
            for res in _levels_used(cfg, pyramid):
                pyramid.at(res)
        with self._stage(times, "global"):
            pose = global_pose(pyramid, cfg)
        with self._stage(times, "deformable_discrete"):
            deformation = deformable_search(pyramid, pose, cfg)
        with self._stage(times, "refine"):
            for settings in refine_stages(cfg, pyramid):
                deformation = adam_refinement(pyramid, pose, deformation, settings)
        with self._stage(times, "full_field"):
            scale = plausible_scale(deformation, cfg)
            fell_back = bool(cfg.plausibility.fallback_to_identity
                             and matches_worse_than_identity(pyramid, pose, deformation, scale, cfg))
        return Estimate(pose, deformation, scale, pyramid.at(evidence_level_mm(cfg, pyramid)), target, fell_back)

    @contextmanager
    def _stage(self, times, name):
        """Seconds of one stage (CUDA work finished before the clock stops)."""
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0


def _fingerprint(fixed, moving, spacing) -> str:
    """Identifies a case's inputs (every 5th voxel of each image, shapes, spacing): cheap, and two different
    cases cannot share it in practice."""
    digest = hashlib.blake2b(repr((tuple(fixed.shape), tuple(spacing), sorted(moving))).encode(), digest_size=16)
    for array in [fixed] + [moving[n] for n in sorted(moving)]:
        digest.update(np.ascontiguousarray(np.asarray(array)[::5, ::5, ::5], dtype=np.float32).tobytes())
    return digest.hexdigest()


def _levels_used(cfg: ModelConfig, pyramid) -> list[float]:
    """The working levels (mm) the enabled stages ask for: their features are made up front, as one stage."""
    g, dd = cfg.global_stage, cfg.deformable_discrete
    final = [g.final_level_mm] if g.enabled and g.final_level_mm else []
    return ((list(g.levels_mm) if g.enabled else []) + final + (list(dd.levels_mm) if dd.enabled else [])
            + [stage.level_mm for stage in refine_stages(cfg, pyramid)])
