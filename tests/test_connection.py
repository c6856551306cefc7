import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import make_certificate

from orbiter_sync import TaskPayload, TaskProducer, distributed
from orbiter_sync.connection import connect, mask_url, parse_sentinel_url, resolve_redis_url
from orbiter_sync.embedded import EmbeddedRedis, free_port, redis_server_binary
from orbiter_sync.errors import ConfigurationError, RedisUnavailableError


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
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


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


def test_sentinel_url_parts() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:pw@s1:26379,s2:26380,s3/mymaster/2")
    assert parsed.hosts == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert (parsed.master, parsed.db, parsed.password, parsed.ssl) == ("mymaster", 2, "pw", False)
    with pytest.raises(ConfigurationError, match="mastername"):
        parse_sentinel_url("redis+sentinel://s1:26379")


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
