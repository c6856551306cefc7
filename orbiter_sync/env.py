"""Every environment variable orbiter-sync reads, by name (flags override them).

This module imports nothing: the console script reads ``ORBITER_POOL`` from it
before gevent has patched the standard library.
"""

URL_ENV = "ORBITER_REDIS_URL"
HEROKU_URL_ENV = "REDIS_URL"  # the fallback, as Heroku sets it
# For rediss:// URLs that do not say ssl_cert_reqs themselves (Heroku's REDIS_URL cannot).
CERT_REQS_ENV = "ORBITER_REDIS_SSL_CERT_REQS"
ALLOW_IMPORTS_ENV = "ORBITER_ALLOW_IMPORTS"
POOL_ENV = "ORBITER_POOL"
TEMPORAL_HOST_ENV = "TEMPORAL_HOST"  # selects the temporal executor when set
TEMPORAL_NAMESPACE_ENV = "TEMPORAL_NAMESPACE"
TEMPORAL_TASK_QUEUE_ENV = "ORBITER_TEMPORAL_TASK_QUEUE"
# "false": a temporal-executor worker only starts workflows (start temporal-worker runs them)
TEMPORAL_WORKER_ENV = "ORBITER_TEMPORAL_WORKER"
# seconds a web process's client call may take, retries included (default 5)
CLIENT_TIMEOUT_ENV = "ORBITER_CLIENT_TIMEOUT"
# how long a task's hash (and result) and its event stream are kept, for workers and clients
RESULT_TTL_ENV = "ORBITER_RESULT_TTL"
EVENTS_TTL_ENV = "ORBITER_EVENTS_TTL"
# a worker serves its own /metrics on this port (off when unset)
METRICS_PORT_ENV = "ORBITER_METRICS_PORT"
# shards of every queue on a Redis Cluster (redis+cluster://), for workers and clients alike
QUEUE_SHARDS_ENV = "ORBITER_QUEUE_SHARDS"
