"""process.py end to end on hand-made cases: names, channel order, sign, units, grids, formats, both layouts,
bad input, sequence selection. A fake registration (FFT cross-correlation translation) is injected for the
I/O path, so any axis mix-up between reading, the model's array and the written field shows as a wrong
channel or sign; one test runs the real model through the command line."""
import json
import os
import re
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import process
from interfaces import conventions as cv
from interfaces import grand_challenge as gc
from interfaces.images import atomic_path, read_image, write_voxel_field_nifti

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 16 x 12 x 10 mm at 0.5 mm: 1.9 cm^3 of iUS fan, above the input gates' 1 cm^3 floor and 5 mm extent
# (interfaces/gates.py); the gates refuse smaller fixtures on purpose
SHAPE = (32, 24, 20)


SHARD_VARIABLES = ("REMIND2REG_SHARD", "REMIND2REG_SHARDS", "JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID",
                   "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP")


@pytest.fixture(autouse=True)
def _no_shard_from_the_caller(monkeypatch):
    """A test run inside a SLURM array or an Indexed Job must not shard the tests' own folders."""
    for name in SHARD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- helpers
def oblique_grid(shape=SHAPE, spacing=(0.5, 0.7, 0.9), origin=(10.0, -20.0, 5.0)):
    angle, axis = 0.6, np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    return cv.Grid(tuple(shape), tuple(spacing), tuple(origin), tuple(rotation.ravel()))


def plain_grid(shape=SHAPE, spacing=(0.5, 0.5, 0.5)):
    return cv.Grid(tuple(shape), tuple(spacing), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))


def blobs(shape=SHAPE, seed=0):
    """Asymmetric smooth content, zero near the border (so np.roll is a clean shift)."""
    rng = np.random.default_rng(seed)
    idx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    out = np.zeros(shape, np.float32)
    for _ in range(6):
        centre = [rng.uniform(0.3 * n, 0.7 * n) for n in shape]
        width = rng.uniform(1.2, 2.5)
        out += rng.uniform(0.5, 1.5) * np.exp(-sum((i - c) ** 2 for i, c in zip(idx, centre)) / (2 * width ** 2))
    return out * 100


def write(path, array, grid):
    sitk.WriteImage(cv.image_from_array(np.asarray(array, np.float32), grid), str(path))


def make_case(folder, case="0001", shift=(0, 0, 0), grid=None, suffix=".nii.gz", modalities=(1, 2)):
    """iUS + MR(s) with the MR = iUS content moved by `shift` voxels: fixed x <-> moving x + shift."""
    grid = grid or plain_grid()
    fixed = blobs(grid.shape)
    moving = fixed
    for axis, s in enumerate(shift):
        moving = np.roll(moving, s, axis=axis)
    os.makedirs(folder, exist_ok=True)
    write(os.path.join(folder, cv.image_name(case, 0, suffix)), fixed, grid)
    for m in modalities:
        write(os.path.join(folder, cv.image_name(case, m, suffix)), moving * (1.0 if m == 1 else 0.7), grid)
    return fixed, moving, grid


class FakeShift:
    """Integer translation by FFT cross-correlation of the iUS with the target MR; records its calls."""

    def __init__(self):
        self.calls = []

    def register(self, fixed, moving, spacing, target):
        self.calls.append({"target": target, "sequences": sorted(moving), "shape": fixed.shape,
                           "spacing": tuple(spacing)})
        corr = np.fft.ifftn(np.conj(np.fft.fftn(fixed)) * np.fft.fftn(moving[target])).real
        d = np.array(np.unravel_index(np.argmax(corr), corr.shape))
        d = np.where(d > np.array(fixed.shape) // 2, d - np.array(fixed.shape), d)
        field = np.broadcast_to(d.astype(np.float32), fixed.shape + (3,)).copy()

        class Result:
            displacement = field
            stage_seconds = {"fake": 0.0}
            device = "cpu (fake)"
        return Result()


def read_field(path):
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image


def outputs(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("disp_"))


def partials(folder):
    return [n for root, _, names in os.walk(folder) for n in names if "partial" in n]


# ---------------------------------------------------------------- conventions through the whole path
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("sign", [1, -1])
def test_shift_gives_that_displacement_on_that_channel(tmp_path, axis, sign):
    shift = [0, 0, 0]
    shift[axis] = 3 * sign
    make_case(tmp_path / "in", shift=shift, modalities=(1,))
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift(), sequences="all") == 0
    field, image = read_field(tmp_path / "out" / "disp_0001_0000_0001_0001.nii.gz")
    assert field.shape == SHAPE + (3,) and field.dtype == np.float32
    np.testing.assert_array_equal(field[5, 6, 7], shift)
    # meaning: warping the moving image with u gives back the fixed image
    fixed = cv.array_from_image(sitk.ReadImage(str(tmp_path / "in" / "ReMIND2Reg_0001_0000.nii.gz")))
    moving = cv.array_from_image(sitk.ReadImage(str(tmp_path / "in" / "ReMIND2Reg_0001_0001.nii.gz")))
    inner = (slice(3, -3),) * 3  # x + u stays inside the grid
    np.testing.assert_allclose(cv.warp_with_voxel_field(moving, field, order=0)[inner], fixed[inner], atol=1e-3)


