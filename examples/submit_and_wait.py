"""Submit one agent run from plain sync code, stream its events, and wait for the result.

Run a worker that may import the example agents, then this script::

    export ORBITER_REDIS_URL=redis://localhost:6379
    orbiter-sync start worker --allow-import examples.agents &
    python -m examples.submit_and_wait "Streams carry runs to workers"
"""

from __future__ import annotations

import sys

from orbiter_sync import TaskFailedError, distributed


def main(text: str, redis_url: str | None = None) -> int:
    handle = distributed(
        {"entrypoint": "examples.agents:summarize"}, text, redis_url=redis_url, timeout=60
    )
    print(f"submitted task {handle.task_id}")
    for event in handle.stream(timeout=120):
        print(f"  {event.type}: {event.to_dict()}")
    try:
        result = handle.result(timeout=10)
    except TaskFailedError as exc:
        print(f"failed: {exc.error}")
        return 1
    print(f"result: {result['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:]) or "hello from a sync script"))
