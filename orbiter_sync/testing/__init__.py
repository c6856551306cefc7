"""Test doubles for the services orbiter-sync talks to: a scripted OpenAI-compatible server."""
