"""The learned iUS appearance model (simulation/appearance.py, fit_appearance.py): small grids, fast."""
import os

import numpy as np
import pytest
from scipy import ndimage

from simulation import appearance as A
from simulation.hybrid import DATA_DIR


def _toy(n=32):
    rng = np.random.default_rng(5)
    t1 = ndimage.gaussian_filter(rng.normal(100, 20, (n, n, n)), 2).astype(np.float32)
    t1[:, n // 2 - 1:n // 2 + 1, :] *= 0.3                    # a dark "sulcus"
    idx = np.indices((n, n, n)) - n / 2
    tissue = (np.sqrt((idx ** 2).sum(0)) < n / 2 - 2)
    return t1, tissue


def test_shipped_parameters_are_small_and_complete():
    assert os.path.getsize(A.PARAMS_PATH) < 50_000
    P = A.load_params()
    for key in ("echo", "texture", "histogram", "beam", "speckle"):
        assert key in P
    assert len(P["echo"]["w"]) == 1 + len(A.FEATURE_NAMES)
    assert np.all(np.diff(P["histogram"]["quantiles"]) >= 0)


def test_render_tissue_deterministic_and_inside_tissue_only():
    t1, tissue = _toy()
    a = A.render_tissue(t1, tissue, (1.0, 1.0, 1.0), np.random.default_rng(3), apex_vox=(16, 16, -20),
                        gain=1.0)
    b = A.render_tissue(t1, tissue, (1.0, 1.0, 1.0), np.random.default_rng(3), apex_vox=(16, 16, -20),
                        gain=1.0)
    c = A.render_tissue(t1, tissue, (1.0, 1.0, 1.0), np.random.default_rng(4), apex_vox=(16, 16, -20),
                        gain=1.0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(a[~tissue] == 0) and np.all(a[tissue] >= 1.0) and a.max() <= 255


def test_histogram_follows_the_real_quantile_curve():
    t1, tissue = _toy(40)
    P = A.load_params()
    img = A.render_tissue(t1, tissue, (0.5, 0.5, 0.5), np.random.default_rng(0), gain=1.0)
    want = np.interp([0.05, 0.5, 0.95], P["histogram"]["levels"], P["histogram"]["quantiles"])
    got = np.percentile(img[tissue], [5, 50, 95])
    assert np.allclose(got, want, rtol=0.03)


def test_attenuation_darkens_with_depth():
    t1, tissue = _toy(40)
    P = dict(A.load_params())
    P["beam"] = dict(P["beam"], beta_per_mm=0.05, k_shadow=0.0)
    P["texture"] = dict(P["texture"], scale=0.0)   # no texture: the depth trend alone
    img = A.render_tissue(t1, tissue, (1.0, 1.0, 1.0), np.random.default_rng(0), apex_vox=(20, 20, -30),
                          params=P, gain=1.0)
    near, far = img[:, :, 5:12][tissue[:, :, 5:12]], img[:, :, 28:35][tissue[:, :, 28:35]]
    assert np.median(near) > 1.5 * np.median(far)


def test_texture_field_follows_its_spectrum():
    k = np.linspace(0, 1, 33)[:-1] + 1 / 64
    low = np.where(k < 0.15, 1.0, 0.0)
    high = np.where(k > 0.5, 1.0, 0.0)
    rng = np.random.default_rng(0)
    a = A.texture_field((32, 32, 32), (0.5,) * 3, k, low, rng)
    b = A.texture_field((32, 32, 32), (0.5,) * 3, k, high, rng)
    lag1 = lambda f: np.corrcoef(f[1:].ravel(), f[:-1].ravel())[0, 1]
    assert lag1(a) > 0.8 and lag1(b) < 0.4


def test_learned_renderer_in_a_simulated_case():
    from simulation.cases import make_simulated_case
    from simulation.ultrasound import TISSUE
    c = make_simulated_case(3, anatomy="mni152", shape=(48, 48, 48), spacing=2.0, renderer="learned")
    us, lab, old = c["fixed"], c["us_labels"], c["classic_fixed"]
    assert c["renderer"] == "learned" and us.shape == old.shape == (48, 48, 48)
    assert np.all(us[~c["fan_mask"]] == 0) and np.all(us[c["fan_mask"]] >= 1.0)
    other = c["fan_mask"] & (lab != TISSUE)
    assert np.array_equal(us[other], old[other])            # cavity, gap and bone: the classic look
    assert not np.allclose(us[lab == TISSUE], old[lab == TISSUE])
    with pytest.raises(ValueError):
        make_simulated_case(3, anatomy="mni152", shape=(32, 32, 32), spacing=4.0, renderer="nope")


@pytest.mark.skipif(not os.path.exists(os.path.join(DATA_DIR, "resect-case24", "us.nii.gz")),
                    reason="needs ../shared/data")
def test_fit_on_a_small_crop(tmp_path):
    from simulation import fit_appearance as F
    files = F.real_files()[:2] + F.real_files()[-1:]
    P = F.fit_all(crop=48, files=files, verbose=False, speckle_maxfev=6)
    assert len(P["echo"]["holdout"]) == 6 and np.isfinite(P["echo"]["holdout_mean_r_raw"])
    assert P["texture"]["scale"] > 0 and len(P["texture"]["psd"]) == len(P["texture"]["k"])
    assert P["speckle"]["sigma_axial_mm"] > 0 and np.isfinite(P["speckle"]["w_line"]) and P["speckle"]["n_eval"] > 0
    assert len(P["histogram"]["curves"]) == 3
    assert np.all(np.diff(P["histogram"]["quantiles"]) >= 0)
    t1, tissue = _toy()
    img = A.render_tissue(t1, tissue, (1.0, 1.0, 1.0), np.random.default_rng(0), params=P)
    assert np.all(np.isfinite(img)) and img[tissue].min() >= 1.0


def _fwhm_along(field, axis):
    c = field - field.mean()
    prof = [1.0] + [float((np.take(c, range(l, c.shape[axis]), axis) * np.take(c, range(0, c.shape[axis] - l), axis)
                           ).mean() / c.var()) for l in range(1, 12)]
    return next(i for i, v in enumerate(prof) if v < 0.5)


def test_speckle_is_finer_along_the_beam():
    # sigma 0.4 mm along the beam (axis 2), 1.6 mm across: the autocorrelation must be narrower along axis 2,
    # whichever way the beam is given (a beam ignored or read in the wrong axis makes them equal or swapped)
    for beam, ax in (((0.0, 0.0, 1.0), 2), ((1.0, 0.0, 0.0), 0)):
        s = A.speckle_log((40, 40, 40), (0.5,) * 3, np.random.default_rng(0), 0.4, 1.6, beam)
        assert abs(s.mean()) < 1e-3 and abs(s.std() - 1) < 1e-3
        widths = [_fwhm_along(s, a) for a in range(3)]
        assert widths[ax] < min(w for a, w in enumerate(widths) if a != ax)


def test_valley_map_marks_thin_dark_structures_only():
    t1 = np.full((32, 32, 32), 100.0, np.float32)
    t1[:, 10, :] = 40.0           # a dark sheet (a sulcus on T1): a bright line on iUS
    t1[:, 22, :] = 160.0          # a bright sheet: no line
    v = A.valley_map(t1 / 100.0, (0.5,) * 3, 0.75)
    assert v[16, 10, 16] > 0.1 and v[16, 22, 16] < 0.1 * v[16, 10, 16] and v[16, 16, 16] < 0.01 * v[16, 10, 16]


def test_case_histogram_stays_between_the_real_curves():
    P = A.load_params()
    H = P["histogram"]
    curves = np.asarray(H["curves"])
    assert len(curves) >= 10
    qs = [A.case_quantiles(H, np.random.default_rng(s)) for s in range(20)]
    for q in qs:
        assert np.all(q >= curves.min(0) - 1e-6) and np.all(q <= curves.max(0) + 1e-6)
    assert np.std([q[190] for q in qs]) > 1.0          # the case's bright tail does vary
    assert np.allclose(A.case_quantiles(H, np.random.default_rng(0), gain=2.0), 2 * np.asarray(H["quantiles"]))


def test_sheet_reflectors_cover_and_thickness():
    rng = np.random.default_rng(0)
    few = A.sheet_reflectors((40, 40, 40), (0.5,) * 3, rng, 5.0, 0.7, 8.0, 0.1)
    many = A.sheet_reflectors((40, 40, 40), (0.5,) * 3, np.random.default_rng(0), 5.0, 0.7, 8.0, 0.9)
    assert few.min() >= 0 and few.max() <= 1
    assert (few > 0.5).mean() < 0.5 * (many > 0.5).mean()
    assert 0.02 < (many > 0.5).mean() < 0.4            # thin sheets, not a filled volume
