"""LLM agents and swarms on pydantic-ai: the ``llm`` and ``swarm`` agent kinds.

Imported only when a worker resolves such an agent_config (agents/__init__.py),
so a worker that runs entrypoints never loads pydantic-ai. The modules, in the
order a run meets them: ``spec`` (the dicts, checked), ``kinds`` (the agent
table's resolvers), ``tools`` and ``history``, ``models`` (provider clients),
``runner`` (one agent, its events), ``swarm`` (the three modes), ``errors``
(a provider's error as an attempt's end).
"""
