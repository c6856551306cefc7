"""``python -m orbiter_sync.cli``: the same as the ``orbiter-sync`` script."""

from orbiter_sync.cli.entry import main

main()