def test_oblique_anisotropic_grid_keeps_channels_and_affine(tmp_path):
    grid = oblique_grid(shape=(22, 18, 20), spacing=(0.6, 1.1, 0.8))
    make_case(tmp_path / "in", shift=(0, -2, 3), grid=grid, modalities=(2,))
    fake = FakeShift()
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=fake) == 0
    field, image = read_field(tmp_path / "out" / "disp_0001_0000_0001_0002.nii.gz")
    assert field.shape == (22, 18, 20, 3)
    np.testing.assert_array_equal(field[4, 4, 4], [0, -2, 3])
    np.testing.assert_allclose(image.affine, nib.load(str(tmp_path / "in" / "ReMIND2Reg_0001_0000.nii.gz")).affine,
                               atol=1e-5)
    np.testing.assert_allclose(fake.calls[0]["spacing"], grid.spacing, atol=1e-6)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii", ".nii.gz"])
def test_input_formats(tmp_path, suffix):
    grid = oblique_grid()
    make_case(tmp_path / "in", shift=(1, 0, -2), grid=grid, suffix=suffix)
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift()) == 0
    assert outputs(tmp_path / "out") == ["disp_0001_0000_0001_0001.nii.gz", "disp_0001_0000_0001_0002.nii.gz"]
    field, image = read_field(tmp_path / "out" / "disp_0001_0000_0001_0001.nii.gz")
    np.testing.assert_array_equal(field[3, 3, 3], [1, 0, -2])
    # non-NIfTI input: the output carries the fixed grid's RAS affine
    np.testing.assert_allclose(image.affine, grid.nifti_affine(), atol=1e-4)


def test_moving_on_another_grid_is_resampled_by_physical_geometry(tmp_path):
    fixed_grid = oblique_grid(shape=SHAPE, spacing=(0.5, 0.5, 0.5))
    fixed = blobs(fixed_grid.shape)
    # the MR: the same physical content moved by 2 voxels along index axis 1, on a finer, larger, offset grid
    moved = np.roll(fixed, 2, axis=1)
    tmp_in = tmp_path / "in"
    os.makedirs(tmp_in)
    write(tmp_in / "ReMIND2Reg_0001_0000.nii.gz", fixed, fixed_grid)
    source = cv.image_from_array(moved, fixed_grid)
    origin = fixed_grid.physical_point(np.array([[-3.3, -2.0, -1.5]]))[0]
    moving_grid = cv.Grid((52, 40, 34), (0.4, 0.45, 0.5), tuple(origin), fixed_grid.direction)
    reference = cv.image_from_array(np.zeros(moving_grid.shape, np.float32), moving_grid)
    sitk.WriteImage(sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, 0.0),
                    str(tmp_in / "ReMIND2Reg_0001_0001.mha"))
    fake = FakeShift()
    assert process.run(str(tmp_in), str(tmp_path / "out"), registration=fake) == 0
    field, _ = read_field(tmp_path / "out" / "disp_0001_0000_0001_0001.nii.gz")
    assert field.shape == fixed_grid.shape + (3,)
    np.testing.assert_array_equal(field[0, 0, 0], [0, 2, 0])


def test_both_sequences_reach_the_model_and_env_selects(tmp_path, monkeypatch):
    make_case(tmp_path / "in", shift=(1, 1, 0))
    for value, expected in [("ceT1", ["disp_0001_0000_0001_0001.nii.gz"]),
                            ("T2", ["disp_0001_0000_0001_0002.nii.gz"]),
                            ("all", ["disp_0001_0000_0001_0001.nii.gz", "disp_0001_0000_0001_0002.nii.gz"])]:
        monkeypatch.setenv("REMIND2REG_SEQUENCES", value)
        out = tmp_path / f"out_{value}"
        fake = FakeShift()
        assert process.run(str(tmp_path / "in"), str(out), registration=fake) == 0
        assert outputs(out) == expected
        assert all(call["sequences"] == ["T2", "ceT1"] for call in fake.calls)
        assert [c["target"] for c in fake.calls] == [{"1": "ceT1", "2": "T2"}[n[-8]] for n in expected]
    monkeypatch.setenv("REMIND2REG_SEQUENCES", "flair")
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out_bad"), registration=FakeShift()) == 2


def test_timings_json(tmp_path, monkeypatch):
    make_case(tmp_path / "in", case="0003", shift=(1, 0, 0))
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift()) == 0
    written = json.load(open(tmp_path / "out" / "timings.json"))
    assert "model_load_seconds" not in written  # an injected registration: nothing was loaded
    timings = written["pairs"]
    assert sorted(timings) == [cv.pair_key("0003", 1), cv.pair_key("0003", 2)]
    for entry in timings.values():
        assert entry["seconds"] >= entry["register"] >= 0 and {"read", "write"} <= set(entry)
    monkeypatch.setenv("REMIND2REG_TIMINGS", "0")
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out2"), registration=FakeShift()) == 0
    assert not os.path.exists(tmp_path / "out2" / "timings.json")


def test_qc_png(tmp_path):
    make_case(tmp_path / "in", shift=(2, 0, 0), modalities=(1,))
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift(),
                       qc_dir=str(tmp_path / "qc")) == 0
    png = tmp_path / "qc" / "0001_0001.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = sitk.ReadImage(str(png))
    assert image.GetNumberOfComponentsPerPixel() == 3 and min(image.GetSize()) > 50


# ---------------------------------------------------------------- Grand Challenge layout
def make_gc_input(folder, source, modalities=(0, 1, 2), key="interface"):
    entries = []
    for m in modalities:
        slug = gc.INPUT_SLUGS[m]
        os.makedirs(folder / "images" / slug, exist_ok=True)
        image = sitk.ReadImage(str(source / cv.image_name("0001", m, ".nii.gz")))
        sitk.WriteImage(image, str(folder / "images" / slug / f"uuid-{m}.mha"))
        entries.append({key: {"slug": slug, "kind": "Image", "relative_path": f"images/{slug}"},
                        "image": {"name": cv.image_name("0001", m, ".nii.gz")}, "value": None})
    entries.append({key: {"slug": "some-other-input", "kind": "String", "relative_path": "x.json"}, "value": "x"})
    (folder / "inputs.json").write_text(json.dumps(entries))


