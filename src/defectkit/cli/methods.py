"""``defectkit methods``: what the registry holds."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from defectkit.registry import list_methods


def methods() -> None:
    """List the registered methods: tasks, supervision levels, profiles and paper."""
    table = Table(title="defectkit methods")
    for column in ("method", "tasks", "supervision", "profiles", "paper"):
        table.add_column(column)
    registered = list_methods()
    for info in registered:
        table.add_row(
            info.name,
            ", ".join(info.tasks),
            ", ".join(info.supervision),
            ", ".join(info.profiles),
            info.paper or "",
        )
    console = Console()
    console.print(table)
    if not registered:
        console.print("no methods registered yet")
