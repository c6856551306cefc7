"""Agents the benchmarks run: I/O-bound waits, as an LLM call spends its time."""

from __future__ import annotations

import time

IO_SECONDS = 0.2


def io_wait(input: str) -> str:
    time.sleep(IO_SECONDS)
    return input


def noop(input: str) -> str:
    return input


def io_second(input: str) -> str:
    time.sleep(1.0)
    return input