@pytest.mark.parametrize("key", ["interface", "socket"])
def test_grand_challenge_output_equals_organisers(tmp_path, key):
    grid = oblique_grid(shape=(20, 22, 18), spacing=(0.5, 0.8, 0.6))
    make_case(tmp_path / "org", shift=(2, -1, 1), grid=grid)
    assert process.run(str(tmp_path / "org"), str(tmp_path / "org_out"), registration=FakeShift()) == 0
    make_gc_input(tmp_path / "gc", tmp_path / "org", key=key)
    fake = FakeShift()
    assert process.run(str(tmp_path / "gc"), str(tmp_path / "gc_out"), registration=fake) == 0
    assert fake.calls[0]["target"] == "ceT1" and fake.calls[0]["sequences"] == ["T2", "ceT1"]
    files = os.listdir(tmp_path / "gc_out" / "images" / gc.SLUG_DISPLACEMENT)
    assert files == [gc.OUTPUT_FILENAME]
    image = sitk.ReadImage(str(tmp_path / "gc_out" / "images" / gc.SLUG_DISPLACEMENT / files[0]))
    assert image.GetDimension() == 4 and image.GetSize() == grid.shape + (3,)
    assert image.GetNumberOfComponentsPerPixel() == 1
    field, back_grid = cv.physical_to_voxel_field(image)
    assert back_grid.matches(grid)
    organisers, _ = read_field(tmp_path / "org_out" / "disp_0001_0000_0001_0001.nii.gz")
    np.testing.assert_allclose(field, organisers, atol=1e-4)
    assert not os.path.exists(tmp_path / "gc_out" / "timings.json")


@pytest.mark.parametrize("built_for, sockets, expected", [
    ("ceT1", (0, 1), "ceT1"), ("ceT1", (0, 2), "T2"), ("ceT1", (0, 1, 2), "ceT1"),
    ("T2", (0, 1), "ceT1"), ("T2", (0, 2), "T2"), ("T2", (0, 1, 2), "T2"),
    ("all", (0, 1), "ceT1"), ("all", (0, 2), "T2"), ("all", (0, 1, 2), "ceT1")])
def test_grand_challenge_sockets_decide_the_sequence(tmp_path, monkeypatch, capsys, built_for, sockets, expected):
    """Whatever sequence the image was built for, a job is registered for the MR socket it has; with both MR
    sockets, the build-time sequence (ceT1 for the `all` image). The field equals the organisers' one."""
    make_case(tmp_path / "org", shift=(1, -2, 0))
    assert process.run(str(tmp_path / "org"), str(tmp_path / "org_out"), registration=FakeShift()) == 0
    make_gc_input(tmp_path / "gc", tmp_path / "org", modalities=sockets)
    monkeypatch.setenv("REMIND2REG_SEQUENCES", built_for)  # as baked into the image by build.sh
    fake = FakeShift()
    assert process.run(str(tmp_path / "gc"), str(tmp_path / "out"), registration=fake) == 0
    assert [c["target"] for c in fake.calls] == [expected]
    captured = capsys.readouterr()
    assert f"output for {expected}" in captured.out and "ERROR" not in captured.err
    assert ("the job has no" in captured.out) is (built_for != "all" and expected != built_for)
    image = sitk.ReadImage(str(tmp_path / "out" / "images" / gc.SLUG_DISPLACEMENT / gc.OUTPUT_FILENAME))
    organisers, _ = read_field(tmp_path / "org_out" / cv.displacement_name("0001", cv.MODALITY_INDEX[expected]))
    np.testing.assert_allclose(cv.physical_to_voxel_field(image)[0], organisers, atol=1e-4)


def test_grand_challenge_socket_errors(tmp_path, capsys):
    make_case(tmp_path / "org", shift=(1, 0, 0))
    make_gc_input(tmp_path / "gc_no_mr", tmp_path / "org", modalities=(0,))
    assert process.run(str(tmp_path / "gc_no_mr"), str(tmp_path / "out"), registration=FakeShift()) == 1
    assert not os.path.exists(tmp_path / "out" / "images")
    assert "no MR image socket" in capsys.readouterr().err.strip().splitlines()[-1]
    make_gc_input(tmp_path / "gc_no_us", tmp_path / "org", modalities=(1,))
    assert process.run(str(tmp_path / "gc_no_us"), str(tmp_path / "out3"), registration=FakeShift()) == 1
    assert "missing iUS" in capsys.readouterr().err.strip().splitlines()[-1]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("overlap", ["0", "1"])
