"""Do no harm, round 2 (issue 32), the input/output rows: headers that claim more than their file or the
memory holds (4), a rerun's leftovers (6, 10c), sockets outside the input folder (7), ASCII case ids (8),
and three messages (10). Through process.run with the fake registration of test_process."""
import gzip
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from test_process import FakeShift, make_case, make_gc_input, outputs, partials, plain_grid, write

import process
from interfaces import conventions as cv
from interfaces import grand_challenge as gc
from interfaces import images
from interfaces.images import InputError, read_image

CET1, T2 = "disp_0001_0000_0001_0001.nii.gz", "disp_0001_0000_0001_0002.nii.gz"


def run(tmp_path, capsys, folder="in", out="out", sequences="ceT1", **kwargs):
    code = process.run(str(tmp_path / folder), str(tmp_path / out), registration=FakeShift(), sequences=sequences,
                       **kwargs)
    captured = capsys.readouterr()
    return code, captured.out + captured.err, captured.err


def warnings(text):
    return [line for line in text.splitlines() if line.startswith("WARNING: ")]


# ---------------------------------------------------------------- row 4: header sanity before any allocation
def nifti_claim(path, shape, gz):
    """A NIfTI header claiming `shape` float32 voxels at 0.2 mm (a plausible 200 mm view), no voxel data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_zooms((0.2, 0.2, 0.2))
    header["vox_offset"] = 352
    header["magic"] = b"n+1"  # one file: header and (no) voxels
    raw = header.binaryblock + b"\0" * 4
    path.write_bytes(gzip.compress(raw) if gz else raw)


def mha_claim(path, shape, compressed):
    text = (f"ObjectType = Image\nNDims = 3\nDimSize = {' '.join(map(str, shape))}\nElementSpacing = 0.2 0.2 0.2\n"
            f"ElementType = MET_FLOAT\n{'CompressedData = True' + chr(10) if compressed else ''}"
            "ElementDataFile = LOCAL\n")
    path.write_bytes(text.encode() + b"\x78\x9c" + b"\0" * 40)


@pytest.fixture
def no_voxel_read(monkeypatch):
    """Reading the voxels of a refused header is the harm itself (4 GB allocated for a 99-byte file)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the voxels were read")
    monkeypatch.setattr(images, "_read_voxels", forbidden)


CLAIM = "iUS (fixed) image header claims 1000x1000x1000 float32 voxels (4 GB), more than its {size}-byte file can hold"
SHORT = "cannot read iUS (fixed) image voxels (truncated file: {present} of the 4000000000 bytes of voxel data"


@pytest.mark.parametrize("name, make, expected", [
    ("a.nii.gz", lambda p: nifti_claim(p, (1000,) * 3, gz=True), CLAIM),
    ("a.nii", lambda p: nifti_claim(p, (1000,) * 3, gz=False), SHORT),
    ("a.mha", lambda p: mha_claim(p, (1000,) * 3, compressed=False), SHORT),
    ("a.mha", lambda p: mha_claim(p, (1000,) * 3, compressed=True), CLAIM),
])
def test_a_header_claiming_more_than_its_file_holds_is_refused_before_reading(tmp_path, no_voxel_read, name, make,
                                                                              expected):
    make(tmp_path / name)
    with pytest.raises(InputError) as error:
        read_image(str(tmp_path / name), "iUS (fixed) image", fixed=True)
    size = os.path.getsize(tmp_path / name)
    present = 0 if name == "a.nii" else 42  # after the header: none, or the 42 bytes mha_claim appends
    assert str(error.value).startswith(f"{name}: " + expected.format(size=size, present=present)), str(error.value)


def test_a_consistent_header_larger_than_the_memory_limit_is_refused(tmp_path, no_voxel_read, monkeypatch):
    make_case(tmp_path, "0001", modalities=(1,))
    voxels = int(np.prod(plain_grid().shape))  # float32 on file: the file's copy and the float32 copy
    monkeypatch.setattr(images, "memory_limit_bytes", lambda: 100_000)
    with pytest.raises(InputError) as error:
        read_image(str(tmp_path / "ReMIND2Reg_0001_0000.nii.gz"), "iUS (fixed) image", fixed=True)
    assert str(error.value) == (f"ReMIND2Reg_0001_0000.nii.gz: iUS (fixed) image needs about {8 * voxels / 1e6:.3g} MB"
                                " of memory to read, more than the 0.1 MB this container may use")
    monkeypatch.undo()  # the same file, with the machine's memory, is read
    image = read_image(str(tmp_path / "ReMIND2Reg_0001_0000.nii.gz"), "iUS", fixed=True)
    assert image.array.shape == plain_grid().shape


