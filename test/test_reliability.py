"""Do no harm (issue 11, items 3-6): every row of docs/RELIABILITY.md's bad-input matrix, through process.run
with the fake registration (test_process.FakeShift) unless the row is about the project's model config.

Each row asserts the exit status, the one-line message naming the file, what is written, and that the other
pairs are still done. As root, chmod cannot make a file unreadable: permissions are tested with a monkeypatched
`open` in interfaces.images (and a folder in place of the file), an unwritable output folder with a
monkeypatched probe and, where the machine has one, a real read-only /sys."""
import gzip
import json
import os
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from test_process import SHAPE, FakeShift, blobs, make_case, make_gc_input, outputs, partials, plain_grid, write

import process
from interfaces import conventions as cv
from interfaces import gates
from interfaces.images import InputError, read_image

GOOD = ["disp_0001_0000_0001_0001.nii.gz"]
RESECT_US = Path(__file__).resolve().parents[2] / "shared" / "data" / "resect-case24" / "us.nii.gz"


def run(tmp_path, capsys, registration=None, folder="in", out="out", **kwargs):
    code = process.run(str(tmp_path / folder), str(tmp_path / out),
                       registration=FakeShift() if registration is None else registration, sequences="ceT1", **kwargs)
    captured = capsys.readouterr()  # INFO on stdout, WARNING/ERROR on stderr (interfaces/logs.py)
    return code, captured.out + captured.err


def failed_line(text, label):
    lines = [line for line in text.splitlines() if f"FAILED {label}" in line]
    assert len(lines) == 1, (label, text)
    assert lines[0].startswith(f"ERROR: FAILED {label}"), lines[0]  # an stderr line
    return lines[0]


def with_good_case(folder):
    make_case(folder, "0001", shift=(1, 0, 0), modalities=(1,))


# ---------------------------------------------------------------- item 3: content and geometry gates
def _bad_mr(folder, kind):
    fixed, _, grid = make_case(folder, "0002", modalities=(1,))
    mr = {"zero": np.zeros(SHAPE), "constant": np.full(SHAPE, 7.0),
          "inf": np.where(blobs() > 50, np.inf, blobs()),
          "flat_head": np.where(blobs() > 10, 5.0, 0.0),       # a mask: nothing for the normalisation to scale
          "outside_fan": np.zeros(SHAPE)}[kind]
    if kind == "outside_fan":  # a bright corner, 8 voxels of 15360: the MR shows nothing inside the fan
        mr[:2, :2, :2] = np.arange(8).reshape(2, 2, 2) + 1.0
    write(folder / "ReMIND2Reg_0002_0001.nii.gz", mr, grid)


def _bad_ius(folder, kind):
    fixed, _, grid = make_case(folder, "0002", modalities=(1,))
    us = {"zero": np.zeros(SHAPE), "negative": -1.0 - blobs(), "tiny_fan": np.zeros(SHAPE),
          "flat_fan": np.pad(np.full(tuple(n - 4 for n in SHAPE), 50.0), 2)}[kind]  # 1.1 cm^3, all 50
    if kind == "tiny_fan":  # 8x8x8 voxels at 0.5 mm: 0.064 cm^3 of fan
        us[10:18, 8:16, 6:14] = blobs()[10:18, 8:16, 6:14] + 1.0
    write(folder / "ReMIND2Reg_0002_0000.nii.gz", us, grid)


