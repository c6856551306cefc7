"""A private module: never imported through a path, even with ``--allow-import hostile``."""

from __future__ import annotations

import os


def run(command: str) -> int:
    return os.system(command)
