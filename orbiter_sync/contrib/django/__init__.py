"""The Django app: add ``"orbiter_sync.contrib.django"`` to ``INSTALLED_APPS``.

- settings (``django.conf.settings``, as for Flask): ``ORBITER_REDIS_URL``,
  ``ORBITER_QUEUE``, ``ORBITER_AGENTS``, ``ORBITER_TASK_TIMEOUT``,
  ``ORBITER_SSE_KEEPALIVE``, ``ORBITER_POLL_LIMIT``, and ``ORBITER_PERMISSION``, the
  permission hook (conf.py)
- views: ``path("orbiter/", include("orbiter_sync.contrib.django.urls"))`` (urls.py,
  views.py): submit, status, SSE events and JSON polling
- ``python manage.py orbiter_worker [worker flags]``: the worker, with Django set up
  and each task run between ``close_old_connections()`` calls (management/, apps.py)
- ``submit_on_commit``: a run submitted once the transaction that makes its data
  commits (transaction.py)
"""

from orbiter_sync.contrib.django.transaction import submit_on_commit

__all__ = ["submit_on_commit"]
