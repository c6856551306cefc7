"""The app's settings, read from ``django.conf.settings`` under the names Flask uses.

The ``ORBITER_*`` names and defaults are ``orbiter_sync.web``'s; Django adds
``ORBITER_PERMISSION``: a callable, or the dotted path of one,
``fn(request, action, task_id) -> bool`` that every view asks first (``action`` is
``submit``, with task_id None, ``status``, ``events`` or ``poll``; False answers
403). Unset, every request is allowed: production projects must set it.

Both are read once and read again when a test changes a setting
(``override_settings``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from orbiter_sync.errors import ConfigurationError
from orbiter_sync.web import TaskEndpoints, WebSettings, warn_allow_all

PERMISSION = "ORBITER_PERMISSION"

Permission = Callable[[Any, str, "str | None"], bool]


def _allow_all(request: Any, action: str, task_id: str | None) -> bool:
    warn_allow_all()
    return True


def read_setting(name: str) -> Any:
    """The setting ``name``, None when the project does not set it."""
    return getattr(settings, name, None)


@functools.cache
def web_settings() -> WebSettings:
    return WebSettings.read(read_setting)


@functools.cache
def endpoints() -> TaskEndpoints:
    return TaskEndpoints(web_settings())


@functools.cache
def permission() -> Permission:
    """The permission hook ``ORBITER_PERMISSION`` names (allow-all when unset)."""
    value = read_setting(PERMISSION)
    if value is None:
        return _allow_all
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise ConfigurationError(f"{PERMISSION}: cannot import {value!r}: {exc}") from None
    if not callable(value):
        raise ConfigurationError(f"{PERMISSION} must name a callable, got {value!r}")
    hook: Permission = value
    return hook


def _reread(*, setting: str, **_kwargs: Any) -> None:
    if setting.startswith("ORBITER_"):
        web_settings.cache_clear()
        endpoints.cache_clear()
        permission.cache_clear()


setting_changed.connect(_reread, dispatch_uid="orbiter_sync.contrib.django.conf")
