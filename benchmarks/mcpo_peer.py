"""The ReMIND2Reg 2025 winner (MCPO, team next-gen-nn) as a benchmark peer, run from its own published code.

    python -m benchmarks.peers mcpo --input IN --output OUT [--mcpo-source PATH] [--mcpo-device cpu|cuda]
                                    [--mcpo-precision fp32|fp16]

Its code is never copied into this project. At benchmark run time this module gets the one script
`MCPO_p4_6543.py` of github.com/wjiazheng/MCPO at the pinned commit (from `--mcpo-source` /
$REMIND2REG_MCPO_SOURCE: a local clone, a bare git dir or the file itself; else a `git clone` into
~/.cache/remind2reg/mcpo), checks its sha256, patches it in memory (CPU only: device, and precision fp32 by
default or its own fp16 with `--mcpo-precision fp16`; each textual replacement counted), executes it as a module
(not "__main__") and calls it the way its own __main__ does for one pair: `convex_adam_pt_nofu(...)` then
`global_block_adam_nofu(...)` with the __main__ defaults.

What it returns is already the organisers' voxel field (docs/CONVENTIONS.md §3): its __main__ writes the array straight
into `disp_XXXX_0000_XXXX_000M.nii.gz`. Channel c = displacement along array axis c of the nibabel-loaded volume
(its images come from `nib.load(...).get_fdata()`, the same (i, j, k) order as ours), in voxels of the fixed grid,
fixed voxel x -> moving location x + u(x) (its warp samples moving at grid + flow, `SpatialTransformer`).
`to_voxel_field` only checks and casts it (float64 of fp16-rounded values -> float32); the hand-computed shift
check in docs/BENCHMARKS.md ("The 2025 winner as a peer") proves sign, axis and magnitude end to end.

Benchmark only: nothing here is imported by process.py or copied into the algorithm container.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import linecache
import os
import random
import shutil
import subprocess
import tempfile
import time
import types
import warnings

import numpy as np

from benchmarks.peer_result import PeerResult

MCPO_URL = "https://github.com/wjiazheng/MCPO"
MCPO_COMMIT = "2ed7ea3ea4900d32ef943aec82fb58fc804da81b"  # HEAD of github.com/wjiazheng/MCPO, 2026-02-19
MCPO_FILE = "MCPO_p4_6543.py"
MCPO_SHA256 = "76bae51508448f3ddb05d80df29e95f4805e8bdd2e0cd0fc1f2c2ef7a467990b"  # of MCPO_FILE at MCPO_COMMIT
SOURCE_ENV = "REMIND2REG_MCPO_SOURCE"
DEVICE_ENV = "REMIND2REG_MCPO_DEVICE"
PRECISION_ENV = "REMIND2REG_MCPO_PRECISION"
SEED = 0  # its Adam stage samples 200 blocks at random per iteration (torch.randperm)

# the arguments of its __main__ (argparse defaults), which is how the published container ran every pair
MAIN_DEFAULTS = dict(mind_r=3, mind_d=3, lambda_weight=1.25, grid_sp=6, disp_hw=6, selected_niter=20,
                     selected_smooth=5, grid_sp_adam=2, ic=True, use_mask=True)
# Grid sizes it runs on (measured with torch 2.13 on every size 6..40 and mixed shapes, docs/BENCHMARKS.md):
# every axis even (its inpainting samples every 2nd voxel, rebuilds the image with scale_factor=2 and indexes
# with D//2, W//2: an odd axis raises an IndexError) and at least 18 voxels (its coarsest level pools by 6 and
# box-filters that n // 6 grid with a 3-voxel kernel: n // 6 < 3 raises "smaller than kernel size").
# Sizes its pooling grids (6, 5, 4, 3, 2) do not divide still run, as the challenge's 256^3 did: it pools with
# floor and stretches the coarse field back over the whole grid, as published (the edge effect of
# docs/CONVENTIONS.md §5).
MIN_SIZE = 18
# Resident memory of a CPU run (the fp32 patch doubles its fp16 cost volumes): a 256^3 pair was killed by the
# OOM killer at 24.3 GB, before its first pair was written (2026-12-02, docs/HISTORY.md); a 96^3
# pair peaked at 2.4 GB. About 1.45 kB per voxel of the fixed grid at 256^3, the figure used for the warning.
CPU_BYTES_PER_VOXEL = 24.3e9 / 256 ** 3
# With --mcpo-precision fp16 (its features and cost volumes kept in fp16, as on its GPU): 256^3 pairs peaked at
# 17.3-17.6 GB (2026-12-02, fourth session, 4 pairs; 0.56-0.59 x fp32 at 128^3 and 192^3); the largest is the
# figure used for its warning.
CPU_BYTES_PER_VOXEL_FP16 = 17.6e9 / 256 ** 3

# In-memory patch for a CPU run, applied in this order; (old, new, expected count). A changed upstream file
# changes a count and fails loudly. The injected names are set in the module's namespace before it runs.
CPU_PATCHES = (
    ("'cuda' if torch.cuda.is_available() else 'cpu'", "__mcpo_device__", 1),  # the Adam stage's tensor device
    ("'cuda:0'", "__mcpo_device__", 1),                                        # sparse_sampling_prep
    ("torch.cuda.synchronize()", "__mcpo_synchronize__()", 2),                 # only in its __main__ (not run)
    ("torch.cuda.empty_cache()", "__mcpo_empty_cache__()", 3),
    (".cuda().half()", ".to(__mcpo_device__, __mcpo_dtype__)", 9),             # fp16 grids and scales -> fp32 (or fp16)
    (".cuda()", ".to(__mcpo_device__)", 70),                                   # tensors and nn.Modules alike
    ("mind_d).half()", "mind_d).to(__mcpo_dtype__)", 4),                       # MIND-SSC features fp16 -> fp32 (or fp16)
    ("F.avg_pool3d(", "__mcpo_avg_pool3d__(", 30),                             # fp32: F.avg_pool3d itself
)
# The CPU has no fp16 avg_pool3d kernel ("not implemented for 'Half'"); with --mcpo-precision fp16 it runs on an
# fp32 copy and is stored back in fp16 (a GPU's fp16 pooling also accumulates in fp32). Every other op it uses
# has an fp16 CPU kernel in torch 2.13.
PRECISIONS = ("fp32", "fp16")
# What stays after the CPU patch: the returned field's fp16 rounding `.cpu().half().data.numpy()` (a cast of the
# result on the CPU, as on every device in the published code, so CPU and GPU outputs are quantised alike).
KEPT_HALF = ".cpu().half()"
KEPT_HALF_COUNT = 6


class McpoError(RuntimeError):
    """The MCPO peer cannot be set up: a one-line reason."""


class McpoSourceError(McpoError):
    """The pinned MCPO source cannot be had (missing, wrong content, no network): a one-line reason."""


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _git(args: list[str], cwd: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true")  # never wait for credentials
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise McpoSourceError("cannot get the MCPO source: git is not installed") from None
    except subprocess.TimeoutExpired:
        raise McpoSourceError(f"cannot get the MCPO source: git {args[0]} took over {timeout:.0f} s "
                              "(no network?)") from None


def _is_git_dir(path: str) -> bool:
    return _git(["-C", path, "rev-parse", "--git-dir"]).returncode == 0


def _has_commit(path: str, commit: str) -> bool:
    return _git(["-C", path, "cat-file", "-e", f"{commit}^{{commit}}"]).returncode == 0


def _blob_at_commit(path: str, commit: str) -> bytes:
    done = _git(["-C", path, "show", f"{commit}:{MCPO_FILE}"])
    if done.returncode != 0:
        raise McpoSourceError(f"MCPO source {path}: no {MCPO_FILE} at commit {commit[:12]}: "
                              f"{_one_line(done.stderr.decode(errors='replace'))}")
    return done.stdout


def verified(data: bytes, where: str, sha256: str = MCPO_SHA256) -> bytes:
    """`data` if its sha256 is the pinned one, else McpoSourceError naming both."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise McpoSourceError(f"MCPO source {where}: {MCPO_FILE} sha256 {digest[:16]}... differs from the pinned "
                              f"{sha256[:16]}... (commit {MCPO_COMMIT[:12]}): refusing to run it")
    return data


