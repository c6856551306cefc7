"""The test project's routes: the orbiter-sync app under ``orbiter/``."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("orbiter/", include("orbiter_sync.contrib.django.urls"))]
