"""Framework integrations: ``flask`` (an extension) and ``django`` (an app).

Each imports its framework; nothing else in orbiter_sync imports this package, so
``import orbiter_sync`` imports neither Flask nor Django. What they share (the
endpoints' handling and JSON shapes) is ``orbiter_sync.web``.
"""
