"""The only code that reads or writes the database (SQLModel over SQLite or any SQLAlchemy URL).

Compute modules never import this package; the CLI and the TUI call these functions.
"""

from ddsem.db.engine import SCHEMA_VERSION, Database, open_db, resolve_url

__all__ = ["SCHEMA_VERSION", "Database", "open_db", "resolve_url"]
