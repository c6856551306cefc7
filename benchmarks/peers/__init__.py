"""orbiter-sync side by side with Celery, RQ and Dramatiq: ``python -m benchmarks.peers``.

``jobs`` holds the jobs every library runs (each ends with an INCR of one counter on
its own Redis connection); ``celery_app`` and ``dramatiq_jobs`` wrap them for those
libraries and are imported only when they run; ``contestants`` starts and submits to
each library's worker; ``measure`` reads /proc; ``scenarios`` runs and tabulates;
``report`` formats the header, cells and summary. See ``__main__`` for the options.
To see where a worker spends its time, ``py-spy`` (in the ``bench`` extra) can attach
to it while a run goes: ``py-spy top --pid <worker pid>``.
"""
