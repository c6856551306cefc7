"""The app's routes: ``path("orbiter/", include("orbiter_sync.contrib.django.urls"))``.

``POST tasks``, ``GET tasks/<id>``, ``GET tasks/<id>/events`` (SSE) and
``GET tasks/<id>/poll?after=<event id>``, in the ``orbiter_sync`` namespace
(``reverse("orbiter_sync:events", kwargs={"task_id": ...})``).
"""

from __future__ import annotations

from django.urls import path

from orbiter_sync.contrib.django import views

app_name = views.APP_NAME

urlpatterns = [
    path("tasks", views.submit, name="submit"),
    path("tasks/<str:task_id>", views.status, name="status"),
    path("tasks/<str:task_id>/events", views.events, name="events"),
    path("tasks/<str:task_id>/poll", views.poll, name="poll"),
]
