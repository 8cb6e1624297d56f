"""A real ``opencdp serve`` process for end-to-end tests.

The server runs as a subprocess on 127.0.0.1 with its own data directory, exactly as
an operator would start it (``opencdp init`` once, then ``opencdp serve --dev-keys``);
tests talk HTTP to it, kill it, restart it on the same directory, and finally read
the store file directly once the server has stopped.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from opencdp.storage.duckdb import DuckDBBackend

HOST = "127.0.0.1"
_CLI = [sys.executable, "-m", "opencdp.cli.main"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def basic(write_key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}


def _environment(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCDP_")}
    env["OPENCDP_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    """One ``opencdp serve`` process; ``restart`` starts a new one on the same data directory."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    write_key: str = ""
    admin_key: str = ""
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "server.log"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "opencdp.duckdb"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        assert self.process is None or self.process.poll() is not None, "already running"
        environment = _environment(self.data_dir, self.env)
        cwd = self.data_dir.parent  # keep a stray opencdp.toml in the working directory out
        if self.starts == 0:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run([*_CLI, "init"], env=environment, cwd=cwd, check=True, capture_output=True, timeout=timeout)
        self.port = free_port()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*_CLI, "serve", "--dev-keys", "--port", str(self.port)],
                env=environment,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        self._wait_healthy(timeout)
        credentials = json.loads((self.data_dir / "credentials.json").read_text())
        self.write_key, self.admin_key = credentials["write_key"], credentials["admin_key"]
        return self

    def _wait_healthy(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def status(self) -> dict[str, Any]:
        response = httpx.get(
            self.url + "/api/v1/status", headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=30
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_drained(self, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the status until the loader has stored everything acknowledged."""
        deadline = time.monotonic() + timeout
        while True:
            ingest: dict[str, Any] = self.status()["ingest"]
            if ingest["lag_bytes"] == 0 and ingest["queued_bytes"] == 0:
                return ingest
            if time.monotonic() > deadline:
                raise AssertionError(f"loader still {ingest['lag_bytes']} bytes behind after {timeout} s: {ingest}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM: graceful shutdown (the loader drains, the store closes)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server ignored SIGTERM for {timeout} s:\n{self.log_tail()}") from None
        # uvicorn re-raises the signal once it has shut down gracefully, hence -SIGTERM.
        assert self.process.returncode in (0, -signal.SIGTERM), f"exit code {self.process.returncode}:\n{self.log_tail()}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @contextmanager
    def store(self) -> Iterator[DuckDBBackend]:
        """The store file, read-only; only while no server holds it."""
        assert self.process is None or self.process.poll() is not None, "stop the server first"
        backend = DuckDBBackend(self.store_path, read_only=True)
        try:
            yield backend
        finally:
            backend.close()


@contextmanager
def running_server(data_dir: Path, **env: str) -> Iterator[ServerProcess]:
    server = ServerProcess(data_dir, env=dict(env)).start()
    try:
        yield server
    finally:
        server.kill()
