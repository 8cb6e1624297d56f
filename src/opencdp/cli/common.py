"""What every command group shares: the consoles, reading the settings, turning an error into an exit."""

from __future__ import annotations

import typer
from rich.console import Console

from opencdp.config import Settings
from opencdp.errors import OpenCDPError

console = Console()
err = Console(stderr=True)


def load_settings() -> Settings:
    """The settings, or exit 2 with pydantic's account of which one is wrong."""
    try:
        return Settings()
    except Exception as error:  # pydantic reports which setting is wrong
        err.print(f"[red]configuration error:[/red] {error}")
        raise typer.Exit(2) from None


def fail(error: OpenCDPError) -> typer.Exit:
    """Print an error with the field it names; the caller raises the returned exit (status 1)."""
    where = f" ({error.field})" if error.field else ""
    err.print(f"[red]error{where}:[/red] {error.detail}")
    return typer.Exit(1)
