"""Versioned schema migrations: `<dialect>/NNNN_name.sql`, applied in order, each once."""

from __future__ import annotations

from importlib import resources


def migration_files(dialect: str) -> list[tuple[int, str]]:
    """(version, sql) for every migration of `dialect`, oldest first."""
    folder = resources.files(__package__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)
