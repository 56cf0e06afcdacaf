"""Registration: features -> robust global pose -> deformable discrete -> Adam refinement -> full field."""
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from interfaces.cpus import allowed_cpus  # standard library only: the CPUs this process may use

from .discrete import discrete_field
from .features import coarsen, level_features, pca_reduce
from .refine import adam_refine
from .rigid import trimmed_fit
from .warp import (apply_affine, downsample, identity_mm, level_grid, min_jacobian_mm, resize_field,
                   sample)


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


def _to_device(array, dev):
    """(1, i, j, k) float32 tensor on dev from an array of any memory layout: the bytes go as they are (e.g.
    the NIfTI's Fortran order) and the transposition to C order happens on the device."""
    return torch.from_numpy(np.asarray(array, dtype=np.float32)).to(dev).contiguous()[None]


def _pick_device(device):
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Registration:
    def __init__(self, config, device=None):
        self.cfg = config
        self.device = _pick_device(device if device is not None else config.get("device"))
        torch.set_num_threads(int(config.get("threads") or allowed_cpus()))  # null: affinity and cgroup quota
        self.threads = torch.get_num_threads()
        # the first use_deterministic_algorithms call imports torch._inductor's config (~1.4 s on the CPU VM):
        # pay it here, with the model load, not inside the first pair's registration (state unchanged)
        torch.use_deterministic_algorithms(torch.are_deterministic_algorithms_enabled(),
                                           warn_only=torch.is_deterministic_algorithms_warn_only_enabled())

    @property
    def device_name(self):
        if self.device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(self.device)})"
        return "cpu"

    def register(self, fixed, moving, spacing, target="ceT1"):
        if target not in moving:
            raise KeyError(f"target {target!r} not in moving sequences {sorted(moving)}")
        prev = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32,
                torch.backends.cuda.matmul.allow_tf32)
        torch.use_deterministic_algorithms(True, warn_only=True)
        # TF32 (on by default for cuDNN convolutions) rounds like fp16, which moves the field by tenths of a
        # mm (docs/MODEL.md): full fp32 keeps CUDA within rounding of the CPU result
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            torch.manual_seed(int(self.cfg.get("seed", 0)))
            with torch.no_grad(), warnings.catch_warnings():
                # grid_sample's CUDA backward always warns; its atomicAdd writes only the gradient of the
                # sampled volume, which is never requested here (only the grid is optimised), so it is
                # deterministic in this use. Any other nondeterministic op still warns.
                warnings.filterwarnings("ignore", message=".*grid_sampler_3d_backward_cuda.*")
                return self._register(fixed, moving, tuple(float(s) for s in spacing), target)
        finally:
            torch.use_deterministic_algorithms(prev[0])
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev[1:]

    # ---------------------------------------------------------------------------------------------
    def _levels(self, shape, spacing, res):
        return level_grid(shape, spacing, res, self.cfg.get("max_working_voxels"))

    def _register(self, fixed, moving, spacing, target):
        cfg, dev = self.cfg, self.device
        half = cfg["precision"] == "fp16"
        times = {}
        t0 = time.perf_counter()
        shape = tuple(fixed.shape)
        names = [target] + ([n for n in moving if n != target] if cfg.get("multi_sequence", True) else [])
        sw = {n: float(cfg["sequence_weights"].get(n, 1.0)) for n in names}
        full = {"us": _to_device(fixed, dev)}
        for n in names:
            full[n] = _to_device(moving[n], dev)

        # MIND on a fine base grid, coarser levels by resampling the features (robust across modalities)
        bshape, bsp = level_grid(shape, spacing, cfg["feature_mm"], cfg.get("max_feature_voxels"))
        us = downsample(full["us"], spacing, bshape, bsp)
        movs = {n: downsample(full[n], spacing, bshape, bsp) for n in names}
        ff, mf, w = level_features(us, movs, bsp, cfg["features"])
        ff, mf = pca_reduce(ff, mf, cfg["features"].get("pca_channels"), w)
        base = (ff, mf, w)
        del us, movs
        cache = {}

        def feats(res):
            key = self._levels(shape, spacing, res)
            if key not in cache:
                lshape, lsp = key
                ff, mf, w = coarsen(*base, bsp, lshape, lsp)
                if half:
                    ff = ff.half()
                    mf = {n: v.half() for n, v in mf.items()}
                cache[key] = (lshape, lsp, ff, mf, w)
            return cache[key]

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize()

        g = cfg["global"]
        dd = cfg["deformable_discrete"]
        rc = cfg["refine"]
        for res in (g["levels_mm"] if g["enabled"] else []) + (dd["levels_mm"] if dd["enabled"] else []) \
                + ([rc["level_mm"]] if rc["enabled"] else []):
            feats(res)
        sync()
        times["features"] = time.perf_counter() - t0

        # --- global: coarse-to-fine discrete search + trimmed rigid/affine fit, iterated ---
        t0 = time.perf_counter()
        A = torch.eye(4, device=dev)
        radii = g["radius"] if isinstance(g["radius"], (list, tuple)) else [g["radius"]] * len(g["levels_mm"])
        n_passes, global_rejected = 0, False
        if g["enabled"]:
            # pyramid passes from the current pose: at least `iterations`, more (up to max_iterations)
            # only while a pass still moves the fan by more than converge_mm (large initial offsets)
            for it in range(max(int(g["iterations"]), int(g.get("max_iterations") or 0))):
                A_start = A.clone()
                for res, rad in zip(g["levels_mm"], radii):
                    lshape, lsp, ff, mf, w = feats(res)
                    x = identity_mm(lshape, lsp, dev)
                    pos = apply_affine(A, x)
                    mfs = [(sample(mf[n].float(), pos, lsp).to(ff.dtype), sw[n]) for n in names]
                    u = discrete_field(ff, mfs, w, lsp, int(rad), cfg["discrete"])
                    sel = (w[0] >= g["min_weight"])
                    if int(sel.sum()) < 20:
                        sel = w[0] > 0
                    src = x[:, sel].t()
                    dst = apply_affine(A, (x + u)[:, sel]).t()
                    A = trimmed_fit(src, dst, w[0][sel], g["model"], g["trim_keep"], g["trim_iterations"])
                n_passes = it + 1
                if n_passes >= int(g["iterations"]):
                    moved = (apply_affine(A, src.t()) - apply_affine(A_start, src.t())).norm(dim=0).max()
                    if float(moved) < float(g.get("converge_mm", 0.0)):
                        break
            # brain shift plus navigation error is bounded: a pose that moves the fan further on average
            # is a false match (e.g. a fan with little tissue in it), so keep the identity pose instead
            mean_shift = float((apply_affine(A, src.t()) - src.t()).norm(dim=0).mean())
            if mean_shift > float(g["max_mean_shift_mm"]):
                A, global_rejected = torch.eye(4, device=dev), True
        sync()
        times["global"] = time.perf_counter() - t0

        # --- deformable discrete (coupled convex) on the posed moving image ---
        t0 = time.perf_counter()
        u_def, u_shape, u_sp = None, None, None
        if dd["enabled"]:
            for res in dd["levels_mm"]:
                lshape, lsp, ff, mf, w = feats(res)
                x = identity_mm(lshape, lsp, dev)
                u_prev = torch.zeros_like(x) if u_def is None else resize_field(u_def, lshape)
                pos = apply_affine(A, x + u_prev)
                mfs = [(sample(mf[n].float(), pos, lsp).to(ff.dtype), sw[n]) for n in names]
                du = discrete_field(ff, mfs, w, lsp, int(dd["radius"]), cfg["discrete"])
                u_def = du + sample(u_prev, x + du, lsp)  # compose: new step first, then the old field
                u_shape, u_sp = lshape, lsp
        sync()
        times["deformable_discrete"] = time.perf_counter() - t0

        # --- Adam refinement ---
        t0 = time.perf_counter()
        if rc["enabled"]:
            lshape, lsp, ff, mf, w = feats(rc["level_mm"])
            u0 = torch.zeros((3,) + lshape, device=dev) if u_def is None else resize_field(u_def, lshape)
            with torch.enable_grad():
                u_def = adam_refine(ff, [(mf[n], sw[n]) for n in names], w, lsp, A, u0, rc)
            u_shape, u_sp = lshape, lsp
        sync()
        times["refine"] = time.perf_counter() - t0

        # --- plausibility + full-resolution field ---
        t0 = time.perf_counter()
        pc = cfg["plausibility"]
        scale = 1.0
        if u_def is not None:
            for _ in range(int(pc["max_scale_halvings"]) + 1):
                if min_jacobian_mm(u_def * scale, u_sp) > pc["min_jacobian"]:
                    break
                scale *= 0.5
            else:
                scale = 0.0
        fell_back = False
        if pc.get("fallback_to_identity", False):
            # safety net: if the result matches worse than doing nothing (weighted MIND SSD on the
            # 2 mm level, all sequences), write the identity: never worse than identity by this measure
            lshape, lsp, ff, mf, w = feats(rc["level_mm"] if rc["enabled"] else dd["levels_mm"][-1])
            x = identity_mm(lshape, lsp, dev)

            def match_cost(pos):
                wsum = w.sum().clamp_min(1.0)
                return sum(sw[n] * float((((ff.float() - sample(mf[n].float(), pos, lsp)) ** 2).mean(0, keepdim=True)
                                          * w).sum() / wsum) for n in names)

            u_l = 0 if u_def is None else scale * resize_field(u_def, lshape)
            c_res = match_cost(apply_affine(A, x + u_l))
            c_id = match_cost(x)
            if c_res > c_id:
                A, u_def, scale, fell_back = torch.eye(4, device=dev), None, 0.0, True
        disp, jmin, scale = self._full_field(A, u_def, scale, shape, spacing, pc)
        sync()
        times["full_field"] = time.perf_counter() - t0
        times["total"] = sum(times.values())
        return Result(displacement=disp, stage_seconds=times, device=self.device_name,
                      affine_mm=A.cpu().numpy(), min_jacobian=jmin, deform_scale=scale,
                      global_passes=n_passes, fell_back=fell_back, global_rejected=global_rejected)

    def _full_field(self, A, u_def, scale, shape, spacing, pc):
        dev = A.device
        sp = torch.tensor(spacing, device=dev).view(3, 1, 1, 1)
        up = None if u_def is None else resize_field(u_def, shape)
        while True:
            x = identity_mm(shape, spacing, dev)
            pos = x if up is None or scale == 0 else x + scale * up
            disp_mm = apply_affine(A, pos) - x
            del pos, x
            jmin = min_jacobian_mm(disp_mm, spacing)
            if jmin > 0 or scale == 0 or up is None:
                break
            scale = scale * 0.5 if scale > 1.0 / 64 else 0.0  # last resort: the global pose alone
        # (i, j, k, 3) as a view of a (3, k, j, i) block: the NIfTI writer's order (i fastest, channel
        # slowest) and the Grand Challenge DSPF array, so neither transposes 200 MB on the CPU
        planes = (disp_mm / sp).permute(0, 3, 2, 1).contiguous().cpu().numpy().astype(np.float32, copy=False)
        return planes.transpose(3, 2, 1, 0), jmin, scale
