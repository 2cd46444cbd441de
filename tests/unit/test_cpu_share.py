"""The CPU a worker may use (cgroup quotas, affinity) and the warning when `max_in_flight` does not fit it."""

from __future__ import annotations

import os
from pathlib import Path

from extproc.config import Config, parse_config
from extproc.cpu_share import available_cpus, budget_warnings

CORES = float(len(os.sched_getaffinity(0)))


def config(admission: str = "{}") -> Config:
    return parse_config(
        f"""
server: {{admission: {admission}}}
providers: {{models: [{{name: m, base_url: "http://127.0.0.1:9/v1"}}]}}
"""
    )


def write(path: Path, name: str, text: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text, encoding="ascii")


def test_v2_quota_is_the_lowest_on_the_cgroup_path(tmp_path: Path) -> None:
    write(tmp_path / "kubepods", "cpu.max", "50000 100000\n")  # the pod: half a core
    write(tmp_path / "kubepods" / "quorum", "cpu.max", "max 100000\n")  # the container: no limit of its own
    assert available_cpus(tmp_path, "0::/kubepods/quorum\n") == min(0.5, CORES)
    write(tmp_path / "kubepods" / "quorum", "cpu.max", "25000 100000\n")
    assert available_cpus(tmp_path, "0::/kubepods/quorum\n") == min(0.25, CORES)


def test_v1_quota_and_no_quota(tmp_path: Path) -> None:
    group = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    write(group, "cpu.cfs_quota_us", "150000\n")
    write(group, "cpu.cfs_period_us", "100000\n")
    assert available_cpus(tmp_path, "3:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n") == min(1.5, CORES)
    write(group, "cpu.cfs_quota_us", "-1\n")  # unlimited: the CPUs the process may run on
    assert available_cpus(tmp_path, "3:cpu,cpuacct:/docker/abc\n") == CORES
    assert available_cpus(tmp_path, "0::/\n") == CORES  # no cpu.max at all


def test_max_in_flight_sized_for_a_core_is_flagged_on_a_quarter_core() -> None:
    cfg = config()
    assert cfg.server.admission.max_in_flight == 64
    [warning] = budget_warnings(cfg, workers=1, cpus=0.25)
    assert "max_in_flight is 64" in warning and "0.25 of a CPU" in warning and "than 16 would" in warning
    assert budget_warnings(cfg, workers=2, cpus=2.0) == []  # a core per worker: what the default is for
    [warning] = budget_warnings(cfg, workers=4, cpus=2.0)  # half a core each
    assert "than 32 would" in warning
    assert budget_warnings(config("{max_in_flight: 12}"), workers=1, cpus=0.25) == []  # sized to the share
    assert budget_warnings(config("{max_in_flight: 0}"), workers=1, cpus=0.25) == []  # no limit: the operator's choice


def test_serve_logs_the_warning_at_start(tmp_path: Path, monkeypatch, caplog) -> None:
    import extproc.cpu_share
    import extproc.server
    from extproc.cli import main

    path = tmp_path / "q.yaml"
    path.write_text('providers: {models: [{name: m, base_url: "http://127.0.0.1:9/v1"}]}\n', encoding="utf-8")
    monkeypatch.setattr(extproc.cpu_share, "available_cpus", lambda: 0.25)
    monkeypatch.setattr(extproc.server, "serve", lambda *args, **kwargs: 0)  # stop before binding anything
    assert main(["serve", "--config", str(path)]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("server.admission.max_in_flight is 64" in w for w in warnings)
