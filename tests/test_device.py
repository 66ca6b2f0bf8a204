"""The CPUs this process may use: affinity and container quotas, not the machine's core count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tangpoem import device
from tangpoem.device import cgroup_cpu_quota, usable_cpus

ROOT = Path(__file__).resolve().parent.parent


def fake_cgroups(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A /sys/fs/cgroup tree with the given files and a /proc/self/cgroup naming the process's cgroups."""
    root = tmp_path / "sys-fs-cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    (tmp_path / "self-cgroup").write_text(self_cgroup + "\n")
    return root, tmp_path / "self-cgroup"


CASES = {
    "v2 limit": ("0::/user.slice/app", {"cgroup.controllers": "cpu", "user.slice/app/cpu.max": "150000 100000"}, 1.5),
    "v2 no limit": ("0::/user.slice/app", {"cgroup.controllers": "cpu", "user.slice/app/cpu.max": "max 100000"}, None),
    "v2 parent's limit": ("0::/a/b", {"cgroup.controllers": "cpu", "a/b/cpu.max": "max 100000",
                                      "a/cpu.max": "50000 100000", "cpu.max": "400000 100000"}, 0.5),
    "v2 in a container": ("0::/", {"cgroup.controllers": "cpu", "cpu.max": "200000 100000"}, 2.0),
    "v1 limit": ("4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc",
                 {"cpu,cpuacct/cpu.cfs_quota_us": "300000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 3.0),
    "v1 no limit": ("1:cpu:/", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    "hybrid, v1 cpu": ("1:cpu:/\n0::/", {"cpu/cpu.cfs_quota_us": "250000", "cpu/cpu.cfs_period_us": "100000",
                                         "unified/cgroup.controllers": ""}, 2.5),
    "no cgroups": ("", {}, None),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_cgroup_cpu_quota(tmp_path, case):
    self_cgroup, files, want = CASES[case]
    assert cgroup_cpu_quota(*fake_cgroups(tmp_path, self_cgroup, files)) == want


@pytest.mark.parametrize(("affinity", "quota", "want"), [(4, None, 4), (4, 1.5, 2), (1, 8.0, 1), (8, 0.2, 1)])
def test_usable_cpus_is_affinity_capped_by_the_quota_rounded_up(tmp_path, monkeypatch, affinity, quota, want):
    files = {"cgroup.controllers": "cpu", "cpu.max": f"{int(quota * 100000)} 100000" if quota else "max 100000"}
    root, self_cgroup = fake_cgroups(tmp_path, "0::/", files)
    monkeypatch.setattr(device, "CGROUP_ROOT", root)
    monkeypatch.setattr(device, "SELF_CGROUP", self_cgroup)
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: set(range(affinity)))
    assert usable_cpus() == want
    import paddle  # noqa: F401  (set_threads after paddle's import, as the commands do)

    before = device.cpu_threads()
    try:
        assert device.set_threads(0) == want  # 0 threads: one per usable CPU
    finally:
        device.set_threads(before)


def test_usable_cpus_follows_the_real_affinity():
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
    code += "from tangpoem.device import usable_cpus; print(usable_cpus())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "1"
    assert 1 <= usable_cpus() <= len(device.os.sched_getaffinity(0))


def test_importing_tangpoem_changes_no_global_state():
    """Threads' environment variables and warning filters are the commands' business (device.prepare_command),
    not a side effect of `import tangpoem` in someone else's program."""
    script = (
        "import os, warnings\n"
        "import numpy  # its own filters are not tangpoem's\n"
        "env, filters = dict(os.environ), list(warnings.filters)\n"
        "import tangpoem, tangpoem.config, tangpoem.generate, tangpoem.prosody\n"
        "assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())\n"
        "assert list(warnings.filters) == filters, warnings.filters[: len(warnings.filters) - len(filters)]\n"
        "print('unchanged')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout == "unchanged\n", done.stderr
