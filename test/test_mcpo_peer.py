"""The 2025 winner as a benchmark peer (benchmarks/mcpo_peer.py): patcher, source errors, output conversion.

No network and no MCPO source needed. With $REMIND2REG_MCPO_SOURCE set (a clone or bare git dir of
github.com/wjiazheng/MCPO), two real runs: the smallest grid its code accepts, and the hand-computed shift proof
(moving = fixed moved by known whole voxels; the written field scored by the project's evaluation).
"""
import json
import os
import subprocess

import numpy as np
import pytest

from benchmarks import mcpo_peer as mp

REAL_SOURCE = os.environ.get(mp.SOURCE_ENV)
needs_source = pytest.mark.skipif(not REAL_SOURCE, reason=f"${mp.SOURCE_ENV} not set (real MCPO run)")


def synthetic_source() -> str:
    """A tiny module with exactly the published counts of every patched pattern, runnable on a CPU."""
    lines = ["import torch, warnings", "import torch.nn.functional as F", 'warnings.filterwarnings("ignore")',
             "mind_d = 2", "def MINDSSC(x, r, d):", "    return torch.ones(2)", "out = {}"]
    lines += [f"out['dev_half_{n}'] = torch.ones(2).cuda().half()" for n in range(9)]
    lines += [f"out['dev_{n}'] = torch.ones(2).cuda()" for n in range(69)]
    lines += ["out['module'] = torch.nn.Linear(2, 2).cuda()"]  # an nn.Module moved the same way
    lines += [f"out['mind_{n}'] = MINDSSC(torch.ones(2), 1, mind_d).half()" for n in range(4)]
    lines += [f"out['result_{n}'] = torch.ones(2).cpu().half()" for n in range(6)]
    # pooling of what it stores in fp16 (here: the MIND features' dtype), as its cost aggregation does
    lines += [f"out['pool_{n}'] = F.avg_pool3d(torch.ones(1, 1, 2, 2, 2).to(out['mind_0'].dtype), 2)" for n in range(30)]
    lines += ["out['adam'] = torch.ones(2, device='cuda' if torch.cuda.is_available() else 'cpu')",
              "out['sparse'] = torch.ones(2, device='cuda:0')",
              "torch.cuda.synchronize()", "torch.cuda.synchronize()",
              "torch.cuda.empty_cache()", "torch.cuda.empty_cache()", "torch.cuda.empty_cache()",
              'if __name__ == "__main__":', '    raise SystemExit("its __main__ ran")']
    return "\n".join(lines) + "\n"


def test_cpu_patch_counts_device_and_precision():
    import torch

    text = synthetic_source()
    patched = mp.patch_for_device(text, "cpu")
    assert "cuda" not in patched and patched.count(".half()") == 6 == patched.count(".cpu().half()")
    assert patched.count(".to(__mcpo_device__, __mcpo_dtype__)") == 9
    assert patched.count(".to(__mcpo_device__)") == 70
    assert patched.count("mind_d).to(__mcpo_dtype__)") == 4
    assert patched.count("__mcpo_empty_cache__()") == 3 and patched.count("__mcpo_synchronize__()") == 2
    assert patched.count("__mcpo_avg_pool3d__(") == 30 and "F.avg_pool3d(" not in patched
    module = mp.load_module(text.encode(), "cpu")  # executed, not as __main__
    assert module.__mcpo_avg_pool3d__ is torch.nn.functional.avg_pool3d  # fp32: its own pooling, same bytes
    out = module.out
    for key, value in out.items():
        if key == "module":
            assert value.weight.device.type == "cpu"
            continue
        assert value.device.type == "cpu", key
        # fp16 compute became fp32; the returned field's fp16 rounding is kept as published
        assert value.dtype == (torch.float16 if key.startswith("result_") else torch.float32), key
    assert module.__name__ == "mcpo_p4_6543"


