"""Model tests: CI-sized volumes on the CPU (the whole file should run in about a minute)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from model import Registration, load_config
from model.warp import downsample, level_grid, min_jacobian_mm, resize_field

# recovery tests with 2-3 mm shifts: the small-shift gate (tested in test_safety.py) would scale them down
FAST = {"refine": {"iterations": 30}, "refine_fine": {"iterations": 30}, "global": {"iterations": 1, "max_iterations": 2},
        "safety": {"small_shift": {"enabled": False}}}


def blobs(shape, seed=0, sigma=3.0):
    rng = np.random.default_rng(seed)
    v = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return ((v - v.min()) / (v.max() - v.min()) + 0.05).astype(np.float32)


def shifted(img, t):
    """moving(y) = img(y - t): fixed voxel x matches moving x + t, so the true field is +t."""
    return ndi.shift(img, t, order=1, mode="nearest").astype(np.float32)


def reg(device="cpu", **over):
    cfg = load_config(overrides={**FAST, **over})
    return Registration(cfg, device=device)


def interior(d, m=6):
    return d[m:-m, m:-m, m:-m]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_translation_each_axis_sign_and_channel(axis):
    fixed = blobs((48, 48, 48), seed=axis)
    t = [0.0, 0.0, 0.0]
    t[axis] = 3.0
    res = reg().register(fixed, {"ceT1": shifted(fixed, t)}, (1.0, 1.0, 1.0), "ceT1")
    d = res.displacement
    assert d.shape == (48, 48, 48, 3) and d.dtype == np.float32
    med = np.median(interior(d).reshape(-1, 3), axis=0)
    assert abs(med[axis] - 3.0) < 0.6, med
    for c in range(3):
        if c != axis:
            assert abs(med[c]) < 0.6, med


def test_mixed_modality_improves_and_no_folds():
    mov0 = blobs((56, 56, 56), seed=3)
    t = np.array([2.5, -2.0, 1.5])
    mov = shifted(mov0, t)
    rng = np.random.default_rng(1)
    fixed = (np.sin(4.0 * mov0) ** 2 + 0.05 * rng.standard_normal(mov0.shape) + 0.2).astype(np.float32)
    fixed = np.clip(fixed, 0.01, None)
    res = reg().register(fixed, {"T2": mov}, (1.0, 1.0, 1.0), "T2")
    pts = rng.uniform(12, 44, size=(40, 3))
    u = np.stack([ndi.map_coordinates(res.displacement[..., c], pts.T, order=3) for c in range(3)], 1)
    tre_id = np.linalg.norm(np.broadcast_to(t, pts.shape), axis=1).mean()
    tre = np.linalg.norm(u - t, axis=1).mean()
    assert tre < 0.5 * tre_id, (tre, tre_id)
    assert res.min_jacobian > 0
    assert min_jacobian_mm(torch.from_numpy(res.displacement).permute(3, 0, 1, 2), (1, 1, 1)) > 0


def test_deterministic_and_cpu_only():
    fixed = blobs((40, 44, 36), seed=5)
    mov = shifted(fixed, (1.0, 2.0, -1.0))
    r1 = reg(device="cpu").register(fixed, {"ceT1": mov, "T2": mov}, (1.0, 1.0, 1.0), "ceT1")
    r2 = reg(device="cpu").register(fixed, {"ceT1": mov, "T2": mov}, (1.0, 1.0, 1.0), "ceT1")
    assert r1.device == "cpu"
    assert np.array_equal(r1.displacement, r2.displacement)
    assert set(r1.stage_seconds) >= {"features", "global", "refine", "total"}


def test_pooling_grid_exact_on_non_dividing_sizes():
    # a linear ramp must be reproduced exactly at every level voxel, corners included
    shape, sp = (45, 50, 37), (0.5, 0.7, 0.9)
    idx = np.indices(shape).astype(np.float32)
    ramp = torch.from_numpy(idx[0] * 0.3 + idx[1] * -0.2 + idx[2] * 0.7)[None]
    for res in (2.0, 3.0, 5.0):
        lshape, lsp = level_grid(shape, sp, res)
        out = downsample(ramp, sp, lshape, lsp)[0].numpy()
        li = np.indices(lshape).astype(np.float64)
        full = [li[c] * lsp[c] / sp[c] for c in range(3)]
        want = full[0] * 0.3 + full[1] * -0.2 + full[2] * 0.7
        assert np.abs(out - want).max() < 1e-3, res
        # corners of level and full grid coincide
        assert abs((lshape[0] - 1) * lsp[0] - (shape[0] - 1) * sp[0]) < 1e-6
    # a constant field stays constant up to the very edge after upsampling
    u = torch.ones(3, 7, 9, 5) * torch.tensor([1.0, -2.0, 3.0]).view(3, 1, 1, 1)
    up = resize_field(u, shape)
    assert torch.allclose(up, torch.tensor([1.0, -2.0, 3.0]).view(3, 1, 1, 1).expand_as(up))


def test_translation_at_edges_non_dividing_size():
    shape = (45, 51, 38)
    fixed = blobs(shape, seed=7)
    res = reg().register(fixed, {"ceT1": shifted(fixed, (2.0, 0.0, -2.0))}, (1.0, 1.0, 1.0), "ceT1")
    d = res.displacement
    # the field near every face (not just the centre) carries the translation
    for sl in [d[3], d[-4], d[:, 3], d[:, -4], d[:, :, 3], d[:, :, -4]]:
        med = np.median(sl.reshape(-1, 3), axis=0)
        assert np.abs(med - np.array([2.0, 0.0, -2.0])).max() < 0.8, med


def test_config_single_place(tmp_path, monkeypatch):
    on_disk = json.loads((Path(__file__).resolve().parents[1] / "resources" / "config.json").read_text())
    monkeypatch.delenv("REMIND2REG_CONFIG", raising=False)
    assert load_config().to_dict() == on_disk  # resources/config.json IS the default: no second copy in code
    import model.config as mc
    assert not hasattr(mc, "DEFAULTS")
    # a partial override file (like /opt/ml/model/config.json) merges over resources/config.json
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"refine": {"iterations": 7}}))
    c1 = load_config(str(p))
    assert c1.refine.iterations == 7 and c1.refine.lr == on_disk["refine"]["lr"]
    assert c1.to_dict()["global"] == on_disk["global"]
    monkeypatch.setenv("REMIND2REG_CONFIG", str(p))  # the runner resolves it (the model reads no environment)
    from runner.settings import read_settings
    c2 = load_config(read_settings().config_file)
    assert c2.refine.iterations == 7 and c2.global_stage.enabled is True
    assert load_config().to_dict() == on_disk
    assert load_config(overrides={"global": {"enabled": False}}).global_stage.enabled is False
    # unknown keys are refused with the key named, in files and in overrides
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"refine": {"iteratons": 7}}))
    with pytest.raises(ValueError, match="refine.iteratons"):
        load_config(str(bad))
    with pytest.raises(ValueError, match="nonsense"):
        load_config(overrides={"nonsense": 1})
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path / "missing.json"))


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "resect-case24" / "us.nii.gz"


@pytest.mark.skipif(not DATA.is_file(), reason="RESECT case 24 not available")
def test_resect_hybrid_improves():
    from helpers_cases import make_case, tre
    c = make_case(shift_mm=(5.0, -4.0, 3.0), angles_deg=(2, -2, 3), smooth_amp_mm=2.0, seed=1)
    res = Registration(load_config(), device="cpu").register(
        c["us"], {"ceT1": c["ceT1"], "T2": c["T2"]}, c["spacing"], "ceT1")
    t_id = tre(np.zeros(c["us"].shape + (3,), np.float32), c["lm_fix"], c["lm_mov"], c["spacing"]).mean()
    t_m = tre(res.displacement, c["lm_fix"], c["lm_mov"], c["spacing"]).mean()
    assert t_m < 0.45 * t_id, (t_m, t_id)
    assert res.min_jacobian > 0


# the least improvement over identity an as-given test demands where the gate lets a field through (measured
# 0.032-0.033 mm there): a model that writes the identity must fail those tests, not only a worse one
IMPROVES_MM = 0.01


@pytest.mark.skipif(not DATA.is_file(), reason="RESECT case 24 not available")
def test_resect_as_given_is_not_made_worse():
    # the real case with no added deformation (identity 1.10 mm: the navigation's own alignment) must not end
    # worse than identity, whichever sequence is the target (docs/MODEL.md, "Issue 15": the small-shift gate)
    from evaluation.metrics import tre
    from simulation.hybrid import make_hybrid_case
    c = make_hybrid_case(seed=0, magnitude_mm=0.0, with_true_displacement=False)
    registration = Registration(load_config(), device="cpu")
    identity = tre(c["fixed_landmarks"], c["moving_landmarks"], np.zeros(c["fixed"].shape + (3,), np.float32),
                   c["spacing"]).mean()
    for target in ("ceT1", "T2"):
        res = registration.register(c["fixed"], c["moving"], c["spacing"], target)
        after = tre(c["fixed_landmarks"], c["moving_landmarks"], res.displacement, c["spacing"]).mean()
        # and better than identity, so that a model writing zeros (or a gate that always closes) fails here:
        # measured 2026-12-08 1.068 against 1.101 mm for both targets (the fused field at gain 0.10)
        assert after <= identity - IMPROVES_MM, (target, after, identity, res.gain)
        assert 0 < res.gain < 1 and np.abs(res.displacement).max() > 0.1 and res.min_jacobian > 0


@pytest.fixture(scope="module")
def as_given_256():
    """RESECT-24 as given (no added deformation) in the challenge's 256^3 box, made once for the tests below."""
    from simulation.hybrid import embed_case, make_hybrid_case
    return embed_case(make_hybrid_case(seed=0, magnitude_mm=0.0, with_true_displacement=False), 256)


