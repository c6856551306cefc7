"""Runnable examples: demo agents, a script, a Flask SSE app and a Django view."""
