"""Redis URLs: which one to use, parsing sentinel and cluster URLs, and hiding their secrets.

Supported: ``redis://``, ``rediss://`` (TLS), ``unix://``,
``redis+sentinel://[:password@]host1:port1,host2:port2/mastername[/db]``
(``rediss+sentinel://`` for TLS to the master; ``?sentinel_password=`` when the
sentinels themselves require one) and ``redis+cluster://[[user]:password@]host1:port1,host2:port2``
(``rediss+cluster://`` for TLS, with ``?ssl_cert_reqs=``; any one reachable node is enough,
the client finds the others). No password, in any form a URL can carry it,
reaches a log line, a banner or an error: :func:`mask_url` hides them and
:func:`url_secrets` lists them for scrubbing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, unquote_plus

from orbiter_sync.env import HEROKU_URL_ENV, URL_ENV
from orbiter_sync.errors import ConfigurationError

DEFAULT_SENTINEL_PORT = 26379
DEFAULT_PORT = 6379
CERT_REQS = ("none", "optional", "required")  # what ssl_cert_reqs may say

_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", *_CLUSTER_SCHEMES)
_SECRET_KEY = re.compile(r"pass|pwd|token|secret|auth|credential", re.I)
# A query item starts after any ?, & or ; (zero-width, so items inside values count too).
_QUERY_ITEM = re.compile(r"(?:^|(?<=[?&;]))(?=([^?&;=]*)=([^&;]*))")
_HOST = re.compile(r"[^/?#@&=;\s]*(?:[/?#]|\Z)")  # what may follow the user info's @
_SENTINEL_HOST = re.compile(r"[^/?#@&=;\s]*/")
_DELIMITER = re.compile(r"[:/?#@&;=]")


def resolve_redis_url(url: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The URL to use: ``url`` if given, else ``ORBITER_REDIS_URL``, else ``REDIS_URL``."""
    env = os.environ if env is None else env
    chosen = url or env.get(URL_ENV) or env.get(HEROKU_URL_ENV)
    if not chosen:
        raise ConfigurationError(
            f"no Redis URL: pass --redis-url / redis_url=, or set {URL_ENV} (or {HEROKU_URL_ENV})"
        )
    scheme = chosen.split("://", 1)[0].lower() if "://" in chosen else ""
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"unsupported Redis URL {mask_url(chosen)!r}: use redis://, rediss://, unix://, "
            "redis+sentinel://host1:port1,host2:port2/mastername[/db] "
            "or redis+cluster://host1:port1,host2:port2"
        )
    return chosen


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return url.partition("://")[0].lower() in _CLUSTER_SCHEMES


def mask_url(url: str) -> str:
    """The URL with every password (user info, secret query values) replaced by ``***``,
    under each way it can be read: urllib's (redis-py's), where an unencoded ``/ ? #`` ends
    the user info, and one where it runs to the last ``@`` before a host part."""
    out, last = [], 0
    for start, end in _secret_spans(url):
        out += [url[last:start], "***"]
        last = end
    return "".join(out) + url[last:]


def url_secrets(url: str) -> list[str]:
    """Every secret in ``url``, raw and percent-decoded, longest first: passwords and secret
    query values under each reading (see :func:`mask_url`), and their pieces between URL
    delimiters (urllib can quote one back, as a port or a host)."""
    found: set[str] = set()
    for start, end in _secret_spans(url):
        text = url[start:end]
        cuts = [-1, *(m.start() for m in _DELIMITER.finditer(text)), len(text)]
        for piece in {text} | {text[i + 1 : j] for i in cuts for j in cuts if j - i > 1}:
            found |= {piece, unquote(piece), unquote_plus(piece)}
    return sorted(filter(None, found), key=lambda s: (-len(s), s))


def _userinfo_at(url: str, start: int) -> int:
    """Where the user info (after ``://``, at ``start``) ends: the last ``@`` before a host
    part (for sentinel URLs, one followed by a path; a cluster URL's comma-separated hosts
    are one host part), or -1."""
    host = _SENTINEL_HOST if "+sentinel://" in url[:start].lower() else _HOST
    at = url.rfind("@", start)
    while at >= start and not host.match(url, at + 1):
        at = url.rfind("@", start, at)
    return at


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """Where secrets are in ``url`` under every reading of it, merged and in order."""
    start = url.find("://") + 3 if "://" in url else 0
    spans: list[tuple[int, int]] = []
    if start:
        netloc_end = url.find("/", start), url.find("?", start), url.find("#", start)
        end = min((i for i in netloc_end if i >= 0), default=len(url))
        for at in {url.rfind("@", start, end), _userinfo_at(url, start)} - {-1}:
            colon = url.find(":", start, at)
            spans.append((colon + 1 if colon >= 0 else start, at))
    for m in _QUERY_ITEM.finditer(url, start):  # ^ matches only when there is no scheme
        if _SECRET_KEY.search(unquote_plus(m.group(1))):
            spans.append(m.span(2))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if merged and a <= merged[-1][1]:
            a, b = merged[-1][0], max(b, merged.pop()[1])
        merged.append((a, b))
    return merged