def tre_as_given(case, margin_mm, moving, target):
    """(TRE after, TRE of the identity, result) of one pair of `case` registered at one margin of the fan's box."""
    from evaluation.metrics import tre
    registration = Registration(load_config(overrides={"crop": {"margin_mm": margin_mm}}), device="cpu")
    res = registration.register(case["fixed"], moving, case["spacing"], target)
    identity = tre(case["fixed_landmarks"], case["moving_landmarks"], None, case["spacing"]).mean()
    after = tre(case["fixed_landmarks"], case["moving_landmarks"], res.displacement, case["spacing"]).mean()
    return after, identity, res


@pytest.mark.skipif(not DATA.is_file(), reason="RESECT case 24 not available")
@pytest.mark.parametrize("margin_mm,improves", [(8.0, True), (21.0, False)])
def test_resect_as_given_in_the_challenge_box_is_not_made_worse(as_given_256, margin_mm, improves):
    # where the working grids fall on the anatomy moves the field of a well-aligned real case by tenths of a mm:
    # with the gate at floor 1.5 / full 3 mm these two margins of the fan's box made RESECT-24 as given worse
    # than identity in a 256^3 box (1.44 and 1.27 against 1.10 mm; docs/MODEL.md, "The gate across grid
    # placements"); the product's gate must hold for any placement, not for the default margin's alone.
    # Measured 2026-12-08: at 8 mm the field gets through (gain 0.12) and improves (1.069 against 1.101 mm), so
    # there a model writing zeros fails; at 21 mm the product writes the identity itself (gain 0)
    after, identity, res = tre_as_given(as_given_256, margin_mm, as_given_256["moving"], "ceT1")
    assert after <= identity + 1e-6, (margin_mm, after, identity, res.shift_rms_mm, res.gain)
    if improves:
        assert after <= identity - IMPROVES_MM and res.gain > 0, (margin_mm, after, identity, res.gain)


