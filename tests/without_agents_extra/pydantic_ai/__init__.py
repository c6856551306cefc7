"""Stands in for a worker without the agents extra: pydantic-ai cannot be imported."""

raise ImportError("No module named 'pydantic_ai'")