def read_local_source(path: str, commit: str = MCPO_COMMIT, sha256: str = MCPO_SHA256) -> bytes:
    """The pinned script from a local path: the file itself, a clone or a bare git dir (the blob at `commit`
    when the repository has it, else its work-tree file), a plain folder holding the file. Checked by sha256."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            return verified(handle.read(), path, sha256)
    if not os.path.isdir(path):
        raise McpoSourceError(f"MCPO source {path} does not exist (--mcpo-source / ${SOURCE_ENV}: a clone of "
                              f"{MCPO_URL}, a bare git dir or {MCPO_FILE})")
    work_file = os.path.join(path, MCPO_FILE)
    if _is_git_dir(path) and _has_commit(path, commit):
        return verified(_blob_at_commit(path, commit), f"{path}@{commit[:12]}", sha256)
    if os.path.isfile(work_file):
        with open(work_file, "rb") as handle:
            return verified(handle.read(), work_file, sha256)
    raise McpoSourceError(f"MCPO source {path}: neither commit {commit[:12]} nor {MCPO_FILE} is there "
                          f"(run `git -C {path} fetch`, or point at another clone)")


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "remind2reg", "mcpo")


def clone_source(cache_dir: str | None = None, url: str = MCPO_URL, commit: str = MCPO_COMMIT,
                 sha256: str = MCPO_SHA256) -> bytes:
    """The pinned script from a clone in `cache_dir` (outside the project), cloned from `url` the first time
    and checked out at `commit`. No network: McpoSourceError saying so."""
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    if not (os.path.isdir(cache_dir) and _is_git_dir(cache_dir)):
        parent = os.path.dirname(cache_dir)
        os.makedirs(parent, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=".mcpo-clone-", dir=parent)
        try:
            done = _git(["clone", "--quiet", "--no-checkout", url, scratch], timeout=600)
            if done.returncode != 0:
                raise McpoSourceError(f"cannot get the MCPO source: git clone {url} failed (no network?): "
                                      f"{_one_line(done.stderr.decode(errors='replace'))}; set ${SOURCE_ENV} "
                                      "or --mcpo-source to a local clone")
            if os.path.isdir(cache_dir):  # an empty or broken leftover: the fresh clone replaces it
                shutil.rmtree(cache_dir)
            os.replace(scratch, cache_dir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if not _has_commit(cache_dir, commit):
        _git(["-C", cache_dir, "fetch", "--quiet", "origin"], timeout=600)
        if not _has_commit(cache_dir, commit):
            raise McpoSourceError(f"MCPO source {cache_dir}: the pinned commit {commit[:12]} is not in {url} "
                                  "(history rewritten? or no network to fetch it)")
    _git(["-C", cache_dir, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit])
    return verified(_blob_at_commit(cache_dir, commit), f"{cache_dir}@{commit[:12]}", sha256)


def get_source(source: str | None = None, cache_dir: str | None = None) -> bytes:
    """The pinned, verified script: from `source` or $REMIND2REG_MCPO_SOURCE when given, else the cache clone."""
    source = source or os.environ.get(SOURCE_ENV) or None
    return read_local_source(source) if source else clone_source(cache_dir)


def patch_source(text: str, patches=CPU_PATCHES) -> str:
    """`text` with each (old, new, count) replaced in order; AssertionError when a count differs."""
    for old, new, expected in patches:
        found = text.count(old)
        assert found == expected, (f"MCPO patch: {old!r} found {found} times, expected {expected} "
                                   f"(upstream {MCPO_FILE} changed?)")
        text = text.replace(old, new)
    return text


def patch_for_device(text: str, device: str) -> str:
    """CUDA: the source as published (fp16 included). CPU: every device reference -> the chosen device, fp16
    storage -> the chosen dtype (CPU_PATCHES), and nothing CUDA left."""
    if device.startswith("cuda"):
        return text
    text = patch_source(text, CPU_PATCHES)
    assert "cuda" not in text, "MCPO patch: a CUDA reference survived the CPU patch"
    kept = text.count(KEPT_HALF)
    assert text.count(".half()") == kept == KEPT_HALF_COUNT, (
        f"MCPO patch: {text.count('.half()')} .half() left, expected only the {KEPT_HALF_COUNT} {KEPT_HALF!r}")
    return text


def avg_pool3d_any_precision(x, *args, **kwargs):
    """F.avg_pool3d, computed on an fp32 copy for an fp16 CPU tensor (no fp16 kernel there), result in fp16."""
    import torch
    import torch.nn.functional as F

    if x.dtype == torch.float16 and x.device.type == "cpu":
        return F.avg_pool3d(x.float(), *args, **kwargs).half()
    return F.avg_pool3d(x, *args, **kwargs)


def load_module(source: bytes, device: str, precision: str = "fp32") -> types.ModuleType:
    """Execute the (patched) script as module `mcpo_p4_6543` (its __main__ block does not run)."""
    import torch
    import torch.nn.functional as F

    text = patch_for_device(source.decode("utf-8"), device)
    filename = f"<{MCPO_FILE}@{MCPO_COMMIT[:12]}{'' if device.startswith('cuda') else ', patched for CPU'}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)  # tracebacks show its lines
    module = types.ModuleType("mcpo_p4_6543")
    module.__file__ = filename
    half = precision == "fp16"
    module.__dict__.update(__mcpo_device__=torch.device(device),
                           __mcpo_dtype__=torch.float16 if half else torch.float32,
                           __mcpo_avg_pool3d__=avg_pool3d_any_precision if half else F.avg_pool3d,
                           __mcpo_synchronize__=lambda: None, __mcpo_empty_cache__=lambda: None)
    with warnings.catch_warnings():  # its module-level warnings.filterwarnings("ignore") stays inside
        exec(compile(text, filename, "exec"), module.__dict__)  # noqa: S102 - pinned, sha256-checked source
    return module


def check_grid(shape: tuple[int, ...]) -> None:
    """ValueError unless the published code can run on this grid (every axis even and >= MIN_SIZE)."""
    shape = tuple(int(n) for n in shape)
    bad = [n for n in shape if n < MIN_SIZE or n % 2]
    if len(shape) != 3 or bad:
        raise ValueError(f"MCPO cannot run on grid {'x'.join(map(str, shape))}: every axis must be even and at "
                         f"least {MIN_SIZE} voxels (its code samples every 2nd voxel and pools by 6, 5, 4, 3, 2)")


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (bytes), None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_memory_warning(shape: tuple[int, ...], available: int | None, precision: str = "fp32") -> str | None:
    """A one-line warning when a CPU run on this grid likely needs more memory than is available, else None."""
    per_voxel = CPU_BYTES_PER_VOXEL_FP16 if precision == "fp16" else CPU_BYTES_PER_VOXEL
    need = per_voxel * float(np.prod([int(n) for n in shape]))
    if available is None or need <= available:
        return None
    advice = ("--mcpo-device cuda runs its published fp16 code" if precision == "fp16" else
              "--mcpo-precision fp16 needs about 0.6 x as much; --mcpo-device cuda runs its published fp16 code")
    return (f"MCPO on the CPU ({precision}) may need about {need / 1e9:.0f} GB for a {'x'.join(map(str, shape))} "
            f"grid (a 256^3 fp32 pair held 24 GB when it was killed, 2026-12-02) and {available / 1e9:.0f} GB is "
            f"available: the kernel may kill it (exit 137); {advice}")


def to_voxel_field(displacements, grid_shape: tuple[int, ...]) -> np.ndarray:
    """MCPO's returned array -> the canonical voxel field. Its array is already channel-last, channel c = voxels
    along array axis c, x -> x + u(x) on the fixed grid (what its __main__ saves as the challenge's field), so
    this checks the shape and finiteness and casts to float32; it reorders and rescales nothing."""
    field = np.asarray(displacements)
    expected = tuple(int(n) for n in grid_shape) + (3,)
    if field.shape != expected:
        raise ValueError(f"MCPO returned shape {field.shape}, expected {expected} (channel-last voxel field)")
    field = field.astype(np.float32)
    if not np.isfinite(field).all():
        raise ValueError(f"MCPO returned {int((~np.isfinite(field)).sum())} NaN/Inf displacement values")
    return field


def _device(device: str | None) -> str:
    import torch

    device = (device or os.environ.get(DEVICE_ENV) or "").strip().lower() or None
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device in ("cuda", "cuda:0", "gpu"):
        if not torch.cuda.is_available():
            raise McpoError("MCPO device cuda asked for, but torch sees no CUDA device")
        return "cuda"
    raise McpoError(f"MCPO device {device!r}: use cpu or cuda (its code hard-codes cuda:0; pick a GPU "
                          "with CUDA_VISIBLE_DEVICES)")


def _precision(precision: str | None, device: str) -> str:
    """fp32 (CPU default) or fp16; CUDA runs the published text, which is fp16 only."""
    precision = (precision or os.environ.get(PRECISION_ENV) or "").strip().lower() or None
    if precision is not None and precision not in PRECISIONS:
        raise McpoError(f"MCPO precision {precision!r}: use fp32 or fp16")
    if device == "cuda":
        if precision == "fp32":
            raise McpoError("MCPO precision fp32 applies to the CPU only: on CUDA its published fp16 code runs as is")
        return "fp16"
    return precision or "fp32"


class Mcpo:
    """The 2025 winner on the target sequence, through the same process.run as every peer."""

    def __init__(self, source: str | None = None, device: str | None = None, cache_dir: str | None = None,
                 precision: str | None = None):
        text = get_source(source, cache_dir)  # before torch is imported: a missing source fails at once
        import torch

        self.device = _device(device)
        self.precision = _precision(precision, self.device)
        self.module = load_module(text, self.device, self.precision)
        self.device_name = (f"cuda ({torch.cuda.get_device_name(0)})" if self.device == "cuda"
                            else f"cpu ({self.precision})")
        self.threads = torch.get_num_threads()

    def register(self, fixed, moving, spacing, target="ceT1"):
        """Its __main__ for one pair: convex_adam_pt_nofu then global_block_adam_nofu, __main__ defaults, seeded.
        Spacing is not used (it works in voxels, like its container)."""
        import torch

        check_grid(fixed.shape)
        if self.device == "cpu":
            warning = cpu_memory_warning(fixed.shape, available_memory_bytes(), self.precision)
            if warning:
                from interfaces.logs import log

                log.warning(warning)
        fixed_t = torch.from_numpy(np.ascontiguousarray(fixed, dtype=np.float32))
        moving_t = torch.from_numpy(np.ascontiguousarray(moving[target], dtype=np.float32))
        random.seed(SEED)
        np.random.seed(SEED)
        torch.manual_seed(SEED)  # CPU and every CUDA device
        args = MAIN_DEFAULTS
        seconds = {}
        # its prints (the Adam loss per iteration) would interleave with the run's log: discarded
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # as its module does for its own process
            t0 = time.perf_counter()
            coarse, _ = self.module.convex_adam_pt_nofu(
                img_fixed=fixed_t, img_moving=moving_t, mind_r=args["mind_r"], mind_d=args["mind_d"],
                lambda_weight=args["lambda_weight"], grid_sp=args["grid_sp"], disp_hw=args["disp_hw"],
                selected_niter=args["selected_niter"], selected_smooth=args["selected_smooth"],
                grid_sp_adam=args["grid_sp_adam"], ic=args["ic"], use_mask=args["use_mask"])
            self._sync()
            seconds["mcpo_convex_rigid"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            displacements = self.module.global_block_adam_nofu(
                img_fixed=fixed_t, img_moving=moving_t, g_displacements=coarse, mind_r=args["mind_r"],
                mind_d=args["mind_d"], lambda_weight=args["lambda_weight"], selected_niter=args["selected_niter"],
                selected_smooth=args["selected_smooth"], grid_sp_adam=args["grid_sp_adam"],
                use_mask=args["use_mask"])
            self._sync()
            seconds["mcpo_adam"] = time.perf_counter() - t0
        return PeerResult(to_voxel_field(displacements, fixed.shape), seconds, self.device_name)

    def _sync(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