def test_a_refused_header_fails_its_case_alone(tmp_path, capsys):
    make_case(tmp_path / "in", "0001", modalities=(1,))
    make_case(tmp_path / "in", "0002", modalities=(1,))
    nifti_claim(tmp_path / "in" / "ReMIND2Reg_0002_0000.nii.gz", (1000,) * 3, gz=True)
    code, text, err = run(tmp_path, capsys)
    assert code == 1 and outputs(tmp_path / "out") == [CET1]
    assert "FAILED case 0002: ReMIND2Reg_0002_0000.nii.gz: iUS (fixed) image header claims 1000x1000x1000" in err


@pytest.mark.parametrize("layout", ["v2", "v1"])
def test_memory_limit_is_the_cgroups_then_the_machines(tmp_path, layout):
    physical = images.physical_memory_bytes()
    limit = min(physical // 2, 2**30)
    if layout == "v2":  # the container's own cgroup (namespaced root), or a nested path on a host
        (tmp_path / "root" / "job" / "step").mkdir(parents=True)
        (tmp_path / "root" / "memory.max").write_text("max\n")
        (tmp_path / "root" / "job" / "step" / "memory.max").write_text(f"{limit}\n")
        (tmp_path / "self").write_text("0::/job/step\n")
    else:  # v1: 'unlimited' is a huge number at the root, the real limit on the process's own group
        (tmp_path / "root" / "memory" / "docker" / "abc").mkdir(parents=True)
        (tmp_path / "root" / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
        (tmp_path / "root" / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (tmp_path / "self").write_text("5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n")
    assert images.memory_limit_bytes(str(tmp_path / "root"), str(tmp_path / "self")) == limit
    (tmp_path / "empty").mkdir()
    assert images.memory_limit_bytes(str(tmp_path / "empty"), str(tmp_path / "none")) == physical


# ---------------------------------------------------------------- rows 6 and 10c: a rerun's leftovers
def test_a_rerun_removes_fields_of_pairs_it_no_longer_has(tmp_path, capsys):
    make_case(tmp_path / "in", "0001", modalities=(1, 2))
    make_case(tmp_path / "in", "0002", modalities=(1,))
    assert run(tmp_path, capsys, sequences="all")[0] == 0
    assert outputs(tmp_path / "out") == [CET1, T2, "disp_0002_0000_0002_0001.nii.gz"]
    for name in os.listdir(tmp_path / "in"):
        if name.startswith("ReMIND2Reg_0002") or name.endswith("_0002.nii.gz"):
            os.remove(tmp_path / "in" / name)  # case 0002 gone, case 0001 without its T2
    code, text, err = run(tmp_path, capsys, sequences="all")
    assert code == 0 and outputs(tmp_path / "out") == [CET1]
    for name in (T2, "disp_0002_0000_0002_0001.nii.gz"):
        assert any(f"removed {name} left by an earlier run" in line for line in warnings(err)), (name, err)
    assert sorted(json.loads((tmp_path / "out" / "timings.json").read_text())["pairs"]) == [cv.pair_key("0001", 1)]


def test_a_rerun_that_writes_nothing_leaves_no_old_timings(tmp_path, capsys):
    make_case(tmp_path / "in", "0001", modalities=(1,))
    assert run(tmp_path, capsys)[0] == 0 and os.path.isfile(tmp_path / "out" / "timings.json")
    write(tmp_path / "in" / "ReMIND2Reg_0001_0000.nii.gz", np.zeros(plain_grid().shape), plain_grid())
    code, text, err = run(tmp_path, capsys)
    assert code == 1 and sorted(os.listdir(tmp_path / "out")) == []
    assert any("removed timings.json left by an earlier run" in line for line in warnings(err)), err


def test_a_rerun_with_timings_off_leaves_no_old_timings(tmp_path, capsys):
    make_case(tmp_path / "in", "0001", modalities=(1,))
    assert run(tmp_path, capsys)[0] == 0
    code, text, err = run(tmp_path, capsys, write_timings=False)
    assert code == 0 and sorted(os.listdir(tmp_path / "out")) == [CET1]
    assert any("removed timings.json left by an earlier run" in line for line in warnings(err)), err


def test_partial_files_left_by_a_killed_run_are_removed(tmp_path, capsys):
    """SIGKILL leaves mkstemp's file, 0 bytes or half written; the next run that writes that name removes it."""
    make_case(tmp_path / "in", "0001", modalities=(1,))
    (tmp_path / "out").mkdir()
    left = [f".partial-4242-k1ll3d_x-{CET1}", ".partial-4242-abc123-timings.json"]
    (tmp_path / "out" / left[0]).write_bytes(b"")
    (tmp_path / "out" / left[1]).write_bytes(b'{"pai')
    code, text, err = run(tmp_path, capsys)
    assert code == 0 and partials(tmp_path / "out") == [] and outputs(tmp_path / "out") == [CET1]
    for name in left:
        assert any(f"removed {name} left by an earlier run" in line for line in warnings(err)), (name, err)
    # the Grand Challenge layout's one output socket
    make_gc_input(tmp_path / "gc", tmp_path / "in", modalities=(0, 1))
    folder = tmp_path / "gc_out" / "images" / gc.SLUG_DISPLACEMENT
    folder.mkdir(parents=True)
    (folder / f".partial-77-zz9-{gc.OUTPUT_FILENAME}").write_bytes(b"")
    assert run(tmp_path, capsys, folder="gc", out="gc_out")[0] == 0
    assert os.listdir(folder) == [gc.OUTPUT_FILENAME]


def test_a_rerun_keeps_other_sequences_with_a_warning(tmp_path, capsys):
    make_case(tmp_path / "in", "0001", modalities=(1, 2))
    assert run(tmp_path, capsys, sequences="all")[0] == 0
    (tmp_path / "out" / f".partial-9-abc-{T2}").write_bytes(b"")
    code, text, err = run(tmp_path, capsys, sequences="ceT1")
    assert code == 0 and outputs(tmp_path / "out") == [CET1, T2]
    kept = [line for line in warnings(err) if "kept" in line]
    assert len(kept) == 1 and T2 in kept[0] and f".partial-9-abc-{T2}" in kept[0] and "ceT1" in kept[0], err


def test_a_shard_removes_only_what_it_answers_for(tmp_path, capsys):
    cases = ["0001", "0002", "0003", "0004"]
    for case in cases:
        make_case(tmp_path / "in", case, modalities=(1,))
    for k in (0, 1):
        assert run(tmp_path, capsys, shard=f"{k}/2")[0] == 0
    out = tmp_path / "out"
    fields = outputs(out)
    assert len(fields) == 4 and sorted(n for n in os.listdir(out) if n.startswith("timings")) == \
        ["timings.0-of-2.json", "timings.1-of-2.json"]
    # an earlier unsharded run's timings and a case since taken out of the input; shard 1's leftovers
    shutil.copy(out / "timings.0-of-2.json", out / "timings.json")
    shutil.copy(out / fields[0], out / "disp_0009_0000_0009_0001.nii.gz")
    (out / ".partial-5-q-disp_0002_0000_0002_0001.nii.gz").write_bytes(b"")  # shard 1's case (0002)
    (out / ".partial-5-q-disp_0003_0000_0003_0001.nii.gz").write_bytes(b"")  # shard 0's case (0003)
    os.remove(tmp_path / "in" / "ReMIND2Reg_0003_0000.nii.gz")  # shard 0's case 0003 now fails
    code, text, err = run(tmp_path, capsys, shard="0/2")
    assert code == 1
    assert outputs(out) == sorted(f"disp_{c}_0000_{c}_0001.nii.gz" for c in ("0001", "0002", "0004", "0009"))
    assert sorted(n for n in os.listdir(out) if not n.startswith("disp_")) == [
        ".partial-5-q-disp_0002_0000_0002_0001.nii.gz", "timings.0-of-2.json", "timings.1-of-2.json", "timings.json"]
    kept = " ".join(line for line in warnings(err) if "kept" in line)
    assert "disp_0009_0000_0009_0001.nii.gz" in kept and "timings.json" in kept, err
    assert "0002" not in kept and "timings.1-of-2.json" not in kept, err  # the other shard's, as expected
    # the unsharded run answers for every case: the absent case's field goes, the shards' timings are named
    code, text, err = run(tmp_path, capsys)
    assert "disp_0009_0000_0009_0001.nii.gz" not in outputs(out)
    kept = " ".join(line for line in warnings(err) if "kept" in line)
    assert "timings.0-of-2.json" in kept and "timings.1-of-2.json" in kept, err


# ---------------------------------------------------------------- row 7: sockets confined to the input folder
@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_a_socket_outside_the_input_folder_is_refused(tmp_path, capsys, where):
    make_case(tmp_path / "org", "0001", modalities=(1,))
    make_gc_input(tmp_path / "gc", tmp_path / "org", modalities=(0, 1))
    entries = json.loads((tmp_path / "gc" / "inputs.json").read_text())
    outside = {"parent": "../../../../../../../../etc/passwd",
               "absolute": str(tmp_path / "org" / "ReMIND2Reg_0001_0000.nii.gz")}[where]  # a real image
    entries[0]["interface"]["relative_path"] = outside
    (tmp_path / "gc" / "inputs.json").write_text(json.dumps(entries))
    code, text, err = run(tmp_path, capsys, folder="gc")
    assert code == 1 and not os.path.exists(tmp_path / "out" / "images")
    last = err.strip().splitlines()[-1]
    assert f"socket '{gc.SLUG_IUS}': relative_path {outside!r} is outside the input folder" in last, last


def test_a_refused_job_leaves_no_field_of_an_earlier_job(tmp_path, capsys):
    make_case(tmp_path / "org", "0001", modalities=(1,))
    make_gc_input(tmp_path / "gc", tmp_path / "org", modalities=(0, 1))
    assert run(tmp_path, capsys, folder="gc")[0] == 0
    field = tmp_path / "out" / "images" / gc.SLUG_DISPLACEMENT / gc.OUTPUT_FILENAME
    assert field.is_file()
    entries = json.loads((tmp_path / "gc" / "inputs.json").read_text())
    entries[0]["interface"]["relative_path"] = "../elsewhere"
    (tmp_path / "gc" / "inputs.json").write_text(json.dumps(entries))
    code, text, err = run(tmp_path, capsys, folder="gc")
    assert code == 1 and not field.exists(), err


def test_the_log_names_the_file_each_socket_read(tmp_path, capsys):
    make_case(tmp_path / "org", "0001", modalities=(1,))
    make_gc_input(tmp_path / "gc", tmp_path / "org", modalities=(0, 1))
    code, text, err = run(tmp_path, capsys, folder="gc")
    assert code == 0
    for m in (0, 1):
        assert f"images/{gc.INPUT_SLUGS[m]}/uuid-{m}.mha" in text, text


# ---------------------------------------------------------------- row 8: case ids in ASCII digits
def test_full_width_digits_are_not_a_case_id(tmp_path, capsys):
    make_case(tmp_path / "in", "0001", modalities=(1,))
    wide = "\uff10\uff10\uff12\uff15"  # full-width 0025: re's \d matches it
    for m in (0, 1):
        shutil.copy(tmp_path / "in" / cv.image_name("0001", m), tmp_path / "in" / cv.image_name(wide, m))
    code, text, err = run(tmp_path, capsys)
    assert code == 0 and outputs(tmp_path / "out") == [CET1]
    assert "organisers' layout: 1 case(s)" in text, text
    near = [line for line in warnings(err) if "not read" in line]
    assert len(near) == 1 and cv.image_name(wide, 0) in near[0] and "ASCII" in near[0], err


def test_full_width_digits_are_no_shard_and_no_duration():
    from evaluation.layouts import parse_iso_duration
    from runner import shards

    with pytest.raises(shards.ShardError, match="is not a whole number"):
        shards.parse("\uff11/\uff14")  # int() reads full-width digits as 1/4
    assert shards.parse(" 1/4 ") == (1, 4) and shards.parse("+1/4") == (1, 4)
    assert parse_iso_duration("PT\uff11\uff12S") is None and parse_iso_duration("PT12S") == 12.0


# ---------------------------------------------------------------- row 10: messages
def test_an_empty_input_folder_says_no_case_was_found(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    code, text, err = run(tmp_path, capsys)
    last = err.strip().splitlines()[-1]
    assert code == 1 and "not started" not in last, last
    assert last.startswith(f"ERROR: run failed: no case found in {tmp_path / 'in'} (expected "
                           "ReMIND2Reg_XXXX_0000.nii.gz"), last


def test_an_empty_input_folder_removes_nothing_of_an_earlier_run(tmp_path, capsys):
    """No case at all is more likely a wrong mount than an input without cases: nothing is removed, all named."""
    make_case(tmp_path / "in", "0001", modalities=(1,))
    assert run(tmp_path, capsys)[0] == 0
    (tmp_path / "empty").mkdir()
    code, text, err = run(tmp_path, capsys, folder="empty")
    assert code == 1 and sorted(os.listdir(tmp_path / "out")) == [CET1, "timings.json"]
    kept = [line for line in warnings(err) if "kept" in line]
    assert len(kept) == 1 and CET1 in kept[0] and "timings.json" in kept[0] and "no case" in kept[0], err


def test_an_unreadable_files_itk_text_keeps_its_words(tmp_path):
    (tmp_path / "ReMIND2Reg_0001_0000.nii.gz").write_bytes(b"not an image at all")
    with pytest.raises(InputError) as error:
        read_image(str(tmp_path / "ReMIND2Reg_0001_0000.nii.gz"), "iUS (fixed) image", fixed=True)
    reason = str(error.value).split("corrupt header: ", 1)[1]
    assert reason.startswith("Unable to determine ImageIO reader for "), reason  # ITK's reason, whole
    assert "Exception thrown" not in reason and ".cxx" not in reason, reason