def test_cpu_fp16_keeps_its_storage_and_pools_through_fp32():
    import torch

    module = mp.load_module(synthetic_source().encode(), "cpu", "fp16")
    out = module.out
    for key, value in out.items():
        if key.startswith(("dev_half_", "mind_", "result_", "pool_")):  # what it stores in fp16 on its GPU
            assert value.device.type == "cpu" and value.dtype == torch.float16, key
        elif key != "module":
            assert value.device.type == "cpu" and value.dtype == torch.float32, key
    assert torch.equal(out["pool_0"], torch.ones(1, 1, 1, 1, 1, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="Half"):  # why the shim exists: no fp16 avg_pool3d on the CPU
        torch.nn.functional.avg_pool3d(torch.ones(1, 1, 2, 2, 2, dtype=torch.float16), 2)
    x = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    assert mp.avg_pool3d_any_precision(x, 2).item() == 3.5  # fp32 input: F.avg_pool3d itself


def test_precision_choice(monkeypatch):
    monkeypatch.delenv(mp.PRECISION_ENV, raising=False)
    assert mp._precision(None, "cpu") == "fp32" and mp._precision("fp16", "cpu") == "fp16"
    assert mp._precision(None, "cuda") == "fp16" and mp._precision("FP16", "cuda") == "fp16"
    with pytest.raises(mp.McpoError, match="fp32 applies to the CPU only"):
        mp._precision("fp32", "cuda")
    with pytest.raises(mp.McpoError, match="use fp32 or fp16"):
        mp._precision("bf16", "cpu")
    monkeypatch.setenv(mp.PRECISION_ENV, "fp16")
    assert mp._precision(None, "cpu") == "fp16" and mp._precision("fp32", "cpu") == "fp32"  # the option wins


def test_load_module_keeps_its_warning_filter_inside():
    import warnings

    before = list(warnings.filters)
    mp.load_module(synthetic_source().encode(), "cpu")
    assert warnings.filters == before  # its module-level filterwarnings("ignore") did not leak into ours


def test_patch_fails_loudly_when_upstream_changes():
    text = synthetic_source().replace("torch.ones(2).cuda()\n", "torch.ones(2)\n", 1)  # one .cuda() fewer
    with pytest.raises(AssertionError, match=r"'\.cuda\(\)' found 69 times, expected 70"):
        mp.patch_for_device(text, "cpu")
    with pytest.raises(AssertionError, match="found 0 times, expected 2"):
        mp.patch_source("x = 1\n", [("y", "z", 2)])


def test_patch_source_in_order_and_counted():
    assert mp.patch_source("a.cuda().half(); b.cuda()", [(".cuda().half()", ".H()", 1), (".cuda()", ".C()", 1)]) \
        == "a.H(); b.C()"


def test_cuda_runs_the_published_text():
    text = synthetic_source()
    assert mp.patch_for_device(text, "cuda") == text


def test_missing_source_is_one_clear_line(tmp_path):
    with pytest.raises(mp.McpoSourceError) as info:
        mp.get_source(str(tmp_path / "no-clone-here"))
    message = str(info.value)
    assert "does not exist" in message and "\n" not in message and mp.SOURCE_ENV in message


def test_source_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(mp.SOURCE_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(mp.McpoSourceError, match="elsewhere does not exist"):
        mp.get_source()


def test_no_network_says_so_and_leaves_no_half_clone(tmp_path):
    cache = tmp_path / "cache" / "mcpo"
    with pytest.raises(mp.McpoSourceError) as info:
        mp.clone_source(str(cache), url=str(tmp_path / "unreachable-remote"))
    message = str(info.value)
    assert "git clone" in message and "no network?" in message and "\n" not in message
    assert not cache.exists() and os.listdir(tmp_path / "cache") == []


def test_wrong_content_is_refused(tmp_path):
    (tmp_path / mp.MCPO_FILE).write_text("print('not the winner')\n")
    with pytest.raises(mp.McpoSourceError, match="differs from the pinned"):
        mp.read_local_source(str(tmp_path))
    with pytest.raises(mp.McpoSourceError, match="differs from the pinned"):
        mp.read_local_source(str(tmp_path / mp.MCPO_FILE))


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                            GIT_COMMITTER_EMAIL="t@t"))


