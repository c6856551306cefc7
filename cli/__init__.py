"""The orbiter-sync command line (installed as ``orbiter_sync.cli``)."""
