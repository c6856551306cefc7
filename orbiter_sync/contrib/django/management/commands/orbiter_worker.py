"""``python manage.py orbiter_worker [worker flags]``: ``orbiter-sync start worker``, set up.

Django is set up (``manage.py`` did it), so agents use the ORM; every task runs
between ``close_old_connections()`` calls (the app's hook, apps.py). Every flag goes
to the worker's own command line (``cli/worker.py``), so each one works as there:
``--concurrency``, ``--allow-import`` ... ; ``--redis-url`` and ``--queue`` default to
``ORBITER_REDIS_URL`` and ``ORBITER_QUEUE``. Only Django's ``--settings`` and
``--pythonpath`` are taken out (``manage.py`` has applied them already).

``--pool gevent`` needs ``from gevent import monkey; monkey.patch_all()`` at the top
of ``manage.py``, before Django imports anything: patched later, the worker refuses
to start and says so.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from orbiter_sync import hooks
from orbiter_sync.cli.common import Scrubber
from orbiter_sync.cli.worker import worker_command
from orbiter_sync.cluster_client import REDIS_ERRORS
from orbiter_sync.contrib.django.apps import fresh_connections
from orbiter_sync.contrib.django.conf import read_setting
from orbiter_sync.env import HEROKU_URL_ENV, URL_ENV
from orbiter_sync.errors import ConfigurationError, OrbiterError
from orbiter_sync.web import QUEUE, REDIS_URL

DJANGO_OPTIONS = ("--settings", "--pythonpath")  # manage.py's own, applied before we run


# what ends the command with one line and exit 1, as `orbiter-sync` does
FAILURES: tuple[type[Exception], ...] = (OrbiterError, *REDIS_ERRORS)


def worker_arguments(argv: Sequence[str]) -> list[str]:
    """``argv`` without Django's options, with the project's Redis URL and queue added
    where the flags do not say them."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in DJANGO_OPTIONS)):
            args.append(arg)
    for flag, name in (("--redis-url", REDIS_URL), ("--queue", QUEUE)):
        given = any(a == flag or a.startswith(f"{flag}=") for a in args)
        if not given and read_setting(name):
            args = [flag, str(read_setting(name)), *args]
    return args


def run_worker(args: Sequence[str], prog_name: str) -> int:
    """Run the worker command with ``args`` until it stops; its exit code."""
    hooks.around_each_task(fresh_connections)  # the app registered it; once is enough
    urls = [u for u in (read_setting(REDIS_URL), os.environ.get(URL_ENV),
                        os.environ.get(HEROKU_URL_ENV)) if u]  # fmt: skip
    scrub = Scrubber([str(u) for u in urls])
    try:
        result = worker_command.main(args=list(args), prog_name=prog_name, standalone_mode=False)
    except click.UsageError as exc:
        exc.show()  # about flags, with the usage line
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"Error: {scrub(exc.format_message())}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        return 1
    # What `orbiter-sync` turns into one line (cli/common.OrbiterGroup), here too.
    except ConfigurationError as exc:
        click.echo(f"Error: {scrub(str(exc))}", err=True)
        return 2
    except FAILURES as exc:
        click.echo(f"Error: {scrub(str(exc))}", err=True)
        return 1
    finally:
        connections.close_all()
    return result if isinstance(result, int) else 0


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = (
        "Run an orbiter-sync worker with Django set up; takes the flags of "
        "`orbiter-sync start worker` (see `manage.py orbiter_worker --help`)."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker_args", nargs=argparse.REMAINDER, metavar="WORKER FLAGS")

    def run_from_argv(self, argv: list[str]) -> None:
        # Django's parser would refuse the worker's flags (and answer --help itself):
        # every argument goes to the worker's command line instead.
        prog_name = f"{os.path.basename(argv[0])} {argv[1]}"
        code = run_worker(worker_arguments(argv[2:]), prog_name)
        if code:
            raise SystemExit(code)

    def handle(self, *args: Any, **options: Any) -> None:
        """For ``call_command("orbiter_worker", worker_args=[...])``."""
        code = run_worker(worker_arguments(options.get("worker_args") or []), "orbiter_worker")
        if code:
            raise CommandError(f"the worker exited with code {code}", returncode=code)