def test_clone_bare_dir_and_cache_at_the_pinned_commit(tmp_path):
    import hashlib

    repo = tmp_path / "upstream"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    (repo / mp.MCPO_FILE).write_bytes(b"pinned = 1\n")
    _git("add", mp.MCPO_FILE, cwd=repo)
    _git("commit", "-q", "-m", "pinned", cwd=repo)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    (repo / mp.MCPO_FILE).write_bytes(b"pinned = 2\n")  # a later upstream commit
    _git("commit", "-q", "-am", "later", cwd=repo)
    sha = hashlib.sha256(b"pinned = 1\n").hexdigest()
    bare = tmp_path / "bare.git"
    _git("clone", "-q", "--bare", str(repo), str(bare), cwd=tmp_path)
    for local in (repo, bare):  # the blob at the pinned commit, not the work tree's newer file
        assert mp.read_local_source(str(local), commit, sha) == b"pinned = 1\n"
    cache = tmp_path / "cache" / "mcpo"
    assert mp.clone_source(str(cache), url=str(repo), commit=commit, sha256=sha) == b"pinned = 1\n"
    assert (cache / mp.MCPO_FILE).read_bytes() == b"pinned = 1\n"  # checked out at the pinned commit
    assert mp.clone_source(str(cache), url=str(tmp_path / "gone"), commit=commit, sha256=sha) == b"pinned = 1\n"
    with pytest.raises(mp.McpoSourceError, match="differs from the pinned"):
        mp.read_local_source(str(repo), commit, hashlib.sha256(b"other").hexdigest())


def test_peers_command_refuses_missing_source_before_any_case(tmp_path, capsys):
    from benchmarks import peers

    code = peers.main(["mcpo", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                       "--mcpo-source", str(tmp_path / "missing")])
    assert code == 2 and not (tmp_path / "out").exists()
    assert "does not exist" in capsys.readouterr().err.strip().splitlines()[-1]
    assert peers.PEERS["mcpo"] is mp.Mcpo


def test_mcpo_options_refused_for_other_peers(tmp_path, capsys):
    from benchmarks import peers

    with pytest.raises(SystemExit) as exit_info:
        peers.main(["identity", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                    "--mcpo-precision", "fp16"])
    assert exit_info.value.code == 2 and "apply only to the mcpo peer" in capsys.readouterr().err


def test_conversion_of_a_hand_computed_field():
    # what MCPO returns for a fixed grid of 4 x 6 x 8: float64, channel-last, voxels along array axes
    shape = (4, 6, 8)
    i, j, k = np.indices(shape, dtype=np.float64)
    returned = np.stack([4.0 + 0 * i, -0.5 * j, 0.25 * k], axis=-1)  # u0 = +4, u1 = -j/2, u2 = +k/4
    field = mp.to_voxel_field(returned, shape)
    assert field.dtype == np.float32 and field.shape == shape + (3,)
    assert field[3, 5, 7].tolist() == [4.0, -2.5, 1.75] and field[0, 0, 0].tolist() == [4.0, 0.0, 0.0]
    # the evaluation reads it as x -> x + u(x): a landmark moved +4 along axis 0 is matched exactly
    from evaluation.metrics import tre

    p_fix = np.array([[1.0, 0.0, 0.0]])
    assert tre(p_fix, p_fix + [4.0, 0.0, 0.0], field, (0.5, 0.5, 0.5))[0] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="channel-last"):
        mp.to_voxel_field(np.moveaxis(returned, -1, 0), shape)
    bad = returned.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mp.to_voxel_field(bad, shape)


def test_cpu_memory_warning_names_need_and_what_is_available():
    warning = mp.cpu_memory_warning((256, 256, 256), 20e9)
    assert "about 24 GB for a 256x256x256 grid" in warning and "20 GB is available" in warning
    assert "--mcpo-device cuda" in warning
    assert mp.cpu_memory_warning((256, 256, 256), 30e9) is None
    assert mp.cpu_memory_warning((96, 96, 96), 20e9) is None  # about 1.3 GB
    assert mp.cpu_memory_warning((256, 256, 256), None) is None  # unknown: no guess
    assert "--mcpo-precision fp16" in warning
    assert mp.cpu_memory_warning((256, 256, 256), 20e9, "fp16") is None  # about 18 GB
    half = mp.cpu_memory_warning((256, 256, 256), 10e9, "fp16")
    assert "(fp16) may need about 18 GB" in half and "--mcpo-precision" not in half
    available = mp.available_memory_bytes()
    assert available is None or available > 0


