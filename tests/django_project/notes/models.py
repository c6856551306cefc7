"""One model, for an agent to read on the worker."""

from __future__ import annotations

from django.db import models


class Note(models.Model):  # type: ignore[misc]  # Django ships no type hints
    body = models.TextField()