def test_bad_inputs_fail_alone_with_one_line_errors(tmp_path, capsys, monkeypatch, overlap):
    monkeypatch.setenv("REMIND2REG_OVERLAP_IO", overlap)  # bad cases read ahead fail just the same
    folder = tmp_path / "in"
    make_case(folder, "0001", shift=(1, 0, 0))                     # good
    make_case(folder, "0002", modalities=(1,))                     # missing iUS
    os.remove(folder / "ReMIND2Reg_0002_0000.nii.gz")
    make_case(folder, "0003", modalities=(1,))                     # truncated iUS
    data = (folder / "ReMIND2Reg_0003_0000.nii.gz").read_bytes()
    (folder / "ReMIND2Reg_0003_0000.nii.gz").write_bytes(data[: len(data) // 2])
    fixed, _, grid = make_case(folder, "0004", modalities=(1,))    # NaN in the MR
    bad = fixed.copy()
    bad[3, 4, 5] = np.nan
    write(folder / "ReMIND2Reg_0004_0001.nii.gz", bad, grid)
    make_case(folder, "0005", modalities=(1,))                     # all-zero iUS
    write(folder / "ReMIND2Reg_0005_0000.nii.gz", np.zeros(SHAPE), grid)
    make_case(folder, "0006", modalities=(1,))                     # 4-D iUS
    sitk.WriteImage(sitk.Image([6, 6, 6, 2], sitk.sitkFloat32), str(folder / "ReMIND2Reg_0006_0000.nii.gz"))
    make_case(folder, "0007", modalities=(1,))                     # MR far away from the iUS
    far = cv.Grid(SHAPE, (0.5, 0.5, 0.5), (500.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    write(folder / "ReMIND2Reg_0007_0001.nii.gz", fixed, far)
    (folder / "ReMIND2Reg_0008_0000.nii.gz").write_bytes(b"not an image")  # unreadable
    write(folder / "ReMIND2Reg_0008_0001.nii.gz", fixed, grid)
    (folder / "notes.txt").write_text("ignored")

    assert process.run(str(folder), str(tmp_path / "out"), registration=FakeShift()) == 1
    assert outputs(tmp_path / "out") == ["disp_0001_0000_0001_0001.nii.gz", "disp_0001_0000_0001_0002.nii.gz"]
    assert partials(tmp_path) == []
    captured = capsys.readouterr()
    text = captured.out
    assert "FAILED" not in text and "WARNING" not in text  # INFO only on stdout
    errors = [line for line in captured.err.splitlines() if "FAILED" in line]
    assert all(line.startswith("ERROR: FAILED case 000") for line in errors), errors
    expectations = {"0002": "missing iUS", "0003": "ReMIND2Reg_0003_0000.nii.gz: cannot read iUS (fixed) image voxels (truncated",
                    "0004": "ReMIND2Reg_0004_0001.nii.gz: ceT1 image contains 1 NaN/Inf",
                    "0005": "ReMIND2Reg_0005_0000.nii.gz: iUS (fixed) image is empty",
                    "0006": "ReMIND2Reg_0006_0000.nii.gz: iUS (fixed) image is 4-D",
                    "0007": "ReMIND2Reg_0007_0001.nii.gz: ceT1 image does not overlap",
                    "0008": "ReMIND2Reg_0008_0000.nii.gz: cannot read"}
    for case, fragment in expectations.items():
        assert any(f"case {case}" in line and fragment in line for line in errors), (case, errors)
    assert "summary: 2 ok, 7 failed" in text
    # the platform shows a failed job's last stderr line: it says why and names every failed case/pair
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("ERROR: run failed: 6 of 8 pair(s) failed, 1 case(s) not started: "), last
    for case, fragment in expectations.items():
        assert f"case {case}" in last and fragment[:40] in last, (case, last)


@pytest.mark.parametrize("overlap", ["0", "1"])
def test_a_failing_registration_leaves_no_file_and_others_go_on(tmp_path, monkeypatch, overlap):
    monkeypatch.setenv("REMIND2REG_OVERLAP_IO", overlap)
    make_case(tmp_path / "in", "0001", shift=(1, 0, 0), modalities=(1,))
    make_case(tmp_path / "in", "0002", shift=(0, 1, 0), modalities=(1,))

    class Flaky(FakeShift):
        def register(self, fixed, moving, spacing, target):
            if len(self.calls) == 0:
                self.calls.append("boom")
                raise RuntimeError("CUDA out of memory (simulated)")
            return super().register(fixed, moving, spacing, target)

    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=Flaky()) == 1
    assert outputs(tmp_path / "out") == ["disp_0002_0000_0002_0001.nii.gz"]
    assert partials(tmp_path) == []


def test_atomic_write_cleans_up(tmp_path):
    target = tmp_path / "disp_0001_0000_0001_0001.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError):  # a field of the wrong type fails before any file is named
        write_voxel_field_nifti(str(target), np.full((4, 4, 4, 3), "x", dtype=object), np.eye(4))
    assert os.listdir(tmp_path) == []


def test_empty_or_missing_input_folder(tmp_path):
    os.makedirs(tmp_path / "empty")
    assert process.run(str(tmp_path / "empty"), str(tmp_path / "out"), registration=FakeShift()) == 1
    assert process.run(str(tmp_path / "nope"), str(tmp_path / "out"), registration=FakeShift()) == 2


def test_read_image_rejects_vector_images(tmp_path):
    path = tmp_path / "ReMIND2Reg_0001_0000.mha"
    sitk.WriteImage(sitk.Image([5, 5, 5], sitk.sitkVectorFloat32, 3), str(path))
    with pytest.raises(ValueError, match="ReMIND2Reg_0001_0000.mha: .* 3 components"):
        read_image(str(path))


# ---------------------------------------------------------------- command line, real model
def test_help_is_instant():
    t0 = time.perf_counter()
    # -X importtime lists every module imported on stderr: torch (seconds to import) must not be among them
    done = subprocess.run([sys.executable, "-X", "importtime", "process.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "--input" in done.stdout and "--demo" in done.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "numpy" in imported or "argparse" in imported  # the listing is there, so its lack of torch means something
    assert not [name for name in imported if name == "torch" or name.startswith("torch.")]
    assert time.perf_counter() - t0 < 10


def test_real_model_through_the_command_line(tmp_path):
    """The project's model, CLI, /opt/ml/model config override: a 2-voxel shift along axis 1 is found."""
    pytest.importorskip("torch")
    grid = plain_grid(shape=(40, 40, 40), spacing=(1.0, 1.0, 1.0))
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(0)
    fixed = gaussian_filter(rng.random(grid.shape).astype(np.float32), 2) * 10
    moving = np.roll(fixed, 4, axis=1)  # 4 mm: above the small-shift gate (model/safety.py), written whole
    os.makedirs(tmp_path / "in")
    write(tmp_path / "in" / "ReMIND2Reg_0001_0000.nii.gz", fixed, grid)
    write(tmp_path / "in" / "ReMIND2Reg_0001_0001.nii.gz", moving, grid)
    model_dir = tmp_path / "opt_ml_model"
    os.makedirs(model_dir)
    (model_dir / "config.json").write_text(json.dumps({  # a faster setting than the baked one, for CI
        "global": {"iterations": 1, "levels_mm": [4.0, 2.0], "radius": 3}, "deformable_discrete": {"levels_mm": [2.0]},
        "refine": {"iterations": 10}}))
    env = dict(os.environ, REMIND2REG_MODEL_DIR=str(model_dir), REMIND2REG_SEQUENCES="ceT1")
    done = subprocess.run([sys.executable, "process.py", "--input", str(tmp_path / "in"), "--output",
                           str(tmp_path / "out"), "--qc"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(model_dir / "config.json") in done.stdout and "summary: 1 ok, 0 failed" in done.stdout
    field, _ = read_field(tmp_path / "out" / "disp_0001_0000_0001_0001.nii.gz")
    assert field.shape == (40, 40, 40, 3) and field.dtype == np.float32 and np.isfinite(field).all()
    centre = field[12:28, 12:28, 12:28].mean(axis=(0, 1, 2))
    np.testing.assert_allclose(centre, [0, 4, 0], atol=0.4)
    assert os.path.isfile(tmp_path / "out" / "qc" / "0001_0001.png")
    timings = json.load(open(tmp_path / "out" / "timings.json"))
    loaded = float(re.search(r"model loaded in ([\d.]+)s", done.stdout).group(1))
    assert abs(timings["model_load_seconds"] - loaded) < 0.01  # the run's model load, written once


def test_sigterm_stops_cleanly(tmp_path):
    """`docker stop` sends SIGTERM: exit 143, a log line, finished fields kept, no partial file anywhere."""
    pytest.importorskip("torch")
    for case in ("0001", "0002", "0003"):
        make_case(tmp_path / "in", case, shift=(1, 0, 0), modalities=(1,), grid=plain_grid(shape=(48, 48, 48)))
    env = dict(os.environ, REMIND2REG_SEQUENCES="ceT1", REMIND2REG_OVERLAP_IO="1", PYTHONUNBUFFERED="1")
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "process.py", "--input", str(tmp_path / "in"), "--output",
                             str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                            text=True, env=env)
    lines = []
    for line in proc.stdout:  # stop it once the first field is written (the model then works on a later case)
        lines.append(line)
        if ": wrote disp_0001_0000_0001_0001.nii.gz" in line:
            proc.send_signal(15)
            break
    lines += proc.stdout.readlines()
    assert proc.wait(60) == 143, "".join(lines)
    err.close()
    text = "".join(lines) + (tmp_path / "stderr.txt").read_text()
    assert "STOPPED by SIGTERM" in text and "summary:" not in text
    # on stderr, its last line (what the platform shows)
    assert (tmp_path / "stderr.txt").read_text().strip().splitlines()[-1].startswith("ERROR: STOPPED by SIGTERM")
    assert partials(tmp_path) == []
    assert "disp_0001_0000_0001_0001.nii.gz" in outputs(tmp_path / "out")  # the finished field is kept
    assert len(outputs(tmp_path / "out")) < 3  # and it did stop before the end
    for name in outputs(tmp_path / "out"):  # whatever was written is a whole field
        assert read_field(tmp_path / "out" / name)[0].shape == (48, 48, 48, 3)


@pytest.mark.parametrize("suffix,compress", [(".mha", False), (".mha", True), (".nrrd", True), (".nii", False),
                                             (".nii.gz", True)])
def test_truncated_files_are_named(tmp_path, suffix, compress):
    path = tmp_path / f"ReMIND2Reg_0001_0000{suffix}"
    sitk.WriteImage(cv.image_from_array(blobs(), plain_grid()), str(path), useCompression=compress)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=f"ReMIND2Reg_0001_0000{suffix}: cannot read .*(unreadable|truncated)"):
        read_image(str(path))


def test_outputs_are_readable_by_others(tmp_path):
    make_case(tmp_path / "in", shift=(1, 0, 0), modalities=(1,))
    old = os.umask(0o022)
    try:
        assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift()) == 0
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "out" / "disp_0001_0000_0001_0001.nii.gz").st_mode & 0o777 == 0o644


def test_read_images_reads_a_case_at_once_and_names_each_failure(tmp_path):
    from interfaces.images import InputError, read_images
    fixed, moving, grid = make_case(tmp_path / "in", grid=oblique_grid())
    paths = {m: str(tmp_path / "in" / cv.image_name("0001", m)) for m in (0, 1, 2)}
    (tmp_path / "in" / cv.image_name("0001", 2)).write_bytes(b"\x1f\x8b broken")
    got = read_images({m: (p, f"role {m}", m == 0) for m, p in paths.items()})
    assert set(got) == {0, 1, 2}
    np.testing.assert_array_equal(got[0].array, fixed)   # index order (i, j, k), whatever the memory layout
    np.testing.assert_array_equal(got[0].array, nib.load(paths[0]).get_fdata().astype(np.float32))
    np.testing.assert_allclose(got[1].array, moving)
    assert isinstance(got[2], InputError) and cv.image_name("0001", 2) in str(got[2]) and "role 2" in str(got[2])


# ---------------------------------------------------------------- I/O overlapping the registration
def test_overlapped_io_writes_the_same_bytes_logs_and_timings(tmp_path, monkeypatch, capsys):
    for case, shift in (("0001", (2, 0, 0)), ("0002", (0, -1, 0)), ("0003", (0, 0, 3))):
        make_case(tmp_path / "in", case, shift=shift)
    runs = {}
    for overlap in ("0", "1"):
        monkeypatch.setenv("REMIND2REG_OVERLAP_IO", overlap)
        out = tmp_path / f"out{overlap}"
        assert process.run(str(tmp_path / "in"), str(out), registration=FakeShift(), qc_dir=str(out / "qc")) == 0
        runs[overlap] = capsys.readouterr().out
        assert len(outputs(out)) == 6 and len(os.listdir(out / "qc")) == 6
        timings = json.load(open(out / "timings.json"))["pairs"]
        assert len(timings) == 6 and all(t["write"] > 0 and t["read"] > 0 for t in timings.values())
    for name in outputs(tmp_path / "out0"):
        assert (tmp_path / "out0" / name).read_bytes() == (tmp_path / "out1" / name).read_bytes()
    assert "I/O overlaps the registration" in runs["1"] and "I/O overlaps" not in runs["0"]
    for text in runs.values():
        assert text.count(": wrote disp_") == 6 and "summary: 6 ok, 0 failed" in text


def test_auto_overlap_follows_the_model_device(tmp_path, monkeypatch, capsys):
    make_case(tmp_path / "in", "0001", shift=(1, 0, 0), modalities=(1,))
    make_case(tmp_path / "in", "0002", shift=(0, 1, 0), modalities=(1,))
    monkeypatch.delenv("REMIND2REG_OVERLAP_IO", raising=False)
    for device, overlaps in (("cpu", False), ("cuda:0", True)):
        fake = FakeShift()
        fake.device_name = device
        assert process.run(str(tmp_path / "in"), str(tmp_path / device.replace(":", "")), registration=fake) == 0
        assert ("I/O overlaps the registration" in capsys.readouterr().out) is overlaps


def test_a_failing_write_is_named_and_leaves_no_partial(tmp_path, monkeypatch, capsys):
    make_case(tmp_path / "in", "0001", shift=(1, 0, 0))
    make_case(tmp_path / "in", "0002", shift=(0, 1, 0), modalities=(1,))
    blocker = tmp_path / "out" / "disp_0001_0000_0001_0001.nii.gz"  # a non-empty folder under the output's name
    os.makedirs(blocker)
    (blocker / "keep").write_text("x")
    for overlap in ("0", "1"):
        monkeypatch.setenv("REMIND2REG_OVERLAP_IO", overlap)
        assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift()) == 1
        captured = capsys.readouterr()
        assert "ERROR: FAILED case 0001 ceT1: cannot write disp_0001_0000_0001_0001.nii.gz" in captured.err
        assert "summary: 2 ok, 1 failed" in captured.out
        assert captured.err.strip().splitlines()[-1].startswith(
            "ERROR: run failed: 1 of 3 pair(s) failed: case 0001 ceT1: cannot write disp_0001_0000_0001_0001.nii.gz")
        assert outputs(tmp_path / "out") == ["disp_0001_0000_0001_0001.nii.gz", "disp_0001_0000_0001_0002.nii.gz",
                                             "disp_0002_0000_0002_0001.nii.gz"]
        assert partials(tmp_path) == [] and os.listdir(blocker) == ["keep"]


def test_background_io_keeps_one_write_pending_and_reports_errors():
    import threading

    from interfaces.background_io import BackgroundIO
    from runner.settings import overlap_mode

    assert [overlap_mode(v) for v in (None, "auto", "1", "0", " ON ")] == ["auto", "auto", "on", "off", "on"]
    with pytest.raises(ValueError, match="REMIND2REG_OVERLAP_IO"):
        overlap_mode("yes")
    io = BackgroundIO()
    assert io.read(lambda: threading.current_thread().name).result() == threading.current_thread().name  # in line
    io.start(True)
    release, running = threading.Event(), []

    def slow_write(tag):
        running.append(tag)
        release.wait(5)
        return tag

    first = io.write(slow_write, "a")
    waiter = threading.Thread(target=lambda: io.write(slow_write, "b"))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and running == ["a"]  # "b" waits until "a" is written
    release.set()
    waiter.join(5)
    assert first.result() == "a" and "read-ahead" in io.read(lambda: threading.current_thread().name).result()
    failing = io.read(lambda: 1 / 0)
    io.close()
    with pytest.raises(ZeroDivisionError):
        failing.result()


@pytest.mark.parametrize("variable, value", [("REMIND2REG_OVERLAP_IO", "sometimes"),
                                             ("REMIND2REG_GZIP_LEVEL", "fast"), ("REMIND2REG_GZIP_LEVEL", "10")])
def test_unknown_settings_are_setup_errors(tmp_path, monkeypatch, capsys, variable, value):
    make_case(tmp_path / "in", "0001", modalities=(1,))
    monkeypatch.setenv(variable, value)
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift()) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"ERROR: FAILED: {variable}={value!r}")
    assert not os.path.exists(tmp_path / "out")  # stopped before anything was made


