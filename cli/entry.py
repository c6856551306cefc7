"""The console script's entry point: patch for gevent first, then load the command line.

``--pool gevent`` (or ``ORBITER_POOL=gevent``) on ``start worker`` must patch the
standard library before redis, threading, socket or asyncio are imported, as
Celery's ``maybe_patch_concurrency`` and dramatiq-gevent do. So this module
imports nothing of ours until it has decided, and ``orbiter_sync`` itself imports
its names lazily.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from orbiter_sync.env import POOL_ENV


def wants_gevent(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    """True when ``argv`` starts a worker on the gevent pool (flag, else environment)."""
    args = list(argv)
    starts_worker = any(args[i : i + 2] == ["start", "worker"] for i in range(len(args)))
    if not starts_worker:
        return False
    pool = env.get(POOL_ENV, "thread")
    for index, arg in enumerate(args):
        if arg == "--pool" and index + 1 < len(args):
            pool = args[index + 1]
        elif arg.startswith("--pool="):
            pool = arg.split("=", 1)[1]
    return pool == "gevent"


def main() -> None:
    if wants_gevent(sys.argv[1:], os.environ):
        try:
            from gevent import monkey
        except ImportError:
            sys.stderr.write(
                "Error: --pool gevent needs gevent: pip install 'orbiter-sync[gevent]'\n"
            )
            sys.exit(2)
        monkey.patch_all()
    from orbiter_sync.cli.main import main as run_cli

    run_cli()


if __name__ == "__main__":
    main()