def test_grid_sizes_it_accepts():
    for shape in ((18, 18, 18), (18, 40, 26), (60, 60, 60), (256, 256, 256)):
        mp.check_grid(shape)
    for shape in ((16, 40, 40), (17, 18, 18), (94, 107, 107), (255, 256, 256)):
        with pytest.raises(ValueError, match="even and at least 18"):
            mp.check_grid(shape)


# ---- real runs: only with the MCPO source ($REMIND2REG_MCPO_SOURCE) -------------------------------------------

def write_shifted_dataset(root, shape, shifts, spacing=0.5, seed=0, n_landmarks=12):
    """Organisers' layout where each moving image is its fixed image moved by a whole-voxel vector, so fixed
    voxel x corresponds to moving location x + shift: the true field is u = shift everywhere in the fan.
    `shifts`: {(case, modality): (s0, s1, s2)}. Returns the dataset folder (imagesTr/ is the flat input)."""
    import nibabel as nib
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    pad = max(abs(int(v)) for vec in shifts.values() for v in vec) + 1
    big = tuple(n + 2 * pad for n in shape)
    c, s = np.cos(0.3), np.sin(0.3)  # an oblique affine: the evaluation ignores it, the field is in voxels
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) * spacing
    images, marks = os.path.join(root, "imagesTr"), os.path.join(root, "landmarksTr")
    os.makedirs(images), os.makedirs(marks)
    pairs = []
    for case in sorted({case for case, _ in shifts}):
        texture = gaussian_filter(rng.standard_normal(big), 1.5)
        texture = 1 + 100 * (texture - texture.min()) / (texture.max() - texture.min())
        centre = pad + (np.asarray(shape) - 1) / 2
        radius = 0.42 * min(shape)
        ball = ((np.indices(big) - centre.reshape(3, 1, 1, 1)) ** 2).sum(0) <= radius ** 2
        content = (texture * ball).astype(np.float32)  # 0 outside the "fan", as the iUS is

        def window(offset):  # window(s)[y] = content[y + pad - s]: fixed content at x shows at x + s
            return content[tuple(slice(pad - o, pad - o + n) for o, n in zip(offset, shape))]

        nib.save(nib.Nifti1Image(window((0, 0, 0)), affine), os.path.join(images, f"ReMIND2Reg_{case}_0000.nii.gz"))
        direction = rng.standard_normal((n_landmarks, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        fixed_points = (centre - pad) + direction * rng.uniform(0, 0.5 * radius, (n_landmarks, 1))
        np.savetxt(os.path.join(marks, f"ReMIND2Reg_{case}_0000.csv"), fixed_points, delimiter=",")
        for (other, modality), shift in sorted(shifts.items()):
            if other != case:
                continue
            name = f"ReMIND2Reg_{case}_000{modality}"
            nib.save(nib.Nifti1Image(window(shift), affine), os.path.join(images, name + ".nii.gz"))
            np.savetxt(os.path.join(marks, name + ".csv"), fixed_points + np.asarray(shift, float), delimiter=",")
            pairs.append({"fixed": f"./imagesTr/ReMIND2Reg_{case}_0000.nii.gz", "moving": f"./imagesTr/{name}.nii.gz"})
    with open(os.path.join(root, "ReMIND2Reg_dataset.json"), "w") as handle:
        json.dump({"eval_pairs": pairs}, handle)
    return root


def run_and_score(tmp_path, shape, shifts, spacing=0.5, precision="fp32"):
    """The peer through `python -m benchmarks.peers mcpo` (in process), then the project's evaluation."""
    from benchmarks import peers
    from evaluation import evaluate

    data = write_shifted_dataset(str(tmp_path / "data"), shape, shifts, spacing=spacing)
    out = str(tmp_path / "out")
    assert peers.main(["mcpo", "--input", os.path.join(data, "imagesTr"), "--output", out,
                       "--mcpo-device", "cpu", "--mcpo-precision", precision]) == 0
    assert evaluate.run(out, data, str(tmp_path / "metrics.json"), quiet=True) == 0
    with open(tmp_path / "metrics.json") as handle:
        return out, json.load(handle)["cases"]


def _field(out, case, modality):
    import nibabel as nib

    return np.asarray(nib.load(os.path.join(out, f"disp_{case}_0000_{case}_000{modality}.nii.gz")).dataobj)


def assert_shift_found(field, shift, centre):
    """The field's median over the centre has the one-axis shift's axis, sign and size (35 %), little elsewhere."""
    median = np.median(field[centre].reshape(-1, 3), axis=0)
    axis = int(np.flatnonzero(shift)[0])
    assert abs(median[axis] / shift[axis] - 1) < 0.35
    assert np.abs(np.delete(median, axis)).max() < 0.5


def _image(tmp_path, case, modality):
    import nibabel as nib

    path = tmp_path / "data" / "imagesTr" / f"ReMIND2Reg_{case}_000{modality}.nii.gz"
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)


@needs_source
def test_real_mcpo_on_the_smallest_grid(tmp_path):
    shape = (18, 18, 18)  # 1.5 mm voxels: the project's input gate wants a fan of at least 1 cm^3
    out, _ = run_and_score(tmp_path, shape, {("0001", 1): (2, 0, 0)}, spacing=1.5)
    field = _field(out, "0001", 1)
    assert field.shape == shape + (3,) and np.isfinite(field).all()
    assert np.median(field[6:12, 6:12, 6:12, 0]) > 1.0  # the right axis and sign, even this small


@needs_source
def test_real_mcpo_shift_proof(tmp_path):
    # ceT1: content moved +4 voxels along axis 0; T2: -3 voxels along axis 2 (0.5 mm voxels)
    shifts = {("0001", 1): (4, 0, 0), ("0001", 2): (0, 0, -3)}
    n = 60
    out, cases = run_and_score(tmp_path, (n, n, n), shifts)
    import torch

    from interfaces.conventions import warp_with_voxel_field

    its_warp = mp.load_module(mp.get_source(), "cpu").registerSTModel([n, n, n], "bilinear")
    centre = (slice(15, 45),) * 3
    for (case, modality), shift in shifts.items():
        scores = cases[f"{case}_0000<--{case}_000{modality}"]
        assert scores["TRE_initial"]["mean"] == pytest.approx(0.5 * np.abs(shift).sum(), abs=1e-6)
        assert scores["TRE_lm"]["mean"] < 0.25 * scores["TRE_initial"]["mean"]  # right sign, axis, magnitude
        field = _field(out, case, modality)
        assert_shift_found(field, shift, centre)
        # the written field means to us what it means to MCPO: its own warp (moving sampled at grid + flow)
        # equals ours (moving at x + u(x), interfaces.conventions) inside the grid
        moving = _image(tmp_path, case, modality)
        theirs = its_warp(torch.from_numpy(moving)[None, None],
                          torch.from_numpy(np.ascontiguousarray(np.moveaxis(field, -1, 0)))[None])[0, 0].numpy()
        assert np.abs(theirs - warp_with_voxel_field(moving, field))[centre].max() < 1e-3


@needs_source
def test_real_mcpo_fp16_on_the_cpu(tmp_path):
    # its GPU storage precision on the CPU (about 0.6 x the memory): the same shift found, right axis and sign
    shifts = {("0001", 2): (0, 0, -3)}
    out, cases = run_and_score(tmp_path, (60, 60, 60), shifts, precision="fp16")
    scores = cases["0001_0000<--0001_0002"]
    assert scores["TRE_lm"]["mean"] < 0.25 * scores["TRE_initial"]["mean"]
    assert_shift_found(_field(out, "0001", 2), shifts[("0001", 2)], (slice(15, 45),) * 3)
