"""A field whose size cannot be right for its grid is scored, with a WARNING on stderr (issue 32 row 9).

A voxel field 1000x too large (mm written as micrometres, a unit mix-up) was credited with its TRE and no
word on stderr. The scorer now names the pair and the figures when 1% of the voxels move further than the
grid's whole diagonal, which takes them out of the image wherever they lie (evaluation/fields.py)."""
import json

import numpy as np
import pytest

from evaluation.evaluate import run
from evaluation.fields import implausible_magnitude
from evaluation.tests import synth

PAIRS = [("0099", 1), ("0099", 2), ("0100", 1), ("0100", 2)]
SCALED = "0099_0000<--0099_0001"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("magnitude")
    gt = str(root / "gt")
    synth.make_ground_truth(gt)
    return gt, {pair: synth.smooth_field(seed=n + 1) for n, pair in enumerate(PAIRS)}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_field_1000x_too_large_is_scored_with_a_warning(dataset, tmp_path, capsys, workers):
    gt, fields = dataset
    for (case, m), field in fields.items():
        synth.write_nifti_field(str(tmp_path / "in"), case, m, field * (1000 if (case, m) == ("0099", 1) else 1))
    code = run(str(tmp_path / "in"), gt, str(tmp_path / "m.json"), quiet=True, workers=workers)
    err = capsys.readouterr().err.strip().splitlines()
    data = json.loads((tmp_path / "m.json").read_text())
    assert code == 0 and len(data["cases"]) == 4  # scored all the same: the TRE says how wrong it is
    flagged = [line for line in err if "implausible field magnitude" in line]
    assert len(flagged) == 1 and flagged[0].startswith("WARNING: ") and SCALED in flagged[0], err
    assert "32x30x28 voxels at 0.5x0.5x0.5 mm" in flagged[0], flagged
    assert [w for w in data["warnings"] if "implausible" in w] == [flagged[0].split("] ", 1)[1]]  # after [k/N]
    assert err[-1].startswith("WARNING: evaluation finished, exit status 0: all 4 pairs scored (1 warning(s)")


def test_the_bound_is_the_grids_diagonal():
    shape, spacing = (40, 20, 10), (0.5, 1.0, 2.0)  # 20 x 20 x 20 mm: diagonal 34.6 mm
    diagonal = np.sqrt(3) * 20
    for fraction, flagged in ((0.95, False), (1.05, True)):
        field = np.zeros(shape + (3,), np.float32)
        field[..., 2] = fraction * diagonal / spacing[2]  # along the 2 mm axis: in voxels of that axis
        assert (implausible_magnitude(field, spacing) is not None) == flagged, fraction
    # 1% of the voxels is the threshold: a few wild voxels at the edge of an extrapolated field are not flagged
    field = np.zeros(shape + (3,), np.float32)
    field[:1, :, :4, 0] = 1000.0  # 80 of 8000 voxels = 1.0 %: the 99th percentile is still 0
    assert implausible_magnitude(field, spacing) is None
    field[:2, :, :4, 0] = 1000.0  # 2 %
    assert "1% of the voxels move by 500 mm or more" in implausible_magnitude(field, spacing)


def test_a_real_scale_field_is_never_flagged(dataset):
    gt, fields = dataset
    for field in fields.values():  # 1.5 voxels at most, as the synthetic fields
        assert implausible_magnitude(field, synth.SPACING) is None
    shift = np.zeros((64, 64, 64, 3), np.float32)
    shift[..., 0] = 40.0  # 20 mm of brain shift in a 32 mm box (diagonal 55 mm): large, possible
    assert implausible_magnitude(shift, (0.5, 0.5, 0.5)) is None
