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
    for key in ("echo", "texture", "histogram", "beam"):
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
    P = F.fit_all(crop=48, files=files, verbose=False)
    assert len(P["echo"]["holdout"]) == 6 and np.isfinite(P["echo"]["holdout_mean_r_raw"])
    assert P["texture"]["scale"] > 0 and len(P["texture"]["psd"]) == len(P["texture"]["k"])
    assert np.all(np.diff(P["histogram"]["quantiles"]) >= 0)
    t1, tissue = _toy()
    img = A.render_tissue(t1, tissue, (1.0, 1.0, 1.0), np.random.default_rng(0), params=P)
    assert np.all(np.isfinite(img)) and img[tissue].min() >= 1.0