def test_a_missing_model_config_file_is_a_setup_error(tmp_path, monkeypatch, capsys):
    make_case(tmp_path / "in", "0001", modalities=(1,))
    variable, value = "REMIND2REG_CONFIG", str(tmp_path / "nowhere.json")
    monkeypatch.setenv(variable, value)
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out")) == 2  # the project's model, not loaded
    assert f"ERROR: FAILED: {variable}={value!r}: no such model config file" in capsys.readouterr().err
    from runner.settings import CONFIG_ENV
    assert CONFIG_ENV == variable
    assert not os.path.exists(tmp_path / "out")  # stopped before anything was made


def test_gzip_level_setting_changes_the_file_not_the_field(tmp_path, monkeypatch):
    make_case(tmp_path / "in", "0001", shift=(2, -1, 0), modalities=(1,))
    for level in ("0", "6"):
        monkeypatch.setenv("REMIND2REG_GZIP_LEVEL", level)
        assert process.run(str(tmp_path / "in"), str(tmp_path / f"out{level}"), registration=FakeShift()) == 0
    name = "disp_0001_0000_0001_0001.nii.gz"
    stored, deflated = tmp_path / "out0" / name, tmp_path / "out6" / name
    assert os.path.getsize(deflated) < 0.5 * os.path.getsize(stored)  # a constant field deflates well
    np.testing.assert_array_equal(read_field(stored)[0], read_field(deflated)[0])


