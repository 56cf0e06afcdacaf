"""Simulated post-resection cases with exact ground truth (ReMIND2Reg format).

Everything written by this module is SIMULATED from real MRI anatomy (MNI152 template or the real
ReMIND-022 patient).  Construction (exact by design, no inverse needed for the images):

1. Fixed grid: `shape` voxels, isotropic `spacing`, oblique affine; the probe apex sits at a craniotomy on
   the brain surface above the tumour, the beam axis points at the tumour.
2. Ground-truth field u (fixed voxel x -> moving x + u(x)), an analytic sum of gravity-directed sinking
   (largest near the craniotomy), cavity collapse (radial, around the resection cavity), a few smooth
   random Gaussian bumps and a small rigid navigation error.  It is sampled on the fixed grid (float32);
   the ground truth IS that grid field with trilinear interpolation, as the evaluation uses it.
3. Moving MR (ceT1, T2) = the pre-operative anatomy resampled onto the fixed grid, undeformed.
4. Fixed iUS = rendered from the pre-operative anatomy pulled back through u: tissue at fixed x is the
   tissue at moving x + u(x) (the same trilinear u).  The resection cavity is the tumour (+ margin) pulled
   back the same way.  Hence for every fixed point p, the MR structure at p + u(p) is what the iUS shows at p.
5. Landmarks: salient MR points q (structure-tensor corners) inside the fan, away from the cavity; the
   fixed point p solves p + u(p) = q (analytic, fixed-point iteration), the moving landmark written is
   p + u_grid(p) (trilinear sample of the written field; its distance to q is in docs/SIMULATION.md).
The inverse field (moving -> fixed) can be computed with fields.invert_field (fixed-point iteration).
"""
from __future__ import annotations

import json
import os

import numpy as np
import nibabel as nib
from scipy import ndimage

from interfaces import conventions as cv
from .anatomy import load_anatomy
from .fields import rotation_matrix, sample_field, jacobian_det_min
from . import ultrasound

REF_FOV_MM = 128.0  # 256 x 0.5 mm, the ReMIND2Reg box


