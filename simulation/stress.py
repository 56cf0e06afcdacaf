"""Stress cases (SIMULATED): post-resection cases built to provoke the "wrong structure" failure.

The failure seen: the pre-operative ceT1 shows the tumour's bright enhancing rim around a dark necrotic core,
while the post-resection iUS shows the resection cavity with its own bright rim at about the same place, so a
method can pull the MR tumour rim onto the iUS cavity rim (or onto another bright line) and end worse than no
registration. A stress case always has that pair (the tumour as it looks before surgery in the MR, the cavity
with its rim, blood and haemostatic material in the iUS), with random strengths, plus at least one of: a small
fan, a fan at the edge of the brain, a 10-15 mm mean displacement, a low-contrast iUS. The rendering
parameters are jittered per case, so a method tuned to one rendering does not pass them all.

Every stressor and strength is drawn from the seed alone (`draw_stressors`), recorded in the case and in the
dataset JSON (cases[].stressors). The ground truth stays exact: the same construction as any simulated case.
See docs/SIMULATION.md, "Stress cases".
"""
from __future__ import annotations

import numpy as np

from .cases import make_simulated_case

OPTIONAL = ("small_fan", "brain_edge", "large_offset", "low_contrast")
OPTIONAL_PROBABILITY = 0.45
MAX_ATTEMPTS = 5


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def draw_stressors(seed: int, attempt: int = 0, force: dict | None = None) -> dict:
    """The stressors of stress case `seed` (JSON-serialisable). force: {name: True/False} to switch optional
    stressors on or off (tests); the strengths stay random."""
    rng = np.random.default_rng([int(seed), 29, int(attempt)])
    spec = {}
    # the MR side: a strongly enhancing rim around a dark necrotic core, T2-bright oedema around it
    spec["tumour"] = dict(radius_mm=(9.0, 16.0), rim=_u(rng, 1.5, 2.3), core=_u(rng, 0.3, 0.55),
                          core_level=_u(rng, 0.5, 0.75), oedema_t1=_u(rng, 0.15, 0.3),
                          oedema_t2=_u(rng, 90.0, 160.0), enhancing=True)
    # the iUS side: a tight resection (the cavity wall where the enhancing rim was), a rim of varying thickness
    # and brightness, clots and haemostatic material in the cavity (each present in most, not all, cases)
    spec["cavity_shape"] = dict(margin_mm=(1.0, 4.0), rim_mm=_u(rng, 1.0, 2.5))
    spec["cavity_contents"] = dict(
        blood_fraction=_u(rng, 0.1, 0.5) if rng.random() < 0.7 else 0.0,
        haemostat_fraction=_u(rng, 0.2, 0.6) if rng.random() < 0.6 else 0.0,
        haemostat_mm=_u(rng, 1.0, 3.0))
    on = {name: bool(rng.random() < OPTIONAL_PROBABILITY) for name in OPTIONAL}
    if not any(on.values()):
        on[OPTIONAL[int(rng.integers(len(OPTIONAL)))]] = True
    on.update(force or {})
    lat_deg, elev_deg = 36.0, 30.0            # the smallest ordinary fan (cases._draw_fan)
    if on["small_fan"]:
        lat_deg, elev_deg = _u(rng, 18.0, 28.0), _u(rng, 14.0, 22.0)
        spec["small_fan"] = dict(half_lat_deg=lat_deg, half_elev_deg=elev_deg, depth_fraction=_u(rng, 0.5, 0.75))
    if on["brain_edge"]:
        # tilt bounded so that the cavity stays inside the fan
        spec["brain_edge"] = dict(entry_band_mm=(10.0, 25.0), tilt_deg=_u(rng, 0.5, 0.8) * min(lat_deg, elev_deg))
    if on["large_offset"]:
        direction = rng.normal(size=3)
        spec["large_offset"] = dict(target_mm=_u(rng, 10.0, 15.0), navigation_mm=_u(rng, 2.0, 5.0),
                                    navigation_direction=(direction / np.linalg.norm(direction)).tolist(),
                                    sinking_width=_u(rng, 1.2, 1.6))
    spec["render"] = _render_parameters(rng, on["low_contrast"])
    if on["low_contrast"]:
        spec["low_contrast"] = True
    return spec


