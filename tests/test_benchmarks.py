"""The peers benchmark runs: orbiter-sync alone, quickly, and a peer that may be missing.

CI installs only the dev extra, so Celery is usually absent there: the benchmark must
then say it skipped it, in one line, and exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from helpers import ROOT


def run_peers(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", "--quick", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_orbiter_sync_alone_prints_a_table_with_its_throughput() -> None:
    result = run_peers("--only", "orbiter-sync", "--scenarios", "a", "b")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "| contestant" in result.stdout
    row = re.search(r"^\| orbiter-sync\s+\|\s+([0-9.]+)\s+\|", result.stdout, re.MULTILINE)
    assert row is not None, result.stdout
    assert float(row.group(1)) > 0
    assert "p99 ms" in result.stdout


def test_a_peer_runs_or_is_skipped_in_one_line() -> None:
    result = run_peers("--only", "celery", "--scenarios", "a")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "skipped celery:" in result.stdout or "| celery" in result.stdout


def test_the_cluster_scenario_compares_one_and_three_masters() -> None:
    result = run_peers("--only", "orbiter-sync", "--scenarios", "g", "--tasks", "300")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    rows = re.findall(r"^\|\s+([13])\s+\|\s+([0-9.e+]+) \(", result.stdout, re.MULTILINE)
    assert [masters for masters, _ in rows] == ["1", "3"], result.stdout
    assert all(float(rate) > 0 for _, rate in rows)
    assert "3 master(s): " in result.stdout and "x the throughput of 1" in result.stdout
