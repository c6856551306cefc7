"""A private ``redis-server`` on a free port, for the demo and the tests.

It can be stopped, killed and started again on the same port and directory, so
tests can pull Redis out from under a running worker.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from orbiter_sync.errors import EmbeddedRedisError

INSTALL_HINT = (
    "redis-server was not found on PATH; install it (Debian/Ubuntu: apt-get install "
    "redis-server, macOS: brew install redis)"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise EmbeddedRedisError(INSTALL_HINT)
    return binary


class EmbeddedRedis:
    """One redis-server process in a temporary directory.

    ``appendonly=True`` keeps data across :meth:`kill` / :meth:`start`, the way a
    production Redis with AOF does; without it a restart comes back empty.
    ``extra_args`` go to the command line as they are (TLS settings, say). ``debug=True``
    enables the ``DEBUG`` command (Redis 7), so tests can hang the server (``DEBUG SLEEP``).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: tuple[str, ...] = (),
        directory: str | None = None,
        debug: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = (*extra_args, *(("--enable-debug-command", "yes") if debug else ()))
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="orbiter-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start (or restart) the server and wait until it answers PING."""
        if self.running:
            return self
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process.poll() is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited with {self.process.returncode} on port {self.port}: "
                        f"{self.log_tail()}"
                    )
                try:
                    if probe.ping():
                        return self
                except redis.AuthenticationError:
                    return self  # it answered: it wants a password (--requirepass)
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise EmbeddedRedisError(
                        f"redis-server on port {self.port} did not answer PING"
                    )
                time.sleep(0.02)
        finally:
            probe.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.directory / "redis.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
