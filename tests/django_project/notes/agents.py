"""Agents the test project's worker runs (``--allow-import django_project.notes.agents``)."""

from __future__ import annotations

from django_project.notes.models import Note


def read_note(input: str) -> str:
    """The body of the note whose primary key is ``input``, read through the ORM."""
    body: str = Note.objects.get(pk=int(input)).body
    return body
