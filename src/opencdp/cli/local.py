"""Reach the store from the CLI: directly, or through the running server that holds it.

The embedded store admits one writing process. While `opencdp serve` runs, it
writes ``server.json`` (mode 0600) into the data directory with its URL and a
token valid for its lifetime; CLI commands then go through its admin API.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opencdp.config import Settings
from opencdp.errors import StoreLockedError, TerminalError
from opencdp.storage.base import Backend


def server_file(settings: Settings) -> Path:
    return settings.data_dir / "server.json"


def write_server_file(settings: Settings, url: str, token: str) -> None:
    path = server_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, handle)


def remove_server_file(settings: Settings) -> None:
    server_file(settings).unlink(missing_ok=True)


class ServerClient:
    """Minimal admin-API client for a server running on this machine."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json") -> Any:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=3600) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read()).get("detail", error.reason)
            except ValueError:
                detail = error.reason
            raise TerminalError(f"server answered {error.code}: {detail}") from None


def running_server(settings: Settings) -> ServerClient | None:
    path = server_file(settings)
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return None  # stale file from a server that died
    except PermissionError:
        pass
    return ServerClient(info["url"], info["token"])


@contextmanager
def store_or_server(settings: Settings) -> Iterator[Backend | ServerClient]:
    """The store itself if free, else a client of the server holding it."""
    from opencdp.storage import open_backend

    try:
        backend = open_backend(settings)
    except StoreLockedError:
        client = running_server(settings)
        if client is None:
            raise
        yield client
        return
    try:
        yield backend
    finally:
        backend.close()