@pytest.mark.parametrize("side, kind, fragment", [
    ("mr", "zero", "ReMIND2Reg_0002_0001.nii.gz: ceT1 image is empty (all voxels are 0)"),
    ("mr", "constant", "ReMIND2Reg_0002_0001.nii.gz: ceT1 image is constant (every voxel is 7)"),
    ("mr", "inf", "ReMIND2Reg_0002_0001.nii.gz: ceT1 image contains"),
    ("mr", "flat_head", "ReMIND2Reg_0002_0001.nii.gz: ceT1 image has no contrast inside the head"),
    ("mr", "outside_fan", "ReMIND2Reg_0002_0001.nii.gz: ceT1 image has no contrast inside the iUS fan"),
    ("ius", "zero", "ReMIND2Reg_0002_0000.nii.gz: iUS (fixed) image is empty (all voxels are 0)"),
    ("ius", "negative", "ReMIND2Reg_0002_0000.nii.gz: iUS (fixed) image has no positive voxel"),
    ("ius", "tiny_fan", "ReMIND2Reg_0002_0000.nii.gz: iUS (fixed) image has an ultrasound fan too small to register:"
                        " 0.064 cm^3"),
    ("ius", "flat_fan", "ReMIND2Reg_0002_0000.nii.gz: iUS (fixed) image has no contrast inside the ultrasound fan"),
])
def test_content_gates_skip_the_pair_and_the_others_are_done(tmp_path, capsys, side, kind, fragment):
    with_good_case(tmp_path / "in")
    (_bad_mr if side == "mr" else _bad_ius)(tmp_path / "in", kind)
    fake = FakeShift()
    code, text = run(tmp_path, capsys, fake)
    assert code == 1
    label = "case 0002 ceT1" if side == "mr" else "case 0002"
    assert fragment in failed_line(text, label)
    assert outputs(tmp_path / "out") == GOOD and len(fake.calls) == 1  # the bad pair never reached the model
    assert "summary: 1 ok, 1 failed" in text and "Traceback" not in text


@pytest.mark.parametrize("which, grid, fragment", [
    ("0000", plain_grid(spacing=(0.0005,) * 3), "spacing 0.0005x0.0005x0.0005 mm, outside the plausible 0.05-10 mm per"
                                                " axis (a header in metres?)"),
    ("0001", plain_grid(spacing=(12.0, 1.0, 1.0)), "spacing 12x1x1 mm, outside the plausible 0.05-10 mm"),
    ("0000", plain_grid(shape=(32, 24, 8)), "field of view of 4 mm along axis k"),
    ("0001", plain_grid(shape=(70, 24, 20), spacing=(9.0, 1.0, 1.0)), "field of view of 630 mm along axis i"),
])
def test_implausible_geometry_is_refused(tmp_path, capsys, which, grid, fragment):
    with_good_case(tmp_path / "in")
    make_case(tmp_path / "in", "0002", modalities=(1,))
    write(tmp_path / "in" / f"ReMIND2Reg_0002_{which}.nii.gz", blobs(grid.shape), grid)
    code, text = run(tmp_path, capsys)
    assert code == 1 and outputs(tmp_path / "out") == GOOD
    line = failed_line(text, "case 0002")
    assert f"ReMIND2Reg_0002_{which}.nii.gz: " in line and fragment in line


def _mha_with_header(path, replace):
    sitk.WriteImage(cv.image_from_array(blobs(), plain_grid(spacing=(1.0, 1.0, 1.0))), str(path))
    data = Path(path).read_bytes()
    for old, new in replace:
        assert old in data
        data = data.replace(old, new)
    Path(path).write_bytes(data)


def test_sheared_and_zero_spacing_headers_are_named(tmp_path):
    identity = b"TransformMatrix = 1 0 0 0 1 0 0 0 1"
    sheared = tmp_path / "ReMIND2Reg_0001_0000.mha"  # det 1, not a rotation: passed the old |det| = 1 check
    _mha_with_header(sheared, [(identity, b"TransformMatrix = 1 0 0 0.5 1 0 0 0 1")])
    with pytest.raises(InputError, match=r"ReMIND2Reg_0001_0000.mha: iUS has a sheared \(non-orthonormal\) direction"):
        read_image(str(sheared), "iUS", True)
    zero = tmp_path / "ReMIND2Reg_0001_0001.mha"  # SimpleITK refuses to read it: "zero spacing", not "corrupt"
    _mha_with_header(zero, [(b"ElementSpacing = 1 1 1", b"ElementSpacing = 0 0 0")])
    with pytest.raises(InputError, match="ReMIND2Reg_0001_0001.mha: MR has zero, negative or non-finite spacing"):
        read_image(str(zero), "MR")
    nifti = nib.Nifti1Image(blobs(), np.eye(4))  # pixdim 0: nibabel and SimpleITK would read it as 1 mm
    nifti.header.set_qform(None, code=0)
    nifti.header.set_sform(None, code=0)
    raw = bytearray(nifti.header.binaryblock + b"\x00" * 4 + blobs().T.tobytes())
    raw[80:92] = np.zeros(3, "<f4").tobytes()  # pixdim[1:4]
    for name, data in (("zero.nii", bytes(raw)), ("zero.nii.gz", gzip.compress(bytes(raw)))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=rf"{name}: MR has zero spacing \(pixdim\)"):
            read_image(str(tmp_path / name), "MR")
    shear = np.eye(4)
    shear[0, 1] = 0.5
    nifti = nib.Nifti1Image(blobs(), shear)
    nifti.header.set_qform(None, code=0)
    nib.save(nifti, str(tmp_path / "shear.nii.gz"))  # ITK refuses the header: its reason is said plainly
    with pytest.raises(InputError, match=r"shear.nii.gz: MR has a sheared \(non-orthonormal\) direction"):
        read_image(str(tmp_path / "shear.nii.gz"), "MR")


