"""Modules the import allowlist tests allow on purpose, and then try to abuse (test_imports.py).

``agents`` is the allowed module: it imports dangerous things and defines a few
legitimate agents. ``toolkit`` is "elsewhere": the decorators and classes an agent
module typically imports. ``agentsmith`` and ``_secrets`` must never be imported.
"""
