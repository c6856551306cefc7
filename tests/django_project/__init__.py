"""A small Django project for tests/test_contrib_django.py: the orbiter-sync app, and a
``notes`` app whose agent reads a row through the ORM on the worker."""