def test_in_line_io_holds_one_case_at_a_time(tmp_path, monkeypatch):
    """Without overlap a case is read only after the previous one is registered (memory: one case), and
    NIfTI inputs keep no SimpleITK copy unless a resampling needs one."""
    for case in ("0001", "0002", "0003"):
        make_case(tmp_path / "in", case, shift=(1, 0, 0), modalities=(1,))
    events = []
    import runner.cases
    real_read = runner.cases.read_case

    def read(paths):
        events.append("read")
        images, seconds = real_read(paths)
        assert all(image._image is None for image in images.values())  # grids match: no sitk copy made
        return images, seconds

    class Recording(FakeShift):
        def register(self, fixed, moving, spacing, target):
            events.append("register")
            return super().register(fixed, moving, spacing, target)

    monkeypatch.setattr(runner.cases, "read_case", read)
    monkeypatch.setenv("REMIND2REG_OVERLAP_IO", "0")
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=Recording()) == 0
    assert events == ["read", "register"] * 3
    import threading

    second_read = threading.Event()
    seen_during_first_register = []

    def read_signalling(paths):
        out = read(paths)
        if events.count("read") == 2:
            second_read.set()
        return out

    class WaitsForReadAhead(Recording):
        def register(self, fixed, moving, spacing, target):
            if not seen_during_first_register:  # the first pair: the next case must be read meanwhile
                seen_during_first_register.append(second_read.wait(10))
            return super().register(fixed, moving, spacing, target)

    monkeypatch.setattr(runner.cases, "read_case", read_signalling)
    monkeypatch.setenv("REMIND2REG_OVERLAP_IO", "1")
    events.clear()
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out1"), registration=WaitsForReadAhead()) == 0
    assert seen_during_first_register == [True] and events.count("read") == 3 and events.count("register") == 3


