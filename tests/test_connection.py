import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import redis
from helpers import CLI, make_certificate, wait_for
from redis.utils import HIREDIS_AVAILABLE

from orbiter_sync import TaskPayload, TaskProducer, distributed
from orbiter_sync.connection import connect
from orbiter_sync.embedded import EmbeddedRedis, free_port, redis_server_binary
from orbiter_sync.errors import ConfigurationError, RedisUnavailableError
from orbiter_sync.urls import mask_url, parse_sentinel_url, resolve_redis_url, url_secrets


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@host:6379", "redis://:***@host:6379"),
        (
            "rediss://default:p@ss/w@host:25061?ssl_cert_reqs=none",
            "rediss://default:***@host:25061?ssl_cert_reqs=none",
        ),
        ("redis://tokenonly@host", "redis://***@host"),
        (
            "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/2",
            "redis+sentinel://:***@s1:26379,s2:26379/mymaster/2",
        ),
        (
            "redis+sentinel://s1/m?sentinel_password=abc",
            "redis+sentinel://s1/m?sentinel_password=***",
        ),
        (
            "unix:///tmp/redis.sock?db=1&password=hunter2",
            "unix:///tmp/redis.sock?db=1&password=***",
        ),
        # unencoded ? # / @ in a password: urllib ends the user info early, we do not
        ("redis://:pa?ss@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:p@ss@host/0", "redis://user:***@host/0"),
        ("redis://:p/w#x@host", "redis://:***@host"),
        (
            "redis+sentinel://:pw?x@h1:26379,h2:26379/mymaster",
            "redis+sentinel://:***@h1:26379,h2:26379/mymaster",
        ),
        (
            "rediss://:s?c@host:6380/0?ssl_cert_reqs=none",
            "rediss://:***@host:6380/0?ssl_cert_reqs=none",
        ),
        ("unix://:pw@/tmp/redis.sock", "unix://:***@/tmp/redis.sock"),
        # secret query values, however the key is spelt, whatever the value holds
        ("redis://host/0?password=a@b&db=1", "redis://host/0?password=***&db=1"),
        ("redis://host?Pass%77ord=x&db=2", "redis://host?Pass%77ord=***&db=2"),
        (
            "redis+sentinel://s1/m?sentinel_password=a@b",
            "redis+sentinel://s1/m?sentinel_password=***",
        ),
        ("redis://host?password=a#b", "redis://host?password=***"),
        ("redis://:@host", "redis://:@host"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        # cluster URLs: every node in the host part, the password before them
        ("redis+cluster://h1:7000,h2:7001", "redis+cluster://h1:7000,h2:7001"),
        ("redis+cluster://:p@w/x@h1:7000,h2:7001/0", "redis+cluster://:***@h1:7000,h2:7001/0"),
        (
            "rediss+cluster://u:p?w#x@h1,h2?ssl_cert_reqs=none",
            "rediss+cluster://u:***@h1,h2?ssl_cert_reqs=none",
        ),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# Passwords as people write them into URLs, unencoded; each piece is distinctive, so any
# piece in the masked URL is a leak.
PASSWORDS = ["Xq7?Zk9", "Ab3#Cd4", "Ef5/Gh6", "Ij7@Kl8", "Mn9:Op0", "Qr1?St2#Uv3/Wx4@Yz5",
             "Pc%3FEnc%40", "Sp+Ace=Q1"]  # fmt: skip
USER_INFO_URLS = ["redis://:{pw}@127.0.0.1:6379/0", "redis://user:{pw}@cache.example.com/2",
                  "rediss://default:{pw}@host:25061?ssl_cert_reqs=none", "redis://:{pw}@host",
                  "unix://:{pw}@/tmp/redis.sock?db=1",
                  "redis+sentinel://:{pw}@s1:26379,s2:26379/mymaster/2",
                  "rediss+sentinel://u:{pw}@s1,s2/mymaster?sentinel_password=s-{pw}",
                  "redis+cluster://:{pw}@10.0.0.1:7000,10.0.0.2:7001",
                  "rediss+cluster://u:{pw}@h1,h2:7001/0?ssl_cert_reqs=none"]  # fmt: skip
QUERY_URLS = ["redis://host:6379/0?password={pw}", "redis://host/0?db=1&sentinel_password={pw}&x=1",
              "unix:///tmp/redis.sock?password={pw}", "password={pw}"]  # fmt: skip


def pieces(password: str) -> list[str]:
    return [p for p in re.split(r"[?#/@:+=%]", password) if len(p) >= 2] + [password]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("template", USER_INFO_URLS + QUERY_URLS)
def test_no_reading_of_a_url_shows_its_password(template: str, password: str) -> None:
    if template in QUERY_URLS and "#" in password:
        password = password.replace("#", "%23")  # a query value ends at # for everyone
    url = template.format(pw=password)
    masked = mask_url(url)
    secrets = url_secrets(url)

    # Then no piece of the password shows, raw or decoded
    for piece in {*pieces(password), *pieces(unquote(password))}:
        assert piece not in masked, (url, masked)
    assert password in secrets and unquote(password) in secrets
    # nor anything redis-py (urllib) would take for the password, or for a secret value
    parsed = urlparse(url)
    taken = [parsed.password or ""]
    taken += [v for k, vs in parse_qs(parsed.query).items() if "password" in k for v in vs]
    for value in filter(None, taken):
        assert value not in masked and value in secrets, (url, value)


def test_url_secrets_are_raw_and_decoded() -> None:
    secrets = url_secrets("redis://:p%40ss?x@h/0?sentinel_password=s%2Bp+q")
    assert {"p%40ss?x", "p@ss?x", "s%2Bp+q", "s+p q"} <= set(secrets)
    assert url_secrets("redis://user@host/0") == ["user"]  # a lone user part may be a token
    assert url_secrets("redis://host:6379/0?db=1") == []


def test_an_unparsable_url_is_refused_without_any_piece_of_its_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        connect("redis://:Xq7/Zk9@127.0.0.1:6379/0")  # urllib reads a port "Xq7"
    message = str(info.value)
    assert "Xq7" not in message and "Zk9" not in message
    assert message.startswith("bad Redis URL 'redis://:***@127.0.0.1:6379/0'")
    assert "percent-encode" in message and "\n" not in message


def test_url_resolution_order() -> None:
    env = {"ORBITER_REDIS_URL": "redis://orbiter", "REDIS_URL": "redis://heroku"}
    assert resolve_redis_url("redis://flag", env) == "redis://flag"
    assert resolve_redis_url(None, env) == "redis://orbiter"
    assert resolve_redis_url(None, {"REDIS_URL": "rediss://heroku"}) == "rediss://heroku"
    with pytest.raises(ConfigurationError, match="ORBITER_REDIS_URL"):
        resolve_redis_url(None, {})


def test_unknown_scheme_is_refused_without_showing_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_redis_url("http://:topsecret@host", {})
    assert "topsecret" not in str(info.value) and "redis+sentinel://" in str(info.value)
    assert "redis+cluster://" in str(info.value)


def test_sentinel_url_parts() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:pw@s1:26379,s2:26380,s3/mymaster/2")
    assert parsed.hosts == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert (parsed.master, parsed.db, parsed.password, parsed.ssl) == ("mymaster", 2, "pw", False)
    with pytest.raises(ConfigurationError, match="mastername"):
        parse_sentinel_url("redis+sentinel://s1:26379")
    # a password may hold ? # / @ unencoded; a query value may hold @
    odd = parse_sentinel_url("redis+sentinel://u:p?w#x/y@z@s1:1,s2/m/1?sentinel_password=a@b")
    assert (odd.username, odd.password, odd.sentinel_password) == ("u", "p?w#x/y@z", "a@b")
    assert (odd.hosts, odd.master, odd.db) == ((("s1", 1), ("s2", 26379)), "m", 1)
    with pytest.raises(ConfigurationError) as info:
        parse_sentinel_url("redis+sentinel://a:Xq7@s1:x/m")
    assert "Xq7" not in str(info.value)


def test_unreachable_redis_raises_a_clear_error() -> None:
    from orbiter_sync.connection import RetryPolicy

    producer = TaskProducer(
        f"redis://:pw@127.0.0.1:{free_port()}/0", retry=RetryPolicy(deadline=0.3)
    )
    with pytest.raises(RedisUnavailableError, match="unreachable after retrying") as info:
        producer.submit(TaskPayload(input="x"))
    assert "pw" not in str(info.value).replace("unreachable", "")


def test_unix_socket_url(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    with EmbeddedRedis(extra_args=("--unixsocket", str(sock), "--unixsocketperm", "700")):
        handle = distributed(
            {"entrypoint": "m:f"}, "over a socket", redis_url=f"unix://{sock}?db=0"
        )
        state = handle.status()
        assert state is not None and state.status == "pending"


def test_rediss_with_a_self_signed_certificate(tmp_path: Path) -> None:
    # Given a TLS Redis with a self-signed certificate, as Heroku runs
    key, cert = make_certificate(tmp_path)
    tls_port = free_port()
    tls = ("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
           "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")  # fmt: skip
    with EmbeddedRedis(extra_args=tls) as server:
        # When a client connects with ssl_cert_reqs=none
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=none"
        TaskProducer(url).submit(TaskPayload(task_id="over-tls", input="x"))
        # Then the task is there
        plain = redis.Redis(port=server.port, decode_responses=True)
        assert plain.hget("orbiter:task:over-tls", "status") == "pending"
        # and without it the certificate is refused
        from orbiter_sync.connection import RetryPolicy

        strict = TaskProducer(f"rediss://127.0.0.1:{tls_port}/0", retry=RetryPolicy(deadline=0.2))
        with pytest.raises((RedisUnavailableError, redis.ConnectionError)):
            strict.submit(TaskPayload(input="x"))


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, int]]:
    """A password-protected master watched by a real sentinel process."""
    with EmbeddedRedis(extra_args=("--requirepass", "masterpw")) as master:
        port = free_port()
        conf = tmp_path / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
            "sentinel auth-pass mymaster masterpw\n"
        )
        process = subprocess.Popen(
            [redis_server_binary(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            probe = redis.Redis(port=port, decode_responses=True)
            deadline = time.monotonic() + 10
            while True:
                try:
                    if probe.sentinel_get_master_addr_by_name("mymaster"):
                        break
                except redis.ConnectionError:
                    pass
                assert time.monotonic() < deadline, "sentinel did not start"
                time.sleep(0.05)
            yield master, port
        finally:
            process.kill()
            process.wait()


def test_sentinel_url_reaches_the_master(sentinel: tuple[EmbeddedRedis, int]) -> None:
    master, port = sentinel
    url = f"redis+sentinel://:masterpw@127.0.0.1:{port}/mymaster/0"

    handle = distributed({"entrypoint": "m:f"}, "via sentinel", redis_url=url)

    direct = redis.Redis(port=master.port, password="masterpw", decode_responses=True)
    assert direct.hget(f"orbiter:task:{handle.task_id}", "status") == "pending"
    assert direct.xlen("orbiter:tasks") == 1
    assert connect(url).ping()


# -- passwords on the command line ---------------------------------------------------------


def test_the_cli_never_shows_a_password_of_any_shape() -> None:
    # Given URLs whose passwords hold ? # / @ (and a secret query value), to a closed port
    port = free_port()
    urls = {
        "Xq7?Zk9": f"redis://:Xq7?Zk9@127.0.0.1:{port}/0",
        "Ij7@Kl8": f"redis://user:Ij7@Kl8@127.0.0.1:{port}/0",
        "Ef5/Gh6#Ab3": f"redis://:Ef5/Gh6#Ab3@127.0.0.1:{port}",
        "Mn9?Op0": f"redis+sentinel://:Mn9?Op0@127.0.0.1:{port},127.0.0.1:{port}/mymaster",
        "Qr1?St2": f"redis://127.0.0.1:{port}/0?password=Qr1?St2",
        "Uv3/Wx4": f"rediss://default:Uv3/Wx4@127.0.0.1:{port}/0",
        # refused for its /3 (the live and dead paths: test_cluster_connection.py)
        "Gh1/Jk2@Lm3": f"redis+cluster://:Gh1/Jk2@Lm3@127.0.0.1:{port},127.0.0.1:{port}/3",
    }
    env = {"PATH": str(Path(CLI).parent) + ":/usr/bin:/bin", "HOME": "/tmp"}
    # When `worker list` and `start worker` run on each (all at once: each waits on Redis)
    runs = [
        (password, subprocess.Popen([CLI, *args, "--redis-url", url], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for password, url in urls.items()
        for args in (["worker", "list"], ["start", "worker", "--concurrency", "1"])
    ]  # fmt: skip
    outputs: dict[str, list[str]] = {password: [] for password in urls}
    deadline = time.monotonic() + 8  # past the CLI's 5 s budget; a worker retries for 30 s
    for password, process in runs:
        try:
            out, err = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # a worker still retrying: it has said enough
            process.send_signal(signal.SIGKILL)
            out, err = process.communicate()
        outputs[password] += [out, err]
    # Then each shows its URL masked, and no piece of any password, anywhere
    for password, texts in outputs.items():
        everything = "\n".join(texts)
        assert "***" in everything, everything
        for piece in pieces(password):
            assert piece not in everything, (piece, everything)


# -- bytes that are not UTF-8 --------------------------------------------------------------


def test_bytes_that_are_not_utf8_read_as_surrogates_and_write_back_unchanged(
    redis_url: str,
) -> None:
    # Given bytes that are not UTF-8 in a hash, a stream entry, a string and a message
    assert HIREDIS_AVAILABLE  # the parser and packer redis[hiredis] installs are under test
    raw = redis.Redis.from_url(redis_url)  # no decoding
    data = b"\xff\xfe{"
    raw.hset("h", "f", data)
    raw.xadd("s", {"event": data})
    raw.set("k", data)
    client: Any = connect(redis_url)  # redis-py types replies for every decoding; this one is str
    subscriber = client.pubsub()
    subscriber.subscribe("c")
    wait_for(lambda: subscriber.get_message(timeout=0.1))  # the subscribe confirmation
    raw.publish("c", data)

    # When they are read through connect(): no exception, str with lone surrogates
    text = "\udcff\udcfe{"
    assert client.hgetall("h") == {"f": text}
    [(_, fields)] = client.xrange("s")
    assert fields == {"event": text}
    assert client.get("k") == text
    message: Any = wait_for(lambda: subscriber.get_message(timeout=0.1))
    assert message["data"] == text
    subscriber.close()

    # Then writing those str back through connect() stores the very same bytes
    client.set("k2", client.get("k"))
    client.hset("h2", "f", text)
    client.xadd("s2", {"event": fields["event"]})
    assert raw.get("k2") == data
    assert raw.hget("h2", "f") == data
    entries: Any = raw.xrange("s2")
    assert [fields for _, fields in entries] == [{b"event": data}]
    client.close()
    raw.close()