@pytest.mark.skipif(not DATA.is_file(), reason="RESECT case 24 not available")
@pytest.mark.parametrize("margin_mm", [20.0, 8.0])
def test_resect_as_given_with_one_mr_is_not_made_worse(as_given_256, margin_mm):
    # one MR sequence (as in about a third of the challenge's cases): its field carries that sequence's whole
    # error, nothing averages it; with the 2 / 4 mm gate FLAIR alone made the case as given worse at the default
    # margin (1.14 > 1.10 mm) and at 8 mm (1.36); the one_sequence gate (2.6 / 4 mm) must not. Here the identity is
    # the right answer (measured 2026-12-08: gain 0 at both margins, the field's rms 2.0 and 2.2 mm under the
    # 2.6 mm floor), so a model writing zeros passes this test and fails the two above; this one fails when one
    # MR gets the fused sequences' gate (gain 0.30 at 8 mm, checked)
    after, identity, res = tre_as_given(as_given_256, margin_mm, {"T2": as_given_256["moving"]["T2"]}, "T2")
    assert after <= identity + 1e-6, (margin_mm, after, identity, res.shift_rms_mm, res.gain)
    assert res.gain < 0.2


def test_global_pose_beyond_the_shift_bound_is_rejected():
    # a 3 mm translation is found by the global stage; with the bound set below it, the pose is a "false
    # match" by definition and the identity pose must be kept (the deformable stages are off here)
    fixed = blobs((40, 40, 40), seed=7)
    moving = {"ceT1": shifted(fixed, [3.0, 0.0, 0.0])}
    only_global = {"deformable_discrete": {"enabled": False}, "refine": {"enabled": False},
                   "refine_fine": {"enabled": False},
                   "plausibility": {"fallback_to_identity": False}}
    found = reg(**only_global).register(fixed, moving, (1.0, 1.0, 1.0), "ceT1")
    assert not found.global_rejected
    assert abs(np.median(interior(found.displacement)[..., 0]) - 3.0) < 0.6
    bounded = reg(**only_global, **{"global": {"iterations": 1, "max_iterations": 2, "max_mean_shift_mm": 1.0}})
    rejected = bounded.register(fixed, moving, (1.0, 1.0, 1.0), "ceT1")
    assert rejected.global_rejected
    np.testing.assert_allclose(rejected.affine_mm, np.eye(4), atol=1e-6)
    assert np.abs(rejected.displacement).max() < 1e-5


