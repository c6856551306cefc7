"""What the LLM path costs per task over a bare entrypoint, against a local model server.

One worker process (8 thread slots) drains N tasks twice per round, interleaved:
the no-op entrypoint, and an orbiter Agent dict whose model is a local
OpenAI-compatible server (orbiter_sync.testing.fake_openai, in this process)
answering every request with one short streamed text at once. The difference is
what orbiter-sync and pydantic-ai add per run: resolving the agent, building the
pydantic-ai agent, one streamed chat-completions call over HTTP on the slot's
reused client, and the events it publishes. Run it from the repository root:

    .venv/bin/python -m benchmarks.llm_overhead [--tasks 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from tabulate import tabulate

from benchmarks.drain import drain
from orbiter_sync.testing.fake_openai import FakeOpenAI, Reply

LLM_AGENT = {
    "name": "bench",
    "model": "openai:bench-model",
    "instructions": "Answer in one word.",
    "max_steps": 2,
    "temperature": 1.0,
    "max_tokens": None,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"entrypoint": [], "LLM agent": []}
    with FakeOpenAI() as model:
        model.respond_with(lambda _body: Reply.text("ok"))
        env = {"OPENAI_BASE_URL": model.url, "OPENAI_API_KEY": "bench"}
        for number in range(1, options.rounds + 1):
            runs["entrypoint"].append(drain(1, options.tasks))
            runs["LLM agent"].append(drain(1, options.tasks, agent=LLM_AGENT, env=env))
            print(f"round {number}: {[r[-1] for r in runs.values()]}", file=sys.stderr)
    medians = {
        kind: {name: statistics.median(r[name] for r in results) for name in results[0]}
        for kind, results in runs.items()
    }
    rows = [
        {"agent": kind, **{k: round(v, 3) for k, v in m.items()}} for kind, m in medians.items()
    ]
    print(tabulate(rows, headers="keys", tablefmt="github"))
    bare, llm = medians["entrypoint"], medians["LLM agent"]
    extra_cpu = llm["worker CPU ms/task"] - bare["worker CPU ms/task"]
    extra_wall = 1000 / llm["tasks/s"] - 1000 / bare["tasks/s"]
    slower = bare["tasks/s"] / llm["tasks/s"]
    print(f"LLM path: +{extra_cpu:.2f} ms worker CPU per task, +{extra_wall:.2f} ms per task "
          f"of one 8-slot worker's time ({slower:.1f}x the entrypoint's)")  # fmt: skip


if __name__ == "__main__":
    main()
