"""``orbiter_worker``: the worker under ``manage.py``."""
