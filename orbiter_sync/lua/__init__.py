"""Every Redis script orbiter-sync runs, one ``.lua`` file each, and their loader.

Each script opens with a header naming its KEYS and ARGV and binds them to
named locals before any logic (as Dramatiq's ``dispatch.lua`` does). Lua that
several scripts share lives in ``lib/``: the status transition rule
(``lib/status.lua``), event writing (``lib/events.lua``), entry ownership
(``lib/entries.lua``) and the fleet's counters (``lib/counts.lua``). A script pulls
one in with a line of its own, ``--- @include "status"``, which :func:`source`
replaces with that file (the convention of BullMQ's scripts). No Lua is written in Python strings.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import redis
from redis.commands.core import Script

SCRIPTS = (
    "submit",
    "cancel",
    "begin",
    "settle",
    "dead_letter",
    "promote",
    "keep_alive",
    "publish",
)
LIBRARIES = ("status", "events", "entries", "counts")

_INCLUDE = re.compile(r'^--- @include "([a-z_]+)"$', re.MULTILINE)


def _read(relative: str) -> str:
    return resources.files(__name__).joinpath(relative).read_text(encoding="utf-8")


@functools.cache
def source(name: str) -> str:
    """The full text of script ``name``, its ``@include`` lines replaced by the libraries."""
    if name not in SCRIPTS:
        raise ValueError(f"no Lua script named {name!r}")

    def include(match: re.Match[str]) -> str:
        library = match.group(1)
        if library not in LIBRARIES:
            raise ValueError(f"{name}.lua includes unknown library {library!r}")
        return _read(f"lib/{library}.lua")

    return _INCLUDE.sub(include, _read(f"{name}.lua"))


def register(client: redis.Redis, name: str) -> Script:
    """Script ``name`` bound to ``client`` (EVALSHA, loading it on first use)."""
    return client.register_script(source(name))
