"""Worker processes and what is measured of them: CPU time, peak RSS, the done counter.

CPU time is utime + stime + cutime + cstime from ``/proc/<pid>/stat`` summed over a
worker process and all its live descendants (a reaped child's time is in its
parent's cutime/cstime, so nothing is lost or counted twice). Peak RSS is VmHWM,
summed over the same processes (forked children share pages, so a sum over-counts
them: it is an upper bound).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from benchmarks.peers import jobs
from orbiter_sync.embedded import EmbeddedRedis

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL_SECONDS = 0.005
READY_TIMEOUT = 60.0
STOP_GRACE = 5.0


class BenchError(RuntimeError):
    """A run that could not finish (the message names the contestant)."""


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def process_tree(roots: Iterable[int]) -> list[int]:
    """``roots`` and every live descendant of theirs."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid for pid in roots if _stat_fields(pid) is not None]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / CLOCK_TICKS


def peak_rss_mib(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmHWM:"))
    return total / 1024


@dataclass
class Bench:
    """The private redis-server every run uses, and where worker logs go."""

    server: EmbeddedRedis
    logdir: Path
    client: redis.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.client = redis.Redis.from_url(self.server.url, decode_responses=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def redis_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def done(self) -> int:
        return int(self.client.get(jobs.DONE) or 0)

    def worker_env(self) -> dict[str, str]:
        """This environment, less anything that could point a library elsewhere."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("ORBITER_", "CELERY_", "DRAMATIQ_", "RQ_", "REDIS_"))
        }
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        env[jobs.URL_ENV] = self.url
        return env


@dataclass
class WorkerGroup:
    """The worker processes of one run (each in a session of its own)."""

    label: str
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    @classmethod
    def start(
        cls, bench: Bench, label: str, commands: Sequence[list[str]], tag: str
    ) -> WorkerGroup:
        env = bench.worker_env()
        procs, logs = [], []
        for index, command in enumerate(commands):
            log = bench.logdir / f"{tag}-{index}.log"
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        command, env=env, stdout=out, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, start_new_session=True,
                    )
                )  # fmt: skip
            logs.append(log)
        return cls(label, procs, logs)

    def pids(self) -> list[int]:
        return process_tree(proc.pid for proc in self.procs)

    def log_tail(self, lines: int = 8) -> str:
        text = "\n".join(log.read_text(errors="replace") for log in self.logs if log.exists())
        return "\n    ".join(text.strip().splitlines()[-lines:])

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise BenchError(
                    f"{self.label}: worker exited with {proc.returncode}:\n    {self.log_tail()}"
                )

    def wait(
        self, what: str, done: Callable[[], bool], timeout: float, state: Callable[[], str] = str
    ) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.label}: timed out after {timeout:g} s waiting for {what}{state()}:\n"
                    f"    {self.log_tail()}"
                )
            time.sleep(POLL_SECONDS)

    def wait_done(self, bench: Bench, target: int, timeout: float) -> None:
        """Wait until the done counter reaches ``target``."""
        last = [0]

        def reached() -> bool:
            last[0] = bench.done()
            return last[0] >= target

        what = f"the done counter to reach {target}"
        self.wait(what, reached, timeout, lambda: f" (it is at {last[0]})")

    def stop(self) -> None:
        """SIGTERM, a short grace, then SIGKILL to each process group (nothing is left)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=10)
