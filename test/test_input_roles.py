"""Which image is the ultrasound, and where its fan is (interfaces/gates.py swapped_problem,
interfaces/conventions.py fan_background): issue 32 rows 2 and 3. Swapped inputs (the MR as _0000) registered
with exit 0 and a wrong field; an iUS exported with shifted intensities (us - 60) lost most of its fan to "> 0"."""
import numpy as np
import pytest

import process
from interfaces import conventions as cv
from interfaces import gates
from interfaces.images import read_image
from test_process import FakeShift, plain_grid, write

SHAPE = (40, 40, 40)  # 20 mm at 0.5 mm: a 4 cm^3 fan, above the gates' 1 cm^3


def smooth(seed, passes=4):
    x = np.random.default_rng(seed).normal(size=SHAPE)
    for axis in range(3):
        for _ in range(passes):
            x = (np.roll(x, 1, axis) + x + np.roll(x, -1, axis)) / 3
    return x


def ius_and_mr():
    """A fan (0 outside) of anatomy with grainy speckle, and a smooth MR of the same anatomy filling the box."""
    anatomy = smooth(0, passes=30)
    anatomy = (anatomy - anatomy.min()) / (anatomy.max() - anatomy.min())  # 0..1, structures of several mm
    i, j, k = np.indices(SHAPE)
    fan = (k - 20) ** 2 + (j - 20) ** 2 < (0.9 * i) ** 2 + 60  # a cone opening along i
    speckle = smooth(1, passes=1)
    ius = np.where(fan, (1 + 2 * anatomy) * (1 + 0.15 * speckle / speckle.std()) * 40, 0.0).astype(np.float32)
    mr = (anatomy * 100 + 50).astype(np.float32)
    return ius, mr


def test_the_gate_names_swapped_inputs_and_passes_the_right_order():
    ius, mr = ius_and_mr()
    assert gates.swapped_problem(ius, mr, (0.5, 0.5, 0.5)) is None
    problem = gates.swapped_problem(mr, ius, (0.5, 0.5, 0.5))
    assert problem and "swapped" in problem and "_0000" in problem


def test_a_rough_mr_alone_or_an_ius_without_background_alone_is_not_called_swapped():
    ius, mr = ius_and_mr()
    noisy_mr = (mr + np.random.default_rng(2).normal(0, 10 * mr.std(), SHAPE)).astype(np.float32)
    fan = ius > 0
    assert gates.fine_scale_roughness(noisy_mr, (0.5,) * 3, fan) > gates.fine_scale_roughness(ius, (0.5,) * 3, fan)
    assert gates.swapped_problem(ius, noisy_mr, (0.5, 0.5, 0.5)) is None  # the iUS still has its background
    filled = np.where(ius > 0, ius, 0.4 * mr).astype(np.float32)  # no background, still the rougher one
    mr_with_air = mr.copy()
    mr_with_air[:8] = 0.0  # 20 % of the box: more background than the filled iUS has
    assert gates.background_fraction(filled) < gates.background_fraction(mr_with_air)
    assert gates.swapped_problem(filled, mr_with_air, (0.5, 0.5, 0.5)) is None


def test_swapped_inputs_fail_their_pair_by_name_and_the_right_order_runs(tmp_path, capsys):
    ius, mr = ius_and_mr()
    grid = plain_grid(SHAPE)
    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / cv.image_name("0001", 0), mr, grid)
    write(tmp_path / "in" / cv.image_name("0001", 1), ius, grid)
    write(tmp_path / "in" / cv.image_name("0002", 0), ius, grid)
    write(tmp_path / "in" / cv.image_name("0002", 1), mr, grid)
    code = process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift(), sequences="ceT1")
    err = capsys.readouterr().err
    assert code == 1 and "ReMIND2Reg_0001_0000.nii.gz: the iUS looks like an MR" in err, err
    assert not (tmp_path / "out" / cv.displacement_name("0001", 1)).exists()
    assert (tmp_path / "out" / cv.displacement_name("0002", 1)).exists()


@pytest.mark.parametrize("offset", [-60.0, 25.0])
def test_an_ius_with_a_shifted_background_is_read_with_its_whole_fan(tmp_path, caplog, offset):
    ius, _ = ius_and_mr()
    path = tmp_path / cv.image_name("0001", 0)
    write(path, ius + offset, plain_grid(SHAPE))
    loaded = read_image(str(path), "iUS", fixed=True)
    np.testing.assert_allclose(loaded.array, ius, atol=1e-3)  # the background is 0 again, the fan as it was
    assert np.count_nonzero(loaded.array > 0) == np.count_nonzero(ius > 0)
    assert f"background is {offset:g}, not 0" in caplog.text


def test_a_zero_background_ius_is_read_as_it_is(tmp_path, caplog):
    ius, _ = ius_and_mr()
    path = tmp_path / cv.image_name("0001", 0)
    write(path, ius, plain_grid(SHAPE))
    assert np.array_equal(read_image(str(path), "iUS", fixed=True).array, ius)
    assert "background" not in caplog.text
    assert cv.fan_background(np.random.default_rng(3).uniform(5, 9, SHAPE)) == 0.0  # no constant background