def _render_parameters(rng, low_contrast: bool) -> dict:
    """ultrasound.DEFAULTS overrides: every stress case gets its own PSF, texture, attenuation, shadowing,
    clutter, gain and cavity-rim brightness; a low-contrast case also gets weak reflectors, nearly equal
    WM/GM echogenicity, a high noise floor, strong log-like compression and more attenuation."""
    P = dict(psf_axial_mm=0.3 * _u(rng, 0.7, 1.5), psf_lat_deg=0.5 * _u(rng, 0.7, 1.5),
             psf_elev_deg=0.7 * _u(rng, 0.7, 1.5), compound=_u(rng, 0.0, 1.0), w_texture=_u(rng, 0.05, 0.25),
             texture_mm=_u(rng, 1.5, 4.0), spec_floor=_u(rng, 0.1, 0.4), mu_db_cm=_u(rng, 0.3, 0.7),
             shadow_k=_u(rng, 0.001, 0.004), reverb=_u(rng, 0.01, 0.05), target_median=_u(rng, 22.0, 38.0),
             w_rim=_u(rng, 30.0, 70.0), e_blood=_u(rng, 0.3, 1.0), w_haemostat=_u(rng, 30.0, 80.0))
    if low_contrast:
        P.update(w_iface=15.0 * _u(rng, 0.2, 0.5), w_ridge=25.0 * _u(rng, 0.2, 0.5), e_gm=0.5,
                 e_wm=0.5 * _u(rng, 1.0, 1.08), noise_floor=0.004 * _u(rng, 4.0, 15.0), gamma=_u(rng, 0.35, 0.5),
                 mu_db_cm=_u(rng, 0.8, 1.2))
        P["w_rim"] *= _u(rng, 0.4, 0.7)
    return P


def make_stress_case(seed: int, anatomy: str = "mni152", shape=(128, 128, 128), spacing: float = 1.0,
                     force: dict | None = None) -> dict:
    """One stress case (see the module docstring); the keys of make_simulated_case plus "stressors".

    A drawn geometry can leave fewer than 3 landmarks in a small or tilted fan: then the stressors are drawn
    again (attempt 1, 2, ...; still a function of the seed alone)."""
    for attempt in range(MAX_ATTEMPTS):
        spec = draw_stressors(seed, attempt, force)
        offset = spec.get("large_offset")
        try:
            case = make_simulated_case(seed, anatomy=anatomy, shape=shape, spacing=spacing,
                                       target_tre_mm=offset["target_mm"] if offset else None,
                                       us_params=spec["render"], stress=spec)
        except RuntimeError:
            continue
        if len(case["fixed_landmarks"]) >= 3:
            break
    else:
        raise RuntimeError(f"stress case seed {seed}: no usable geometry in {MAX_ATTEMPTS} attempts")
    spec["attempt"] = attempt
    case["stressors"] = _summary(spec, case)
    case["source"] = (f"SIMULATED stress case from real MRI anatomy ({anatomy}): "
                      + ", ".join(case["stressors"]["active"]) + "; deformation synthetic")
    return case


def _summary(spec: dict, case: dict) -> dict:
    """What the JSON records: the drawn stressors and the resulting figures of the case."""
    active = ["tumour_vs_cavity"] + [name for name in OPTIONAL if name in spec]
    contents = spec["cavity_contents"]
    active += [name for name, key in (("blood", "blood_fraction"), ("haemostat", "haemostat_fraction"))
               if contents[key] > 0]
    tumour_look = spec["tumour"] if case["anatomy"] == "mni152" else "real tumour of ReMIND-022, its own look"
    return dict(active=active, **{k: v for k, v in spec.items() if k != "tumour"}, tumour=tumour_look,
                fan_fraction=case["fan_fraction"], mean_initial_displacement_mm=float(np.mean(case["initial_tre_mm"])),
                landmarks=int(len(case["fixed_landmarks"])))


def save_figure(cases, path: str) -> str:
    """iUS and ceT1 slices through the tumour centre (index j), one column per case, for a person to look at."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(cases), figsize=(2.3 * len(cases), 4.8), squeeze=False)
    for col, case in enumerate(cases):
        j = int(round(np.argwhere(case["tumour_mask"]).mean(0)[1]))
        t1 = case["moving"]["ceT1"][:, j, :]
        axes[0, col].imshow(case["fixed"][:, j, :], cmap="gray", vmin=0, vmax=100)
        axes[1, col].imshow(t1, cmap="gray", vmin=0, vmax=np.percentile(t1[t1 > 0], 99.5))
        axes[0, col].set_title(f"seed {case['seed']}\n" + "\n".join(
            a.replace("tumour_vs_cavity", "tumour/cavity") for a in case["stressors"]["active"][1:]), fontsize=7)
        for row in range(2):
            axes[row, col].set_axis_off()
    axes[0, 0].text(-0.08, 0.5, "iUS (simulated)", transform=axes[0, 0].transAxes, rotation=90, va="center",
                    ha="right", fontsize=8)
    axes[1, 0].text(-0.08, 0.5, "ceT1 (pre-op)", transform=axes[1, 0].transAxes, rotation=90, va="center",
                    ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


if __name__ == "__main__":  # python -m simulation.stress OUT.png [SEED ...]: the docs picture (128^3 at 1 mm)
    import sys
    seeds = [int(s) for s in sys.argv[2:]] or [4000, 4001, 4002, 4003]
    print(save_figure([make_stress_case(s) for s in seeds], sys.argv[1]))