def test_gates_let_real_and_small_fan_simulated_cases_through():
    """The floors refuse nothing the project registers: the small-fan stress case (the full 128 mm scene, low
    resolution) and, when the shared data is there, the real RESECT-24 iUS (~48 cm^3 of fan)."""
    from simulation.stress import OPTIONAL, make_stress_case
    case = make_stress_case(4013, shape=(48,) * 3, spacing=128 / 48, force={n: n == "small_fan" for n in OPTIONAL})
    assert 10 < gates.fan_cm3(case["fixed"], (128 / 48,) * 3) < 200
    assert gates.ius_problem(case["fixed"], (128 / 48,) * 3) is None
    for mr in case["moving"].values():
        assert gates.mr_problem(mr) is None and gates.mr_in_fan_problem(mr, case["fixed"]) is None
    if RESECT_US.is_file():
        us = read_image(str(RESECT_US), "iUS", True)  # raises if a gate refused it
        assert 30 < gates.fan_cm3(us.array, us.grid.spacing) < 80


def test_gates_hold_in_the_grand_challenge_layout(tmp_path, capsys):
    make_case(tmp_path / "org", shift=(1, 0, 0))
    metres = cv.Grid(SHAPE, (0.0005,) * 3, (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    write(tmp_path / "org" / "ReMIND2Reg_0001_0000.nii.gz", blobs(), metres)
    make_gc_input(tmp_path / "gc", tmp_path / "org")
    code, text = run(tmp_path, capsys, folder="gc")
    assert code == 1 and "a header in metres" in failed_line(text, "job")
    assert not os.path.exists(tmp_path / "out" / "images")


# ---------------------------------------------------------------- item 5: true causes
def test_unreadable_file_is_not_called_missing(tmp_path, capsys, monkeypatch):
    with_good_case(tmp_path / "in")
    make_case(tmp_path / "in", "0002", modalities=(1,))
    locked = str(tmp_path / "in" / "ReMIND2Reg_0002_0001.nii.gz")
    import builtins

    import interfaces.images as images

    def no_permission(path, *args, **kwargs):  # root ignores chmod: the permission error is simulated
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(images, "open", no_permission, raising=False)
    code, text = run(tmp_path, capsys)
    line = failed_line(text, "case 0002 ceT1")
    assert code == 1 and "ReMIND2Reg_0002_0001.nii.gz: ceT1 image file exists but cannot be opened: permission denied" in line
    assert "not found" not in line and outputs(tmp_path / "out") == GOOD


def test_a_folder_in_place_of_an_image_is_named(tmp_path, capsys):
    with_good_case(tmp_path / "in")
    make_case(tmp_path / "in", "0002", modalities=(1,))
    os.remove(tmp_path / "in" / "ReMIND2Reg_0002_0000.nii.gz")
    os.makedirs(tmp_path / "in" / "ReMIND2Reg_0002_0000.nii.gz")
    code, text = run(tmp_path, capsys)
    line = failed_line(text, "case 0002")
    assert code == 1 and "ReMIND2Reg_0002_0000.nii.gz: iUS (fixed) image path is a folder, not an image file" in line
    with pytest.raises(InputError, match="broken link"):
        os.symlink(tmp_path / "nowhere.nii.gz", tmp_path / "link.nii.gz")
        read_image(str(tmp_path / "link.nii.gz"))


def test_truncated_mha_says_truncated_not_missing(tmp_path):
    path = tmp_path / "ReMIND2Reg_0001_0000.mha"
    sitk.WriteImage(cv.image_from_array(blobs(), plain_grid()), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(InputError) as info:
        read_image(str(path), "iUS", True)
    message = str(info.value)
    assert message.startswith("ReMIND2Reg_0001_0000.mha: cannot read iUS voxels (truncated file: ")
    assert f"of the {int(np.prod(SHAPE)) * 4} bytes" in message and "No such file" not in message


def test_input_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "in").write_text("not a folder")
    code, text = run(tmp_path, capsys)
    assert code == 2 and f"FAILED: input folder {tmp_path / 'in'} is a file, not a folder" in text
    assert "does not exist" not in text


def test_near_miss_names_are_warned(tmp_path, capsys):
    with_good_case(tmp_path / "in")
    near = ["ReMIND2Reg_12_0000.nii.gz", "remind2reg_0001_0000.nii.gz", "ReMIND2Reg_0001_T1.nii.gz", "iUS_case3.mha"]
    for name in near:
        (tmp_path / "in" / name).write_bytes(b"x")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    code, text = run(tmp_path, capsys)
    assert code == 0 and outputs(tmp_path / "out") == GOOD
    warning = [line for line in text.splitlines() if "WARNING" in line and "does not match" in line]
    assert len(warning) == 1 and all(name in warning[0] for name in near) and "notes.txt" not in warning[0]


# ---------------------------------------------------------------- item 5: side files and reruns
def test_unwritable_timings_json_is_a_warning(tmp_path, capsys):
    with_good_case(tmp_path / "in")
    os.makedirs(tmp_path / "out" / "timings.json" / "keep")  # a folder in its place: os.replace fails
    code, text = run(tmp_path, capsys)
    assert code == 0 and outputs(tmp_path / "out") == GOOD
    assert "WARNING: timings.json not written: " in text and "summary: 1 ok, 0 failed" in text
    assert "Traceback" not in text and partials(tmp_path) == []


@pytest.mark.parametrize("breakage", ["bad iUS", "missing iUS", "bad MR", "model error"])
def test_a_pair_failing_on_a_rerun_leaves_no_stale_field(tmp_path, capsys, breakage):
    with_good_case(tmp_path / "in")
    make_case(tmp_path / "in", "0002", shift=(0, 1, 0), modalities=(1,))
    assert run(tmp_path, capsys)[0] == 0
    stale = "disp_0002_0000_0002_0001.nii.gz"
    assert outputs(tmp_path / "out") == GOOD + [stale]
    registration = FakeShift()
    if breakage == "bad iUS":
        write(tmp_path / "in" / "ReMIND2Reg_0002_0000.nii.gz", np.zeros(SHAPE), plain_grid())
    elif breakage == "missing iUS":
        os.remove(tmp_path / "in" / "ReMIND2Reg_0002_0000.nii.gz")
    elif breakage == "bad MR":
        write(tmp_path / "in" / "ReMIND2Reg_0002_0001.nii.gz", np.full(SHAPE, 3.0), plain_grid())
    else:
        class Failing(FakeShift):
            def register(self, fixed, moving, spacing, target):
                if len(self.calls) == 1:
                    raise RuntimeError("CUDA out of memory (simulated)")
                return super().register(fixed, moving, spacing, target)
        registration = Failing()
    code, text = run(tmp_path, capsys, registration)
    assert code == 1 and outputs(tmp_path / "out") == GOOD
    assert f"removed {stale} left by an earlier run" in text


# ---------------------------------------------------------------- item 4: setup errors, exit 2
def test_unwritable_output_folder_is_a_setup_error(tmp_path, capsys, monkeypatch):
    with_good_case(tmp_path / "in")

    def refuse(folder):  # as root a chmod'ed folder is still writable: the probe's failure is simulated
        raise PermissionError(13, "Permission denied", os.path.join(folder, ".write-test"))

    monkeypatch.setattr(sys.modules["runner.run"], "check_writable", refuse)
    code, text = run(tmp_path, capsys)
    assert code == 2 and f"FAILED: output folder {tmp_path / 'out'} cannot be written: " in text
    assert "summary" not in text and outputs(tmp_path / "out") == []
    monkeypatch.undo()
    (tmp_path / "file").write_text("x")
    code, text = run(tmp_path, capsys, out="file")
    assert code == 2 and "FAILED: cannot create output folder" in text


def test_read_only_output_folder_really_probed(tmp_path, capsys):
    """A real refusal, also as root: /sys is a read-only filesystem where the machine has one."""
    try:
        tempfile.NamedTemporaryFile(dir="/sys").close()
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    with_good_case(tmp_path / "in")
    code = process.run(str(tmp_path / "in"), "/sys", registration=FakeShift())
    assert code == 2 and "ERROR: FAILED: output folder /sys cannot be written" in capsys.readouterr().err


@pytest.mark.parametrize("content, fragment", [
    ('{"refine": {"iterations": 40,}}', "broken JSON: Expecting property name"),
    ('{"refine": {"iteratons": 40}}', "unknown model config key 'refine.iteratons'"),
    ('{"global": {"model": "affine"}}', "unknown model config key 'global.model'"),  # a removed option
    ('{"refine": {"lr": "fast"}}', "model config key 'refine.lr': expected a number, got 'fast'"),
    ('{"refine": {"iterations": -5}}', "model config key 'refine.iterations': -5 is out of range (must be >= 0)"),
    ('{"refine": {"iterations": 7.5}}', "model config key 'refine.iterations': expected an integer, got 7.5"),
    ('{"global": {"radius": [3]}}', "model config key 'global.radius': 1 entries for 2 levels_mm"),
    ('{"device": "gpu"}', "model config key 'device': expected null, auto, cpu, cuda or cuda:N, got 'gpu'"),
])
@pytest.mark.parametrize("source", ["env", "tarball"])
def test_a_broken_model_config_is_a_setup_error(tmp_path, capsys, monkeypatch, content, fragment, source):
    with_good_case(tmp_path / "in")
    os.makedirs(tmp_path / "model")
    config = tmp_path / "model" / "config.json"
    config.write_text(content)
    if source == "env":
        monkeypatch.setenv("REMIND2REG_CONFIG", str(config))
        named = f"REMIND2REG_CONFIG={str(config)!r}: "
    else:
        monkeypatch.delenv("REMIND2REG_CONFIG", raising=False)
        monkeypatch.setenv("REMIND2REG_MODEL_DIR", str(tmp_path / "model"))
        named = f"model config {config} (model tarball): "
    code = process.run(str(tmp_path / "in"), str(tmp_path / "out"), sequences="ceT1")  # the project's model
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 2 and f"ERROR: FAILED: {named}" in captured.err and fragment in text, text
    assert "Traceback" not in text and "case 0001" not in text  # before any work: no per-pair errors
    assert not os.path.exists(tmp_path / "out")


def test_the_model_config_is_read_once_and_named(tmp_path, capsys, monkeypatch):
    """Validated at setup, that same ModelConfig reaches the model (model.config.load_config called once), and the
    log names the file in use."""
    pytest.importorskip("torch")
    import model
    import model.config

    with_good_case(tmp_path / "in")
    config = tmp_path / "override.json"
    config.write_text(json.dumps({"refine": {"iterations": 7}}))
    monkeypatch.setenv("REMIND2REG_CONFIG", str(config))
    reads, seen = [], []
    real = model.config.load_config

    def counting(path=None, overrides=None):
        reads.append(path)
        return real(path, overrides)

    class Model(FakeShift):
        def __init__(self, cfg, device=None):
            super().__init__()
            seen.append(cfg)
            self.device_name = "cpu"

    monkeypatch.setattr(model.config, "load_config", counting)
    monkeypatch.setattr(model, "load_config", counting)
    monkeypatch.setattr(model, "Registration", Model)
    code = process.run(str(tmp_path / "in"), str(tmp_path / "out"), sequences="ceT1")
    text = capsys.readouterr().out
    assert code == 0 and reads == [str(config)] and seen[0].refine.iterations == 7
    assert f"model config: REMIND2REG_CONFIG={str(config)!r}" in text
