from __future__ import annotations

from pathlib import Path

import pytest

from shared.cpus import cpu_quota, scheduled_cpus, usable_cpus


def _tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "proc-cgroup").write_text(proc)
    return root, tmp_path / "proc-cgroup"


@pytest.mark.parametrize(
    ("proc", "files", "quota"),
    [
        # cgroup v2, a pod's limit of 1.5 CPUs on its own cgroup
        ("0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/cpu.max": "150000 100000\n"}, 1.5),
        # v2, no limit of its own but a tighter one on an ancestor
        (
            "0::/kubepods/pod1/c1\n",
            {"kubepods/pod1/c1/cpu.max": "max 100000\n", "kubepods/cpu.max": "50000 100000"},
            0.5,
        ),
        # v2 inside a container: /proc names a path the mount does not hold, the mount is it
        ("0::/docker/abc\n", {"cpu.max": "200000 100000\n"}, 2.0),
        # v2 without a limit anywhere
        ("0::/user.slice\n", {"user.slice/cpu.max": "max 100000\n"}, None),
        # cgroup v1, the cpu controller mounted with cpuacct
        (
            "4:memory:/x\n3:cpu,cpuacct:/x\n",
            {"cpu,cpuacct/x/cpu.cfs_quota_us": "300000\n",
             "cpu,cpuacct/x/cpu.cfs_period_us": "100000\n"},
            3.0,
        ),
        # v1 mounted as plain "cpu", no quota (-1): only cpuacct must not count
        (
            "2:cpuacct:/\n1:cpu:/\n0::/\n",
            {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n",
             "cpuacct/cpu.cfs_quota_us": "100000\n", "cpuacct/cpu.cfs_period_us": "100000\n"},
            None,
        ),
        # unreadable or odd files count as no limit
        ("0::/a\n", {"a/cpu.max": "garbage"}, None),
        ("0::/a\n", {"a/cpu.max": "100000 0"}, None),
    ],
)  # fmt: skip
def test_the_tightest_cpu_quota_of_the_cgroup_and_its_ancestors(
    tmp_path: Path, proc: str, files: dict[str, str], quota: float | None
) -> None:
    assert cpu_quota(*_tree(tmp_path, proc, files)) == quota


def test_a_pods_cpu_limit_caps_the_cpus_and_rounds_up(tmp_path: Path) -> None:
    half = _tree(tmp_path / "half", "0::/\n", {"cpu.max": "50000 100000"})
    assert usable_cpus(*half) == 1
    many = _tree(tmp_path / "many", "0::/\n", {"cpu.max": "6400000 100000"})  # 64 CPUs
    assert usable_cpus(*many) == scheduled_cpus()  # never more than it may run on
    if scheduled_cpus() >= 2:
        one_and_a_half = _tree(tmp_path / "1.5", "0::/\n", {"cpu.max": "150000 100000"})
        assert usable_cpus(*one_and_a_half) == 2


def test_without_cgroups_every_scheduled_cpu_counts(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path, tmp_path / "missing") is None
    assert usable_cpus(tmp_path, tmp_path / "missing") == scheduled_cpus() >= 1
