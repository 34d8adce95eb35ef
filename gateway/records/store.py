"""Open the store a `[store]` section names."""

from __future__ import annotations

from pathlib import Path

from gateway.records.config import StoreSettings, sqlite_path
from gateway.records.model import RecordStore
from gateway.records.postgres import PostgresStore
from gateway.records.sqlite import SQLiteStore


def open_store(settings: StoreSettings, base_dir: Path) -> RecordStore:
    """The store object; it connects (and creates or migrates its schema) on first use,
    so a database that is down at startup does not stop the gateway."""
    if settings.kind == "sqlite":
        return SQLiteStore(sqlite_path(settings.url, base_dir), settings.retention_days)
    return PostgresStore(settings.url, settings.retention_days)