# ---------------------------------------------------------------- stderr, progress, shards
def test_a_successful_run_that_warned_does_not_end_like_a_failure(tmp_path, capsys):
    make_case(tmp_path / "in", "0001", shift=(1, 0, 0), modalities=(1,))
    make_case(tmp_path / "in", "0002", modalities=(2,))  # only T2: nothing to do for a ceT1 container
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift(), sequences="ceT1") == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines[0].startswith("WARNING: case 0002: found") and "nothing to do for this container" in lines[0]
    assert lines[-1] == "WARNING: finished, exit status 0: 1 of 1 pair(s) written, no failure (1 warning(s) above)"
    assert "WARNING" not in captured.out and "summary: 1 ok, 0 failed" in captured.out
    make_case(tmp_path / "clean", "0001", shift=(1, 0, 0), modalities=(1,))
    assert process.run(str(tmp_path / "clean"), str(tmp_path / "out2"), registration=FakeShift()) == 0
    assert capsys.readouterr().err == ""  # nothing to say: no stderr at all


def test_progress_counts_pairs_and_estimates_the_time_left(tmp_path, capsys):
    from interfaces.logs import Progress, fmt_duration

    now = [100.0]
    progress = Progress(5, clock=lambda: now[0])
    now[0] = 130.0                       # the first pair took 30 s (model load included)
    assert progress.text(1) == "[1/5, about 2 min 00 s left] "
    now[0] = 140.0                       # then 10 s per pair
    assert progress.text(2) == "[2/5, about 30 s left] "
    now[0] = 160.0
    assert progress.text(4) == "[4/5, about 10 s left] "
    assert progress.text(5) == "[5/5] "
    assert [fmt_duration(s) for s in (0.4, 59, 61, 3600 + 7 * 60 + 3)] == ["0 s", "59 s", "1 min 01 s", "1 h 07 min"]
    for case in ("0001", "0002"):
        make_case(tmp_path / "in", case, shift=(1, 0, 0))
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift()) == 0
    wrote = [line for line in capsys.readouterr().out.splitlines() if ": wrote disp_" in line]
    assert [re.search(r"INFO \[(\d)/4", line).group(1) for line in wrote] == ["1", "2", "3", "4"]
    assert all(" left] case 000" in line for line in wrote[:3]) and "INFO [4/4] case 0002 T2: wrote" in wrote[3]


def _shard_folder(folder, n_cases=7):
    for n in range(n_cases):
        make_case(folder, f"{n * 3 + 1:04d}", shift=(1, 0, 0), modalities=(1,))
    return sorted(f"{n * 3 + 1:04d}" for n in range(n_cases))