@dataclass(frozen=True)
class SentinelURL:
    """The parts of a ``redis+sentinel://`` URL."""

    hosts: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def _split(url: str) -> tuple[str, str, str, str, str]:
    """A sentinel or cluster URL's scheme, user info, comma-separated hosts, path and query.
    The user info runs to the last ``@`` before the hosts: a password may hold ? # / @."""
    scheme, _, rest = url.partition("://")
    at = _userinfo_at(url, len(scheme) + 3) - len(scheme) - 3
    userinfo, hostpart = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    hostpart, _, query = hostpart.partition("?")
    netloc, _, path = hostpart.partition("#")[0].partition("/")
    return scheme.lower(), userinfo, netloc, path, query


def _addresses(url: str, netloc: str, default_port: int, what: str) -> tuple[tuple[str, int], ...]:
    """The ``host``, ``host:port`` or ``[v6]:port`` items of ``netloc``, comma-separated."""
    hosts = []
    for item in filter(None, netloc.split(",")):
        if item.startswith("["):
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":") if port else str(default_port)
        else:
            host, colon, port = item.partition(":") if item.count(":") == 1 else (item, "", "")
            port = port if colon else str(default_port)
        try:
            number = int(port)
        except ValueError:
            number = 0
        if not host or not 0 < number < 65536:
            raise ConfigurationError(f"bad {what} address in {mask_url(url)!r}")
        hosts.append((host, number))
    return tuple(hosts)


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse ``redis+sentinel://[[user]:password@]h1:p1,h2:p2/mastername[/db]``."""
    scheme, userinfo, netloc, path, query = _split(url)
    hosts = _addresses(url, netloc, DEFAULT_SENTINEL_PORT, "sentinel")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts or len(parts) > 2:
        raise ConfigurationError(
            f"bad sentinel URL {mask_url(url)!r}: expected "
            "redis+sentinel://host1:port1,host2:port2/mastername[/db]"
        )
    try:
        db = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise ConfigurationError(f"bad database number in {mask_url(url)!r}") from None
    user, _, password = userinfo.partition(":")
    return SentinelURL(
        hosts=hosts,
        master=unquote(parts[0]),
        db=db,
        username=unquote(user) or None,
        password=unquote(password) or None,
        sentinel_password=(parse_qs(query).get("sentinel_password") or [""])[0] or None,
        ssl=scheme.startswith("rediss"),
    )


@dataclass(frozen=True)
class ClusterURL:
    """The parts of a ``redis+cluster://`` URL: the nodes to ask for the cluster's layout."""

    hosts: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    ssl_cert_reqs: str | None = None  # none, optional or required; None: as connect() says


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse ``redis+cluster://[[user]:password@]h1:p1,h2:p2[/0][?ssl_cert_reqs=none]``.

    Ports default to 6379. A cluster has database 0 only, so no other is accepted, and
    ``ssl_cert_reqs`` is the one query option."""
    scheme, userinfo, netloc, path, query = _split(url)
    hosts = _addresses(url, netloc, DEFAULT_PORT, "cluster node")
    if not hosts:
        raise ConfigurationError(
            f"bad cluster URL {mask_url(url)!r}: expected redis+cluster://host1:port1,host2:port2"
        )
    if path.strip("/") not in ("", "0"):
        raise ConfigurationError(
            f"bad cluster URL {mask_url(url)!r}: a cluster has database 0 only"
        )
    options = parse_qs(query, keep_blank_values=True)
    if set(options) - {"ssl_cert_reqs"}:
        raise ConfigurationError(
            f"bad cluster URL {mask_url(url)!r}: ssl_cert_reqs is its only query option"
        )
    cert_reqs = options.get("ssl_cert_reqs", [None])[-1]
    if cert_reqs is not None and cert_reqs.lower() not in CERT_REQS:
        raise ConfigurationError(
            f"bad cluster URL {mask_url(url)!r}: ssl_cert_reqs is one of {', '.join(CERT_REQS)}"
        )
    user, _, password = userinfo.partition(":")
    return ClusterURL(
        hosts=hosts,
        username=unquote(user) or None,
        password=unquote(password) or None,
        ssl=scheme.startswith("rediss"),
        ssl_cert_reqs=cert_reqs and cert_reqs.lower(),
    )


def bad_url(url: str, exc: Exception) -> ConfigurationError:
    """The error for a URL redis-py could not parse, with no piece of its password in it."""
    userinfo = url[: max(_userinfo_at(url, url.find("://") + 3), 0)].partition("://")[2]
    hint = " (percent-encode / ? # in a password)" if re.search("[/?#]", userinfo) else ""
    # urllib quotes a bad port back, and with such a password that is part of it
    reason = "unparsable" if any(s in str(exc) for s in url_secrets(url)) else str(exc)
    return ConfigurationError(f"bad Redis URL {mask_url(url)!r}: {reason}{hint}")