def test_refine_box_filter_equals_replicate_avg_pool_values_and_gradients():
    # the refinement's box filter replaced avg_pool3d(pad(replicate)) because their CUDA backward kernels use
    # atomicAdd; its backward is the same filter (self-adjoint): it must be the same operator, forward and backward
    import torch.nn.functional as F
    from model.refine import _SymmetricBox3
    p = torch.randn(3, 9, 11, 7, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 9, 11, 7, dtype=torch.float64)
    a = _SymmetricBox3.apply(p)
    b = F.avg_pool3d(F.pad(p.unsqueeze(0), [1] * 6, mode="replicate"), 3, 1)[0]
    assert torch.allclose(a, b, atol=1e-12)
    (ga,) = torch.autograd.grad((a * g).sum(), p)
    (gb,) = torch.autograd.grad((b * g).sum(), p)
    assert torch.allclose(ga, gb, atol=1e-12)


def test_rounding_sized_input_changes_stay_far_below_0p1_mm():
    # CPU and CUDA differ by fp32 rounding (summation order, kernels); a result that stays put when the
    # input moves by 1e-6 relative cannot be turned 0.1 mm away by such differences (no hidden threshold
    # amplifies them). TF32 / fp16-sized changes (1e-4) do move it by tenths of a mm (docs/MODEL.md).
    fixed = blobs((40, 40, 40), seed=12)
    moving = {"ceT1": shifted(fixed, (1.5, 2.0, -1.0))}
    base = reg().register(fixed, moving, (1.0, 1.0, 1.0), "ceT1").displacement
    noise = np.random.default_rng(0).standard_normal(fixed.shape)
    nudged = reg().register((fixed * (1 + 1e-6 * noise)).astype(np.float32), moving, (1.0, 1.0, 1.0),
                            "ceT1").displacement
    assert np.linalg.norm(base - nudged, axis=-1).max() < 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by benchmarks/device_check.sh)")
