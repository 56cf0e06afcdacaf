"""benchmarks/stress_set.py: each variant is what its name says, with the source case's landmarks."""
import json
import os

import nibabel as nib
import numpy as np

from benchmarks import stress_set

SHAPE = (12, 10, 8)


def source_dataset(root):
    os.makedirs(root / "imagesTr")
    os.makedirs(root / "landmarksTr")
    rng = np.random.default_rng(0)
    fan = np.zeros(SHAPE, bool)
    fan[3:, 2:8, 1:7] = True
    images = {0: np.where(fan, rng.uniform(10, 200, SHAPE), 0.0), 1: rng.uniform(50, 90, SHAPE),
              2: rng.uniform(20, 40, SHAPE)}
    affine = np.diag([0.5, 0.6, 0.7, 1.0])
    for m, array in images.items():
        nib.save(nib.Nifti1Image(array.astype(np.float32), affine), root / "imagesTr" / f"ReMIND2Reg_0001_{m:04d}.nii.gz")
        np.savetxt(root / "landmarksTr" / f"ReMIND2Reg_0001_{m:04d}.csv", rng.uniform(1, 6, (4, 3)), delimiter=",")
    (root / stress_set.DATASET_JSON).write_text(json.dumps({"cases": [{"case_id": "0001"}], "modality": {}}))
    return images


def read(folder, case, m):
    return np.asarray(nib.load(folder / "imagesTr" / f"ReMIND2Reg_{case}_{m:04d}.nii.gz").dataobj)


def test_each_variant_is_what_its_name_says(tmp_path):
    images = source_dataset(tmp_path / "src")
    described = stress_set.write_stress_set(str(tmp_path / "src"), str(tmp_path / "out"), cases=1)
    assert [c["variant"] for c in described] == list(stress_set.VARIANTS)
    case = {c["variant"]: c["case_id"] for c in described}
    out = tmp_path / "out"
    us, t1 = images[0].astype(np.float32), images[1].astype(np.float32)
    fan = us > 0
    noise_box = read(out, case["noise-box"], 0)
    assert (noise_box > 0).all() and not np.allclose(noise_box, us)
    noise_fan = read(out, case["noise-fan"], 0)
    assert np.array_equal(noise_fan > 0, fan) and not np.allclose(noise_fan[fan], us[fan])
    assert np.array_equal(read(out, case["swapped"], 0), t1) and np.array_equal(read(out, case["swapped"], 1), us)
    np.testing.assert_allclose(read(out, case["offset"], 0), us - 60.0, atol=1e-4)
    half = read(out, case["half-fan"], 0)
    assert not half[:SHAPE[0] // 2].any() and np.array_equal(half[SHAPE[0] // 2:], us[SHAPE[0] // 2:])
    shadow = read(out, case["shadow"], 0)
    np.testing.assert_allclose(shadow[:, 3:6, 4:], 0.1 * us[:, 3:6, 4:], rtol=1e-6)
    assert np.array_equal(shadow[:, :3], us[:, :3])
    for variant in stress_set.VARIANTS:  # the unchanged inputs and the landmarks come from the source case
        assert np.array_equal(read(out, case[variant], 2), images[2].astype(np.float32))
        for m in (0, 1, 2):
            name = f"ReMIND2Reg_{case[variant]}_{m:04d}.csv"
            assert (out / "landmarksTr" / name).read_text() == (
                tmp_path / "src" / "landmarksTr" / f"ReMIND2Reg_0001_{m:04d}.csv").read_text()
    pairs = json.loads((out / stress_set.DATASET_JSON).read_text())["eval_pairs"]
    assert len(pairs) == 2 * len(stress_set.VARIANTS)
