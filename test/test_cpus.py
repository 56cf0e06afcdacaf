"""interfaces.cpus on fake cgroup trees (tmp_path): v2 cpu.max, v1 cfs quota/period, nested limits, no limit,
no cgroup filesystem, rounding, and the affinity cap; plus the model using it when config threads is null."""
import os

import pytest

from interfaces import cpus


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def v2_tree(tmp_path, cpu_max, own_path="/", own_cpu_max=None):
    root = tmp_path / "cgroup"
    write(str(root / "cgroup.controllers"), "cpuset cpu io memory pids\n")
    if cpu_max is not None:
        write(str(root / "cpu.max"), cpu_max + "\n")
    if own_cpu_max is not None:
        write(str(root / own_path.strip("/") / "cpu.max"), own_cpu_max + "\n")
    proc = tmp_path / "proc_self_cgroup"
    write(str(proc), f"0::{own_path}\n")
    return str(root), str(proc)


def v1_tree(tmp_path, quota, period="100000", controller="cpu,cpuacct", own_path="/"):
    root = tmp_path / "cgroup"
    base = root / controller
    write(str(base / "cpu.cfs_quota_us"), f"{quota}\n")
    write(str(base / "cpu.cfs_period_us"), f"{period}\n")
    proc = tmp_path / "proc_self_cgroup"
    write(str(proc), f"12:memory:{own_path}\n4:cpu,cpuacct:{own_path}\n1:name=systemd:{own_path}\n")
    return str(root), str(proc)


@pytest.mark.parametrize("cpu_max, quota, allowed", [
    ("200000 100000", 2.0, 2),     # docker run --cpus 2
    ("150000 100000", 1.5, 2),     # --cpus 1.5: rounded up
    ("50000 100000", 0.5, 1),      # --cpus 0.5: at least one thread
    ("100000 100000", 1.0, 1),
    ("max 100000", None, 16),      # no limit: the affinity
])
def test_cgroup_v2_cpu_max(tmp_path, cpu_max, quota, allowed):
    root, proc = v2_tree(tmp_path, cpu_max)
    assert cpus.cgroup_cpu_quota(root, proc) == quota
    assert cpus.allowed_cpus(root, proc, affinity=16) == allowed


@pytest.mark.parametrize("quota_us, period_us, quota, allowed", [
    ("200000", "100000", 2.0, 2),
    ("300000", "200000", 1.5, 2),
    ("-1", "100000", None, 16),    # v1's "no limit"
])
def test_cgroup_v1_cfs_quota(tmp_path, quota_us, period_us, quota, allowed):
    root, proc = v1_tree(tmp_path, quota_us, period_us)
    assert cpus.cgroup_cpu_quota(root, proc) == quota
    assert cpus.allowed_cpus(root, proc, affinity=16) == allowed


def test_cgroup_v1_plain_cpu_controller_folder(tmp_path):
    root, proc = v1_tree(tmp_path, "400000", controller="cpu")
    assert cpus.allowed_cpus(root, proc, affinity=64) == 4


def test_affinity_smaller_than_quota_wins(tmp_path):
    root, proc = v2_tree(tmp_path, "800000 100000")   # --cpus 8 with --cpuset-cpus 0,1
    assert cpus.allowed_cpus(root, proc, affinity=2) == 2


def test_v2_nested_cgroup_smallest_limit_applies(tmp_path):
    """On a host (no cgroup namespace) the process's own cgroup and its ancestors are all read."""
    root, proc = v2_tree(tmp_path, "max 100000", own_path="/system.slice/job.scope", own_cpu_max="300000 100000")
    write(os.path.join(root, "system.slice", "cpu.max"), "max 100000\n")
    assert cpus.cgroup_cpu_quota(root, proc) == 3.0
    write(os.path.join(root, "system.slice", "cpu.max"), "100000 100000\n")
    assert cpus.cgroup_cpu_quota(root, proc) == 1.0
    assert cpus.allowed_cpus(root, proc, affinity=32) == 1


def test_v2_namespaced_view_reads_the_mount_root(tmp_path):
    """In a container /proc/self/cgroup may name a host path that is not under the mount: the root is read."""
    root, proc = v2_tree(tmp_path, "200000 100000")
    write(proc, "0::/system.slice/docker-abc.scope\n")
    assert cpus.allowed_cpus(root, proc, affinity=64) == 2


def test_no_cgroup_filesystem_or_garbage(tmp_path):
    missing = str(tmp_path / "none")
    assert cpus.cgroup_cpu_quota(missing, missing) is None
    assert cpus.allowed_cpus(missing, missing, affinity=3) == 3
    root, proc = v2_tree(tmp_path, "garbage")
    assert cpus.cgroup_cpu_quota(root, proc) is None


def test_this_machine_is_consistent():
    assert 1 <= cpus.allowed_cpus() <= cpus.affinity_cpus() <= (os.cpu_count() or 1)
    assert cpus.describe().startswith(f"{cpus.allowed_cpus()} (affinity ")


def test_module_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, interfaces.cpus; print('torch' in sys.modules)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_model_sets_torch_threads_to_the_allowed_count_when_config_threads_is_null(monkeypatch):
    torch = pytest.importorskip("torch")
    from model import pipeline
    import dataclasses

    from model.config import load_config

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(pipeline, "allowed_cpus", lambda: 1)
        registration = pipeline.Registration(dataclasses.replace(load_config(None), threads=None), device="cpu")
        assert torch.get_num_threads() == 1 and registration.threads == 1
        registration = pipeline.Registration(dataclasses.replace(load_config(None), threads=2), device="cpu")
        assert torch.get_num_threads() == 2 and registration.threads == 2  # an explicit value wins
    finally:
        torch.set_num_threads(before)