def test_cuda_matches_cpu_within_0p1_mm_and_is_deterministic():
    fixed = blobs((64, 64, 64), seed=13)
    moving = {"ceT1": shifted(fixed, (2.0, -2.5, 1.0))}
    cpu = Registration(load_config(), device="cpu").register(fixed, moving, (1.0, 1.0, 1.0), "ceT1")
    gpu1 = Registration(load_config(), device="cuda").register(fixed, moving, (1.0, 1.0, 1.0), "ceT1")
    gpu2 = Registration(load_config(), device="cuda").register(fixed, moving, (1.0, 1.0, 1.0), "ceT1")
    assert gpu1.device.startswith("cuda")
    assert np.array_equal(gpu1.displacement, gpu2.displacement)
    assert np.linalg.norm(cpu.displacement - gpu1.displacement, axis=-1).max() < 0.1


def test_global_radius_list_and_final_level_are_validated():
    from model import load_config
    assert load_config(overrides={"global": {"levels_mm": [6.0, 3.0], "radius": [3, 2]}}).global_stage.radii() == (3, 2)
    with pytest.raises(ValueError, match="one per level"):
        load_config(overrides={"global": {"levels_mm": [6.0, 3.0, 1.5], "radius": [3, 2]}})
    with pytest.raises(ValueError, match="final_level_mm"):
        load_config(overrides={"global": {"final_level_mm": 0}})
    assert load_config(overrides={"global": {"final_level_mm": None}}).global_stage.final_level_mm is None


def test_small_shift_gates_are_validated():
    from model import load_config
    with pytest.raises(ValueError, match=r"'safety.small_shift': needs"):
        load_config(overrides={"safety": {"small_shift": {"floor_mm": 4.0, "full_mm": 4.0}}})
    with pytest.raises(ValueError, match=r"'safety.small_shift.one_sequence': needs"):
        load_config(overrides={"safety": {"small_shift": {"one_sequence": {"floor_mm": 5.0}}}})
    gate = load_config().safety.small_shift
    assert gate.floor_mm < gate.one_sequence.floor_mm < gate.one_sequence.full_mm


@pytest.mark.parametrize("max_working_voxels, runs", [(5000, True), (1500, False)])
def test_the_fine_refinement_runs_only_where_its_level_is_finer(max_working_voxels, runs):
    # a 20 mm box at 0.5 mm: its 1 mm level has 21^3 voxels; under a cap of 5000 it is made 1.2 mm (finer
    # than the 2 mm level, so the stage runs there); under 1500 it is made as coarse as the 2 mm level, where
    # a second refinement would cost a full stage for no detail (the challenge's 256^3 box, docs/MODEL.md)
    from model.pipeline import _to_device
    from model.pyramid import FeaturePyramid
    from model.stages import evidence_level_mm, refine_stages
    cfg = load_config(overrides={"max_working_voxels": max_working_voxels, "refine_fine": {"enabled": True}})
    image = _to_device(blobs((40, 40, 40)), "cpu")
    pyramid = FeaturePyramid(image, image, (0.5, 0.5, 0.5), cfg)
    coarse, fine = max(pyramid.grid(2.0)[1]), max(pyramid.grid(1.0)[1])
    assert (fine <= 0.8 * coarse) is runs, (fine, coarse)
    levels = [stage.level_mm for stage in refine_stages(cfg, pyramid)]
    assert levels == ([2.0, 1.0] if runs else [2.0])
    assert evidence_level_mm(cfg, pyramid) == levels[-1]
    always = load_config(overrides={"max_working_voxels": max_working_voxels,
                                    "refine_fine": {"enabled": True, "max_spacing_ratio": None}})
    assert [stage.level_mm for stage in refine_stages(always, pyramid)] == [2.0, 1.0]
    off = load_config(overrides={"max_working_voxels": max_working_voxels, "refine_fine": {"enabled": False}})
    assert [stage.level_mm for stage in refine_stages(off, pyramid)] == [2.0]


def test_the_fine_refinements_spacing_ratio_is_validated():
    with pytest.raises(ValueError, match="max_spacing_ratio"):
        load_config(overrides={"refine_fine": {"max_spacing_ratio": 0}})