def _cases_written(folder):
    return sorted(name[5:9] for name in outputs(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("n", [1, 2, 3, 7, 9])
def test_shards_take_every_case_exactly_once(tmp_path, capsys, n):
    cases = _shard_folder(tmp_path / "in")
    taken = []
    for k in range(n):  # every shard into its own folder, and all of them into one shared folder
        for out in (tmp_path / f"out{k}", tmp_path / "shared"):
            assert process.run(str(tmp_path / "in"), str(out), registration=FakeShift(), shard=f"{k}/{n}") == 0
        taken.append(_cases_written(tmp_path / f"out{k}"))
        expected = cases[k::n]  # sorted case ids, position K modulo N
        assert taken[-1] == expected
        timings = cv.timings_name(None if n == 1 else (k, n))
        if expected:
            pairs = json.load(open(tmp_path / f"out{k}" / timings))["pairs"]
            assert sorted(pairs) == [cv.pair_key(c, 1) for c in expected]
    assert sorted(c for shard in taken for c in shard) == cases  # no gap, no overlap
    assert _cases_written(tmp_path / "shared") == cases
    names = sorted(f for f in os.listdir(tmp_path / "shared") if f.startswith("timings"))
    assert names == (["timings.json"] if n == 1 else sorted(f"timings.{k}-of-{n}.json" for k in range(n) if k < 7))
    # the scorer finds every shard's runtime in the shared folder
    from evaluation.layouts import locate_organisers

    pairs = [type("P", (), {"case": c, "moving": 1, "key": cv.pair_key(c, 1)})() for c in cases]
    assert sorted(locate_organisers(str(tmp_path / "shared"), pairs).runtimes) == [p.key for p in pairs]
    if n == 9:  # shards 7 and 8 have no case: exit 0, said in the log
        assert "shard 8 of 9 (from --shard, K counts from 0): 0 of the 7 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("environ, shard", [
    ({"REMIND2REG_SHARD": "1/3"}, (1, 3)),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3)),                   # --array=0-2
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}, (0, 3)),  # 1-3
    ({"SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "10",
      "SLURM_ARRAY_TASK_STEP": "2"}, (2, 4)),                                               # 10-16:2
    ({"JOB_COMPLETION_INDEX": "0", "REMIND2REG_SHARDS": "2"}, (0, 2)),                      # Kubernetes
    ({"JOB_COMPLETION_INDEX": "0", "REMIND2REG_SHARDS": "1"}, None),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", "REMIND2REG_SHARD": "0/1"}, None),  # off
    ({"REMIND2REG_SHARDS": "1"}, None), ({}, None)])
def test_shard_from_the_environment(tmp_path, monkeypatch, environ, shard):
    from runner.settings import read_settings

    assert read_settings(environ).shard == shard
    cases = _shard_folder(tmp_path / "in")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift()) == 0
    assert _cases_written(tmp_path / "out") == (cases if shard is None else cases[shard[0]::shard[1]])
    # the command line wins over the environment
    assert process.run(str(tmp_path / "in"), str(tmp_path / "cli"), registration=FakeShift(), shard="1/2") == 0
    assert _cases_written(tmp_path / "cli") == cases[1::2]


@pytest.mark.parametrize("environ, shard, message", [
    ({}, "3/3", "--shard='3/3': shard 3 of 3: expected 0 <= K < N"),
    ({}, "1", "--shard='1': expected K/N"),
    ({}, "a/2", "--shard='a/2': 'a' is not a whole number"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, None, "$SLURM_ARRAY_TASK_ID: 'x' is not a whole"),
    ({"REMIND2REG_SHARD": "2/0"}, None, "$REMIND2REG_SHARD='2/0': shard 2 of 0"),
    ({"JOB_COMPLETION_INDEX": "1"}, None, "$JOB_COMPLETION_INDEX is set but $REMIND2REG_SHARDS is not"),
    ({"JOB_COMPLETION_INDEX": "4", "REMIND2REG_SHARDS": "4"}, None, "shard 4 of 4"),
    ({"SLURM_ARRAY_TASK_ID": "3"}, None, "$SLURM_ARRAY_TASK_COUNT is not"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_STEP": "2"}, None,
     "not on the array's range"),
    ({"REMIND2REG_SHARDS": "4"}, None, "without a shard index")])
def test_bad_shard_settings_are_setup_errors(tmp_path, monkeypatch, capsys, environ, shard, message):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    _shard_folder(tmp_path / "in", 2)
    assert process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift(), shard=shard) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("ERROR: FAILED: ") and message in last, last
    assert not os.path.exists(tmp_path / "out")


def test_a_grand_challenge_job_is_not_sharded(tmp_path, capsys):
    make_case(tmp_path / "org", shift=(1, 0, 0))
    make_gc_input(tmp_path / "gc", tmp_path / "org", modalities=(0, 1))
    assert process.run(str(tmp_path / "gc"), str(tmp_path / "out"), registration=FakeShift(), shard="1/2") == 2
    assert "a Grand Challenge job is one case" in capsys.readouterr().err.strip().splitlines()[-1]
    assert process.run(str(tmp_path / "gc"), str(tmp_path / "out"), registration=FakeShift(), shard="0/1") == 0


def test_shard_on_the_command_line(tmp_path):
    for case in ("0001", "0004", "0007"):  # T2 only, a ceT1 run: nothing to register, no model loaded
        make_case(tmp_path / "in", case, modalities=(2,))
    env = {k: v for k, v in os.environ.items() if k not in SHARD_VARIABLES}
    done = subprocess.run([sys.executable, "-c", "import process, sys; sys.exit(process.main(sys.argv[1:]))",
                           "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--shard", "1/2"],
                          cwd=ROOT, capture_output=True, text=True, env=dict(env, REMIND2REG_SEQUENCES="ceT1",
                                                                              REMIND2REG_MODEL_DIR=str(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "shard 1 of 2 (from --shard, K counts from 0): 1 of the 3 case(s) (0004 .. 0004)" in done.stdout
    assert "case 0004: found" in done.stderr and "case 0001" not in done.stderr + done.stdout.split("shard 1")[1]
