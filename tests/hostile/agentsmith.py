"""Outside ``--allow-import hostile.agents`` (its name only starts alike): never imported."""

from __future__ import annotations

import os


def run(command: str) -> int:
    return os.system(command)