# ----------------------------------------------------------------------------- geometry helpers
def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _perp_frame(b):
    """Two unit vectors orthogonal to b (and each other)."""
    a = np.array([1.0, 0, 0]) if abs(b[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = _unit(np.cross(b, a))
    e2 = np.cross(b, e1)
    return e1, e2


def _tilt(b, rng, max_deg, min_deg=0.0):
    """b tilted by a random angle in [min_deg, max_deg) towards a random direction."""
    e1, e2 = _perp_frame(b)
    ang = np.deg2rad(rng.uniform(min_deg, max_deg))
    phi = rng.uniform(0, 2 * np.pi)
    return _unit(np.cos(ang) * b + np.sin(ang) * (np.cos(phi) * e1 + np.sin(phi) * e2))


# ----------------------------------------------------------------------------- tumour and cavity
# the synthetic glioma's pre-operative look: radius range (mm); ceT1 of the enhancing rim, of a non-enhancing
# rim and of the necrotic core (x median WM); core extent (level < core_level, 1 = the tumour border);
# oedema T1 darkening and T2 gain; enhancing: None = drawn (75 % enhance), True/False = forced (stress cases)
TUMOUR_LOOK = dict(radius_mm=(7.0, 13.0), rim=1.35, rim_non_enhancing=0.8, core=0.55, core_level=0.6,
                   oedema_t1=0.15, oedema_t2=90.0, enhancing=None)


def add_synthetic_tumour(src: dict, rng, look: dict | None = None) -> dict:
    """Copy of a tumour-free anatomy with a synthetic glioma (enhancing rim, necrotic core, oedema).

    look: overrides of TUMOUR_LOOK. With a look, the copy also holds "tumour_core" (the necrotic core mask)."""
    L = dict(TUMOUR_LOOK, **(look or {}))
    s = dict(src)
    brain = src["brain"] > 0.5
    shape = src["t1"].shape
    # rng draws in this order: centre, radius, shape (_tumour_level), enhancement: a seed's tumour stays the same
    c = _tumour_centre(src, brain, rng)
    radius = rng.uniform(*L["radius_mm"])
    sl, level = _tumour_level(c, radius, shape, rng)
    tum = (level < 1.0).astype(np.float32) * brain[sl]
    core = (level < L["core_level"]).astype(np.float32) * tum
    oedema = np.clip((1.7 - level) / 0.7, 0, 1) * (1 - tum) * src["wm"][sl]
    wm_t1 = np.median(src["t1"][src["wm"] > 0.9])
    for key in ("t1", "t2", "tumour", "wm", "gm", "csf"):
        s[key] = src[key].copy()
    enh = rng.uniform(0.0, 1.0) > 0.25
    if L["enhancing"] is not None:
        enh = bool(L["enhancing"])
    _paint_tumour(s["t1"][sl], s["t2"][sl], tum, core, oedema, wm_t1, enh, L)
    s["tumour"][sl] = np.maximum(s["tumour"][sl], tum)
    if look is not None:
        s["tumour_core"] = np.zeros(shape, np.float32)
        s["tumour_core"][sl] = core
    return s


def _tumour_centre(src: dict, brain: np.ndarray, rng) -> np.ndarray:
    """A random brain voxel 14-30 mm deep, away from the midline (|x| > 20 mm), in the upper, not occipital,
    brain (world z in (0, 60) mm, y > -80 mm): where a craniotomy and a probe can reach it."""
    depth, aff = src["depth"], src["affine"]
    idx = np.argwhere(brain & (depth > 14) & (depth < 30))
    world = idx @ aff[:3, :3].T + aff[:3, 3]
    ok = (np.abs(world[:, 0]) > 20) & (world[:, 2] > 0) & (world[:, 2] < 60) & (world[:, 1] > -80)
    idx = idx[ok]
    return idx[rng.integers(len(idx))].astype(np.float64)


def _tumour_level(c: np.ndarray, radius: float, shape, rng):
    """(box, level) in a box of +-2.2 radii around c: level = distance from c in a randomly oriented
    ellipsoid's metric, in radii, plus smooth noise (an irregular border); the tumour is level < 1."""
    lo = np.maximum(np.floor(c - 2.2 * radius).astype(int), 0)
    hi = np.minimum(np.ceil(c + 2.2 * radius).astype(int) + 1, shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    g = np.indices(hi - lo, dtype=np.float64)
    axes = rng.uniform(0.75, 1.3, 3)
    R = rotation_matrix(rng.uniform(-np.pi, np.pi, 3))
    d = np.moveaxis(g, 0, -1) + lo - c
    d = d @ R.T / axes
    rr = np.linalg.norm(d, axis=-1) / radius
    noise = ndimage.gaussian_filter(rng.normal(size=rr.shape), 2.5)
    noise /= noise.std() + 1e-9
    return sl, rr + 0.12 * noise


def _paint_tumour(t1, t2, tum, core, oedema, wm_t1, enh: bool, L: dict) -> None:
    """The tumour's intensities written into the T1 and T2 boxes in place: core and rim (enhancing or not)
    relative to the median WM T1, oedema darkening T1 and brightening T2."""
    rim = tum - core
    t1[:] = t1 * (1 - tum) + tum * (L["core"] * wm_t1 * core / np.maximum(tum, 1e-6)
                                   + (L["rim"] if enh else L["rim_non_enhancing"]) * wm_t1 * rim
                                   / np.maximum(tum, 1e-6))
    t1[:] = t1 * (1 - L["oedema_t1"] * oedema)
    t2[:] = t2 * (1 - tum) + tum * (230.0 * core + 170.0 * rim) / np.maximum(tum, 1e-6) * (tum > 0)
    t2[:] = t2 + oedema * L["oedema_t2"]


def cavity_map(src: dict, rng, margin_mm=(2.0, 5.0), rim_mm=1.3):
    """Resection cavity (pre-operative source space): tumour + irregular margin of margin_mm, and its
    hyperechoic rim of mean thickness rim_mm. Returns (cavity, rim, centre_vox)."""
    full_tum = src["tumour"] > 0.5
    sp = src["spacing"]
    # work in a box around the tumour (speed); the returned maps are full-size
    pad = np.ceil(20.0 / sp).astype(int)
    nz = np.argwhere(full_tum)
    lo = np.maximum(nz.min(0) - pad, 0)
    hi = np.minimum(nz.max(0) + pad + 1, full_tum.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    tum = full_tum[box]
    brain_box = src["brain"][box]
    dist = ndimage.distance_transform_edt(~tum, sampling=sp)
    noise = ndimage.gaussian_filter(rng.normal(size=tum.shape).astype(np.float32), 2.0)
    noise /= noise.std() + 1e-9
    margin = rng.uniform(*margin_mm)
    cav = ((dist + 1.2 * noise) < margin) & (brain_box > 0.5)
    cav = ndimage.binary_opening(cav, iterations=1) | tum
    # irregular hyperechoic rim (blood, haemostatic material, damaged tissue) just outside the cavity
    dout = ndimage.distance_transform_edt(~cav, sampling=sp)
    noise2 = ndimage.gaussian_filter(rng.normal(size=tum.shape).astype(np.float32), 1.2)
    noise2 /= noise2.std() + 1e-9
    thick = rim_mm + 0.9 * noise2
    rim = np.clip(1.0 - dout / np.maximum(thick, 0.2), 0, 1) * (~cav)
    rim *= np.clip(0.8 + 0.5 * noise2, 0.2, 1.6)
    centre = np.argwhere(cav).mean(0) + lo
    cav_full = np.zeros(full_tum.shape, np.float32)
    rim_full = np.zeros(full_tum.shape, np.float32)
    cav_full[box] = cav
    rim_full[box] = rim
    return cav_full, rim_full, centre


def cavity_contents(src: dict, cavity_src, rng, blood_fraction: float, haemostat_fraction: float,
                    haemostat_mm: float = 2.0):
    """What a fresh cavity holds besides saline (source grid): blood clots (echogenic blobs, ~2 mm, filling
    blood_fraction of the cavity) and haemostatic material lining the wall (patches within haemostat_mm of it,
    haemostat_fraction of that lining; very bright and shadowing in iUS). Returns (blood, haemostat), float32."""
    sp = src["spacing"]
    pad = np.ceil(3.0 / sp).astype(int)
    nz = np.argwhere(cavity_src > 0.5)
    lo = np.maximum(nz.min(0) - pad, 0)
    hi = np.minimum(nz.max(0) + pad + 1, cavity_src.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    cav = cavity_src[box] > 0.5
    blood = np.zeros(cav.shape, np.float32)
    haemostat = np.zeros(cav.shape, np.float32)
    if blood_fraction > 0:
        noise = ndimage.gaussian_filter(rng.normal(size=cav.shape).astype(np.float32), 2.0 / sp)
        clot = cav & (noise > np.quantile(noise[cav], 1 - blood_fraction))
        blood = ndimage.gaussian_filter(clot.astype(np.float32), 0.5 / sp) * cav   # soft clot borders
    if haemostat_fraction > 0:
        lining = cav & (ndimage.distance_transform_edt(cav, sampling=sp) <= haemostat_mm)
        noise = ndimage.gaussian_filter(rng.normal(size=cav.shape).astype(np.float32), 3.0 / sp)
        haemostat = (lining & (noise > np.quantile(noise[lining], 1 - haemostat_fraction))).astype(np.float32)
    full = [np.zeros(cavity_src.shape, np.float32) for _ in range(2)]
    full[0][box], full[1][box] = blood, haemostat
    return full[0], full[1]


# ----------------------------------------------------------------------------- deformation
class BrainShift:
    """Analytic ground-truth displacement in fixed-voxel units (u(x): fixed x -> moving x + u(x))."""

    def __init__(self, apex, g, cc, sig_s, sig_c, rbf_c, rbf_s, rbf_a, rot, trans, amp_s, amp_c, lam=1.0):
        self.apex, self.g, self.cc = apex, g, cc
        self.sig_s, self.sig_c = sig_s, sig_c
        self.rbf_c, self.rbf_s, self.rbf_a = rbf_c, rbf_s, rbf_a
        self.rot, self.trans = rot, trans          # rigid part (angles rad, voxels)
        self.amp_s, self.amp_c, self.lam = amp_s, amp_c, lam

    def with_lam(self, lam):
        """The same shift with the non-rigid amplitude lam (sinking and bumps; not the collapse or the rigid part)."""
        return BrainShift(**{k: v for k, v in self.__dict__.items() if k != "lam"}, lam=lam)

    def _gauss(self, axes, centre, sigma):
        """Separable Gaussian on a grid given as three 1-D coordinate arrays."""
        gi = [np.exp(-((a - c) ** 2) / (2 * sigma * sigma)).astype(np.float32) for a, c in zip(axes, centre)]
        return gi[0][:, None, None] * gi[1][None, :, None] * gi[2][None, None, :]

    def points(self, x):
        x = np.asarray(x, np.float64)
        R = rotation_matrix(self.rot)
        u = (x - self.apex) @ (R - np.eye(3)).T + self.trans
        ws = np.exp(-((x - self.apex) ** 2).sum(-1) / (2 * self.sig_s ** 2))
        u = u - self.lam * self.amp_s * ws[:, None] * self.g
        dc = x - self.cc
        wc = np.exp(0.5 - (dc ** 2).sum(-1) / (2 * self.sig_c ** 2)) / self.sig_c
        u = u + self.amp_c * wc[:, None] * dc
        for c, s, a in zip(self.rbf_c, self.rbf_s, self.rbf_a):
            w = np.exp(-((x - c) ** 2).sum(-1) / (2 * s * s))
            u = u + self.lam * w[:, None] * a
        return u

    def grid(self, shape):
        axes = [np.arange(n, dtype=np.float32) for n in shape]
        R = rotation_matrix(self.rot) - np.eye(3)
        u = np.empty(tuple(shape) + (3,), np.float32)
        ws = self._gauss(axes, self.apex, self.sig_s)
        wc = self._gauss(axes, self.cc, self.sig_c) * np.float32(np.exp(0.5) / self.sig_c * self.amp_c)
        rb = [self._gauss(axes, c, s) for c, s in zip(self.rbf_c, self.rbf_s)]
        for ch in range(3):
            lin = (R[ch, 0] * (axes[0] - self.apex[0]))[:, None, None] \
                + (R[ch, 1] * (axes[1] - self.apex[1]))[None, :, None] \
                + (R[ch, 2] * (axes[2] - self.apex[2]))[None, None, :]
            out = u[..., ch]
            out[:] = lin + np.float32(self.trans[ch])
            out -= np.float32(self.lam * self.amp_s * self.g[ch]) * ws
            dc = (axes[ch] - np.float32(self.cc[ch]))
            sh = [1, 1, 1]
            sh[ch] = -1
            out += wc * dc.reshape(sh)
            for w, a in zip(rb, self.rbf_a):
                out += np.float32(self.lam * a[ch]) * w
        return u

    def invert_points(self, q, iterations=300):
        p = np.asarray(q, np.float64).copy()
        for _ in range(iterations):
            p_new = q - self.points(p)
            if np.abs(p_new - p).max() < 1e-10:
                return p_new
            p = p_new
        return p


def draw_target_tre(rng) -> float:
    """Per-case mean initial TRE (mm): lognormal, mean ~5, sd ~1.6, within [2.5, 10]."""
    sd_log = np.sqrt(np.log(1 + (1.6 / 5.0) ** 2))
    return float(np.clip(rng.lognormal(np.log(5.0) - sd_log ** 2 / 2, sd_log), 2.5, 10.0))


# ----------------------------------------------------------------------------- case stages
class _Grid:
    """The fixed grid's size: shape, isotropic spacing (mm), field of view (mm) and the scene scale.

    Scene lengths are given for the ReMIND2Reg box (128 mm) and multiplied by `scale` = FOV / 128 mm, so a
    small grid at coarse spacing is the same scene at low resolution."""

    def __init__(self, shape, spacing):
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),) * 3
        self.shape = tuple(int(n) for n in shape)
        self.sp = float(spacing)
        self.fov = np.asarray(self.shape) * self.sp
        self.scale = float(self.fov.min() / REF_FOV_MM)
        self.mm = 1.0 / self.sp                     # one millimetre in voxels


def _anatomy_with_tumour(anatomy: str, rng, look: dict | None = None) -> dict:
    """The pre-operative source anatomy; a template without a tumour gets a synthetic one (with `look`)."""
    src = load_anatomy(anatomy)
    if not src["real_tumour"] or src["tumour"].sum() == 0:
        src = add_synthetic_tumour(src, rng, look)
    return src


def _source_to_world(src, vox):
    affine = src["affine"]
    return vox @ affine[:3, :3].T + affine[:3, 3]


def _craniotomy_and_beam(src, cavity_centre_src, grid: _Grid, rng, edge: dict | None = None):
    """World position of the craniotomy (a brain-surface point near the cavity) and the beam direction.

    The surgeon opens where the tumour is closest to the surface: the entry is drawn among the surface points
    within 8 mm of the closest one, and the beam aims at the cavity with a hand-held tilt of up to 12 degrees.
    edge (stress cases): the entry is drawn in a band farther out (entry_band_mm beyond the closest point) and
    the beam is tilted by a further tilt_deg towards where the brain ends, so that the fan looks along the
    brain's edge."""
    cavity_world = _source_to_world(src, cavity_centre_src)
    surface = np.argwhere((src["depth"] > 0) & (src["depth"] <= 1.5))
    surface_world = _source_to_world(src, surface.astype(np.float64))
    dist = np.linalg.norm(surface_world - cavity_world, axis=1)
    if edge is None:
        candidates = np.nonzero(dist < dist.min() + 8.0 * max(grid.scale, 0.5))[0]
    else:
        near, far = (dist.min() + b * max(grid.scale, 0.5) for b in edge["entry_band_mm"])
        candidates = np.nonzero((dist >= near) & (dist < far))[0]
    entry_world = surface_world[candidates[rng.integers(len(candidates))]]
    beam = _tilt(_unit(cavity_world - entry_world), rng, 12.0)
    if edge is not None:
        beam = _tilt_towards_brain_edge(src, entry_world, beam, edge["tilt_deg"])
    return entry_world, beam


def _tilt_towards_brain_edge(src, entry_world, beam, tilt_deg, reach_mm=60.0):
    """The beam tilted by tilt_deg towards the azimuth (of 16) whose ray from the entry leaves the brain most
    within reach_mm: a fan that looks along the brain's edge rather than into its depth."""
    e1, e2 = _perp_frame(beam)
    angle = np.deg2rad(tilt_deg)
    to_src = np.linalg.inv(src["affine"])
    steps = np.arange(5.0, reach_mm, 1.0)
    best, best_outside = beam, -1.0
    for phi in np.linspace(0, 2 * np.pi, 16, endpoint=False):
        ray = _unit(np.cos(angle) * beam + np.sin(angle) * (np.cos(phi) * e1 + np.sin(phi) * e2))
        world = entry_world + steps[:, None] * ray
        vox = world @ to_src[:3, :3].T + to_src[:3, 3]
        outside = float((ndimage.map_coordinates(src["brain"], vox.T, order=1) < 0.5).mean())
        if outside > best_outside:
            best, best_outside = ray, outside
    return best


def _oblique_fixed_grid(entry_world, beam, src, grid: _Grid, rng):
    """Voxel-to-world affine of the fixed grid, its axis directions (world, columns i, j, k), the apex in fixed
    voxels and the fixed-to-source voxel map.

    Like the organisers' grids: oblique and case-specific, the third index axis roughly along the beam (within
    20 degrees), a random in-plane angle, and the probe apex near the middle of the k = 0 face, 4 mm inside."""
    apex_world = entry_world - 2.0 * beam          # probe face just above the cortex (saline coupling)
    k_dir = _tilt(beam, rng, 20.0)
    e1, e2 = _perp_frame(k_dir)
    phi = rng.uniform(0, 2 * np.pi)
    i_dir = np.cos(phi) * e1 + np.sin(phi) * e2
    j_dir = np.cross(k_dir, i_dir)
    directions = np.stack([i_dir, j_dir, k_dir], axis=1)   # columns = world directions of i, j, k
    if np.linalg.det(directions) < 0:
        directions[:, 1] *= -1
    shape, sp = grid.shape, grid.sp
    apex_vox = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, 4.0 * grid.scale / sp])
    affine = np.eye(4)
    affine[:3, :3] = directions * sp
    affine[:3, 3] = apex_world - directions @ (apex_vox * sp)
    fixed_to_src = np.linalg.inv(src["affine"]) @ affine
    return affine, directions, apex_vox, fixed_to_src


def _draw_fan(apex_vox, beam_vox, grid: _Grid, rng, small: dict | None = None) -> dict:
    """A 3-D probe's pyramid-like sector (fixed voxel units) reaching most of the box depth; `small` (stress
    cases) sets a narrower and shorter one (a small probe footprint or a shallow depth setting)."""
    fan = dict(apex=apex_vox, axis=beam_vox,
               depth=float(rng.uniform(0.86, 0.95) * grid.fov[2] / grid.sp),
               half_lat=float(np.deg2rad(rng.uniform(36, 44))),
               half_elev=float(np.deg2rad(rng.uniform(30, 38))),
               lat_dir=float(rng.uniform(0, np.pi)))
    if small is not None:
        fan.update(depth=float(small["depth_fraction"] * grid.fov[2] / grid.sp),
                   half_lat=float(np.deg2rad(small["half_lat_deg"])),
                   half_elev=float(np.deg2rad(small["half_elev_deg"])))
    return fan


def _draw_brain_shift(beam, directions, apex_vox, cavity_centre_fixed, cavity_src, src_spacing, grid: _Grid, rng,
                      offset: dict | None = None):
    """The deformation model with its random parameters; the non-rigid amplitude (lam) is set later.

    Sinking along gravity (within 25 degrees of the beam) is largest at the craniotomy; the cavity collapse
    is radial around the cavity centre; four smooth bumps add irregularity; a small rigid part stands for
    the navigation error. offset (stress cases): a larger navigation error (navigation_mm along
    navigation_direction, fixed voxel axes) and a sinking sinking_width times wider, so that a 10-15 mm mean
    displacement stays invertible."""
    mm, fov, scale = grid.mm, grid.fov, grid.scale
    gravity_vox = directions.T @ _tilt(beam, rng, 25.0)
    cavity_radius = (3 * cavity_src.sum() * np.prod(src_spacing) / (4 * np.pi)) ** (1 / 3)   # equal volume
    n_bumps = 4
    bump_centres = apex_vox + rng.uniform(-0.35, 0.35, (n_bumps, 3)) * fov / grid.sp \
        + np.array([0, 0, 0.3]) * fov / grid.sp
    sig_c = (cavity_radius + rng.uniform(5, 9)) * mm
    shift = BrainShift(
        apex=apex_vox, g=gravity_vox, cc=cavity_centre_fixed,
        sig_s=rng.uniform(55, 80) * scale * mm, sig_c=sig_c,
        rbf_c=bump_centres, rbf_s=rng.uniform(22, 34, n_bumps) * scale * mm,
        rbf_a=rng.normal(0, 0.15, (n_bumps, 3)) * mm,
        rot=np.deg2rad(rng.normal(0, 0.7, 3)), trans=rng.normal(0, 0.7, 3) * scale * mm,
        amp_s=1.0 * mm, amp_c=0.0)
    # the collapse keeps its drawn size (it is not scaled by lam); capped so that it cannot fold
    shift.amp_c = min(rng.uniform(1.5, 3.0) * mm * scale, 0.3 * sig_c)
    if offset is not None:
        shift.trans = shift.trans + np.asarray(offset["navigation_direction"]) * offset["navigation_mm"] * scale * mm
        shift.sig_s = shift.sig_s * offset["sinking_width"]
    return shift


def _landmark_candidates(src, cavity_src, fixed_to_src, fan, grid: _Grid):
    """Salient pre-operative points (fixed voxels), best first: inside the fan, away from the cavity,
    at least 8 mm apart (at most 40)."""
    from scipy.spatial import cKDTree
    mm, scale = grid.mm, grid.scale
    peaks = src["peaks"]
    peaks = peaks[src["tumour"][tuple(peaks.T)] < 0.5]
    cavity_mm = np.argwhere(cavity_src > 0.5) * src["spacing"]
    far = cKDTree(cavity_mm).query(peaks * src["spacing"])[0] > 6.0
    peaks = peaks[far & (src["depth"][tuple(peaks.T)] > 2.0)]
    q_all = (peaks - fixed_to_src[:3, 3]) @ np.linalg.inv(fixed_to_src[:3, :3]).T
    inside = ultrasound.in_fan(q_all, fan, margin_vox=5.0 * scale * mm, min_depth_vox=8.0 * scale * mm)
    inside &= np.all((q_all > 3) & (q_all < np.asarray(grid.shape) - 4), axis=1)
    q_all, saliency = q_all[inside], src["saliency"][tuple(peaks[inside].T)]
    chosen = []
    separation = 8.0 * scale * mm
    for i in np.argsort(-saliency):
        if all(np.linalg.norm(q_all[i] - q_all[j]) > separation for j in chosen):
            chosen.append(i)
        if len(chosen) >= 40:
            break
    return q_all[chosen]


def _scale_shift_to_target(shift: BrainShift, q_calibration, target_mm, grid: _Grid):
    """Scale the non-rigid amplitude so that the mean landmark displacement is the target (bisection), then
    shrink it until the sampled field is safely invertible (min det J >= 0.3). Returns (shift, u, min det J)."""
    def mean_displacement_mm(lam):
        moved = shift.with_lam(lam)
        p = moved.invert_points(q_calibration)
        return float(np.linalg.norm(q_calibration - p, axis=1).mean() * grid.sp)

    lo, hi = 0.0, 2.0
    while mean_displacement_mm(hi) < target_mm and hi < 64:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_displacement_mm(mid) < target_mm else (lo, mid)
    lam = 0.5 * (lo + hi)
    shift = shift.with_lam(lam)
    u = shift.grid(grid.shape)
    step = max(1, grid.shape[0] // 48)             # a coarse check is enough for these smooth fields
    jmin = jacobian_det_min(u, step)
    while jmin < 0.3:
        lam *= 0.8
        shift = shift.with_lam(lam)
        u = shift.grid(grid.shape)
        jmin = jacobian_det_min(u, step)
    return shift, u, jmin


def _place_landmarks(shift: BrainShift, u, q, fan, n_landmarks, grid: _Grid):
    """Fixed points p with p + u(p) = q that are still in the fan after the shift; the moving landmark written
    is p + u_grid(p), exact for the written field. Returns (p, moving, the analytic q of the kept points)."""
    mm, scale = grid.mm, grid.scale
    p = shift.invert_points(q)
    keep = ultrasound.in_fan(p, fan, margin_vox=3.0 * scale * mm, min_depth_vox=6.0 * scale * mm)
    keep &= np.all((p > 1) & (p < np.asarray(grid.shape) - 2), axis=1)
    p = p[keep][:n_landmarks]
    q_kept = q[keep][:n_landmarks]
    return p, p + sample_field(u, p), q_kept


def _moving_mr(src, fixed_to_src, anatomy, seed, grid: _Grid):
    """The pre-operative ceT1 and T2 resampled onto the fixed grid, undeformed."""
    def resample(vol):
        return ndimage.affine_transform(vol, fixed_to_src[:3, :3], fixed_to_src[:3, 3], output_shape=grid.shape,
                                        order=1, mode="constant", cval=0.0).astype(np.float32)

    t1 = resample(src["t1"])
    t2 = resample(src["t2"])
    if anatomy == "mni152":  # the template is an average: add MR-like noise
        mr_noise = np.random.default_rng([int(seed), 11])
        for img, level in ((t1, 2.0), (t2, 3.0)):
            img += (mr_noise.normal(0, level, grid.shape) * (img > 0)).astype(np.float32)
            np.maximum(img, 0, out=img)
    return t1, t2


def _tumour_on_fixed_grid(src, fixed_to_src, grid: _Grid) -> dict:
    """The pre-operative tumour (and its necrotic core, when synthetic) on the fixed grid, as uint8 masks
    (nearest neighbour): where the moving MR shows the tumour; for checking stress cases."""
    out = {}
    for key in ("tumour", "tumour_core"):
        if key in src:
            out[key + "_mask"] = ndimage.affine_transform(src[key], fixed_to_src[:3, :3], fixed_to_src[:3, 3],
                                                          output_shape=grid.shape, order=0) > 0.5
    return out


# ----------------------------------------------------------------------------- main entry
def make_simulated_case(seed: int, anatomy: str = "mni152", shape=(256, 256, 256), spacing: float = 0.5,
                        target_tre_mm: float | None = None, n_landmarks: int | None = None,
                        us_params: dict | None = None, stress: dict | None = None, renderer: str = "classic") -> dict:
    """One simulated post-resection case (SIMULATED iUS, real MRI anatomy) with exact ground truth.

    shape, spacing: fixed grid (isotropic).  The field of view is shape*spacing; lengths of the scene
    (fan depth, deformation widths) scale with FOV/128 mm, and so does the initial TRE target, so a
    64^3 grid at 2 mm is the full scene at low resolution and 64^3 at 0.5 mm is a crop-sized scene.
    Returns dict(fixed, moving={"ceT1","T2"}, spacing, affine, fixed_landmarks, moving_landmarks,
    true_displacement, fan_mask, ...).  All images float32 (i, j, k) on the fixed grid.
    stress: the stressors of a stress case (simulation.stress.draw_stressors; None for an ordinary case).
    renderer: "classic" (ultrasound.render, hand-set; the default) or "learned" (appearance.render: brain tissue
    from the model fitted to the real RESECT iUS, resources/sim/us_appearance.json).
    """
    # Longer than a screen on purpose: this is the construction (module docstring, steps 1-5) as a flat list of
    # named stages in the order they draw from `rng`; splitting it further would hide that order.
    # one random stream for the scene, drawn in this order (the MR noise and the iUS have their own)
    rng = np.random.default_rng([int(seed), 7])
    grid = _Grid(shape, spacing)
    stress = stress or {}
    src = _anatomy_with_tumour(anatomy, rng, stress.get("tumour"))
    cavity_src, rim_src, cavity_centre_src = cavity_map(src, rng, **stress.get("cavity_shape", {}))

    entry_world, beam = _craniotomy_and_beam(src, cavity_centre_src, grid, rng, stress.get("brain_edge"))
    affine, directions, apex_vox, fixed_to_src = _oblique_fixed_grid(entry_world, beam, src, grid, rng)
    fan = _draw_fan(apex_vox, directions.T @ beam, grid, rng, stress.get("small_fan"))

    cavity_centre_fixed = np.linalg.solve(fixed_to_src[:3, :3], cavity_centre_src - fixed_to_src[:3, 3])
    shift = _draw_brain_shift(beam, directions, apex_vox, cavity_centre_fixed, cavity_src, src["spacing"], grid,
                              rng, stress.get("large_offset"))
    target = (draw_target_tre(rng) if target_tre_mm is None else float(target_tre_mm)) * grid.scale

    q = _landmark_candidates(src, cavity_src, fixed_to_src, fan, grid)
    n_lm = int(rng.integers(10, 21)) if n_landmarks is None else int(n_landmarks)
    if len(q) < 3:
        raise RuntimeError("too few landmark candidates inside the fan")
    shift, u, jmin = _scale_shift_to_target(shift, q[: max(n_lm, 3)], target, grid)
    p, moving_lm, q_kept = _place_landmarks(shift, u, q, fan, n_lm, grid)

    t1, t2 = _moving_mr(src, fixed_to_src, anatomy, seed, grid)
    contents = None
    if "cavity_contents" in stress:
        contents = cavity_contents(src, cavity_src, np.random.default_rng([int(seed), 17]),
                                   **stress["cavity_contents"])
    render = ultrasound.render
    if renderer == "learned":
        from .appearance import render
    elif renderer != "classic":
        raise ValueError(f"unknown renderer {renderer!r} (classic | learned)")
    us, fan_mask, us_info = render(src, cavity_src, rim_src, fixed_to_src, u, fan, grid.sp,
                                              grid.shape, np.random.default_rng([int(seed), 13]), us_params,
                                              contents)
    if stress:
        us_info.update(_tumour_on_fixed_grid(src, fixed_to_src, grid))

    sp = grid.sp
    return dict(
        fixed=us, moving={"ceT1": t1, "T2": t2}, spacing=(sp, sp, sp), affine=affine,
        fixed_landmarks=p.astype(np.float64), moving_landmarks=moving_lm.astype(np.float64),
        true_displacement=u, fan_mask=fan_mask, fan=fan, min_jacobian=jmin,
        initial_tre_mm=np.linalg.norm((moving_lm - p) * sp, axis=1), target_tre_mm=target, anatomy=anatomy,
        seed=int(seed), landmark_grid_vs_analytic_vox=float(np.abs(moving_lm - q_kept).max()),
        source=f"SIMULATED iUS from real MRI anatomy ({anatomy}); deformation synthetic", **us_info)


# ----------------------------------------------------------------------------- writers
def write_case(case: dict, out_dir: str, case_id: int, write_field: bool = True) -> dict:
    """Write one case in the organisers' layout.  Returns the eval_pairs entries of the case."""
    img_dir = os.path.join(out_dir, "imagesTr")
    lm_dir = os.path.join(out_dir, "landmarksTr")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lm_dir, exist_ok=True)
    aff = np.asarray(case["affine"], np.float64)

    def save(arr, path, dtype=np.float32):
        img = nib.Nifti1Image(np.asarray(arr, dtype), aff)
        img.set_qform(aff, code=1)
        img.set_sform(aff, code=1)
        nib.save(img, path)

    case_id = f"{int(case_id):04d}"
    fixed_name = cv.image_name(case_id, cv.FIXED_INDEX)
    save(case["fixed"], os.path.join(img_dir, fixed_name))
    np.savetxt(os.path.join(lm_dir, cv.landmark_name(case_id, cv.FIXED_INDEX)), case["fixed_landmarks"],
               delimiter=",", fmt="%.6f")
    pairs = []
    for key in ("ceT1", "T2"):
        if key not in case["moving"]:
            continue
        m = cv.MODALITY_INDEX[key]
        save(case["moving"][key], os.path.join(img_dir, cv.image_name(case_id, m)))
        np.savetxt(os.path.join(lm_dir, cv.landmark_name(case_id, m)), case["moving_landmarks"], delimiter=",",
                   fmt="%.6f")
        pairs.append({"fixed": f"./imagesTr/{fixed_name}", "moving": f"./imagesTr/{cv.image_name(case_id, m)}"})
    if write_field and case.get("true_displacement") is not None:
        fdir = os.path.join(out_dir, "groundtruthTr")
        os.makedirs(fdir, exist_ok=True)
        # canonical voxel field (i, j, k, 3), fixed voxel x -> moving x + u(x); valid for both MR sequences
        save(case["true_displacement"], os.path.join(fdir, f"disp_{case_id}_0000.nii.gz"))
        if case.get("us_labels") is not None:  # what the fan shows (ultrasound.US_LABELS), for field_errors
            save(case["us_labels"], os.path.join(fdir, f"labels_{case_id}_0000.nii.gz"), np.uint8)
    entry = {"pairs": pairs, "case_id": case_id,
             "initial_tre_mm": float(np.mean(case["initial_tre_mm"])) if "initial_tre_mm" in case else None,
             "source": case.get("source", "")}
    if "stressors" in case:  # stress cases (simulation.stress)
        entry["stressors"] = case["stressors"]
    return entry


def write_dataset(cases, out_dir: str, write_field: bool = True, start_id: int = 1, extra: dict | None = None) -> str:
    """Write an iterable of cases (ids start_id, start_id+1, ...) and ReMIND2Reg_dataset.json. Returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for n, case in enumerate(cases):
        entries.append(write_case(case, out_dir, start_id + n, write_field=write_field))
    js = {
        "name": "ReMIND2Reg-simulated",
        # each case's own "source" says whether its iUS is simulated or real (hybrid cases)
        "description": "Cases with exact ground truth made by the project (see docs/SIMULATION.md): SIMULATED "
                       "post-resection iUS from real MRI anatomy, or HYBRID (real RESECT iUS, real MRI with a "
                       "synthetic added deformation). See cases[].source.",
        "tensorImageSize": {"0": "3D"},
        "modality": {"0": "US", "1": "ceT1", "2": "T2"},
        "numTraining": len(entries),
        "training": [{"image": p["fixed"], "moving": p["moving"]} for e in entries for p in e["pairs"]],
        "eval_pairs": [p for e in entries for p in e["pairs"]],
        "ground_truth_fields": "groundtruthTr/disp_XXXX_0000.nii.gz: voxel field (i,j,k,3), fixed x -> moving x+u(x)"
                               "; labels_XXXX_0000.nii.gz (simulated cases): "
                               + ", ".join(f"{code} {name}" for code, name in ultrasound.US_LABELS.items()),
        "cases": [{k: e[k] for k in ("case_id", "initial_tre_mm", "source", "stressors") if k in e} for e in entries],
    }
    if extra:
        js.update(extra)
    path = os.path.join(out_dir, "ReMIND2Reg_dataset.json")
    with open(path, "w") as f:
        json.dump(js, f, indent=2)
    return path
