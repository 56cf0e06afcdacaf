"""Each MR reaches the model under its own name and each field is written under its own pair's name (issue 30).

The fixtures of test_process.py give both MRs the same content (T2 = 0.7 x ceT1), so two arrays swapped
between reading and the model would go unseen. Here the two MRs are the iUS moved by different shifts, and a
fake registration measures, for every call, the shift of EVERY sequence it was handed: a swap anywhere between
the files and the model (reading, resampling, the modality -> name map, the target's name) shows as the other
sequence's shift."""
import numpy as np
import pytest
import SimpleITK as sitk

import process
from interfaces import conventions as cv
from interfaces import grand_challenge as gc
from test_process import FakeShift, blobs, make_gc_input, plain_grid, read_field, write

SHIFTS = {"ceT1": (2, 0, -1), "T2": (0, -3, 1)}  # voxels: fixed x <-> moving x + shift, different per sequence


def integer_shift(fixed, moving):
    """The integer translation moving = fixed moved by d, by FFT cross-correlation (FakeShift's estimate)."""
    corr = np.fft.ifftn(np.conj(np.fft.fftn(fixed)) * np.fft.fftn(moving)).real
    d = np.array(np.unravel_index(np.argmax(corr), corr.shape))
    return tuple(int(v) for v in np.where(d > np.array(fixed.shape) // 2, d - np.array(fixed.shape), d))


class ShiftOfEach(FakeShift):
    """FakeShift that also records the shift of every sequence it was given, by name."""

    def register(self, fixed, moving, spacing, target):
        result = super().register(fixed, moving, spacing, target)
        self.calls[-1]["shifts"] = {name: integer_shift(fixed, array) for name, array in moving.items()}
        return result


def make_two_sequence_case(folder):
    grid = plain_grid()
    fixed = blobs(grid.shape)
    folder.mkdir(parents=True)
    write(folder / cv.image_name("0001", 0), fixed, grid)
    for name, shift in SHIFTS.items():
        moved = np.roll(fixed, shift, axis=(0, 1, 2)) * (1.0 if name == "ceT1" else 0.7)
        write(folder / cv.image_name("0001", cv.MODALITY_INDEX[name]), moved, grid)


def test_each_sequence_and_each_field_keep_their_own_mr(tmp_path):
    make_two_sequence_case(tmp_path / "in")
    fake = ShiftOfEach()
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=fake, sequences="all") == 0
    assert [call["target"] for call in fake.calls] == ["ceT1", "T2"]
    for call in fake.calls:  # both MRs handed to the model, each under its own name
        assert call["shifts"] == SHIFTS, call
    for name, shift in SHIFTS.items():
        field, _ = read_field(tmp_path / "out" / cv.displacement_name("0001", cv.MODALITY_INDEX[name]))
        np.testing.assert_array_equal(field[5, 6, 7], shift, err_msg=name)


@pytest.mark.parametrize("built_for", ["ceT1", "T2"])
def test_a_grand_challenge_job_with_both_mr_sockets_registers_its_own(tmp_path, monkeypatch, built_for):
    make_two_sequence_case(tmp_path / "org")
    make_gc_input(tmp_path / "gc", tmp_path / "org")
    monkeypatch.setenv("REMIND2REG_SEQUENCES", built_for)
    fake = ShiftOfEach()
    assert process.run(str(tmp_path / "gc"), str(tmp_path / "out"), registration=fake) == 0
    assert [call["target"] for call in fake.calls] == [built_for]
    assert fake.calls[0]["shifts"] == SHIFTS
    image = sitk.ReadImage(str(tmp_path / "out" / "images" / gc.SLUG_DISPLACEMENT / gc.OUTPUT_FILENAME))
    np.testing.assert_allclose(cv.physical_to_voxel_field(image)[0][5, 6, 7], SHIFTS[built_for], atol=1e-4)
