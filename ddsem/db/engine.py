"""The database engine: one place that opens, configures and versions the database.

SQLite by default (a path, or ``sqlite:///...``); any SQLAlchemy URL works. SQLite runs in WAL
mode with a busy timeout and foreign keys on, so a reader (the TUI) and a writer (a running
``ddsem influence``) can share a file without "database is locked".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Session, SQLModel, create_engine, select

from ddsem.errors import UserError

SCHEMA_VERSION = 2
# The columns each version adds to existing tables (a new table needs no entry: it is created).
# An older database gets them, and the new version number, in one transaction when it is opened.
ADDED_COLUMNS: dict[int, list[tuple[str, str, str]]] = {
    2: [  # chance level and significance of every score (issue 14)
        ("attributescore", "chance_ap", "FLOAT"),
        ("attributescore", "p_value", "FLOAT"),
        ("attributescore", "q_value", "FLOAT"),
        ("attributescore", "draws", "INTEGER"),
    ],
}
DEFAULT_DB = "ddsem.db"
BUSY_TIMEOUT_MS = 30_000


def resolve_url(db: str | os.PathLike | None = None) -> str:
    """``--db`` value, else ``$DDSEM_DB``, else ``./ddsem.db``; plain paths become sqlite URLs."""
    value = str(db) if db else os.environ.get("DDSEM_DB") or DEFAULT_DB
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser()}"


def _check_sqlite_file(url: str) -> None:
    if not url.startswith("sqlite:///"):
        return
    path = Path(url.removeprefix("sqlite:///"))
    if path.is_dir():
        raise UserError(f"database path is a folder: {path}")
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise UserError(f"{path} is not a SQLite database")
    elif not path.parent.exists():
        raise UserError(f"folder for the database does not exist: {path.parent}")


class Database:
    """An open database: ``with db.session() as s: ...`` for short transactions."""

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on any exception."""
        with Session(self.engine, expire_on_commit=False) as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()


def open_db(db: str | os.PathLike | None = None, *, create: bool = True) -> Database:
    """Open (and create or upgrade) the database; refuse one written by a newer ddsem."""
    from ddsem.db import tables  # noqa: F401  (registers every table on SQLModel.metadata)

    url = resolve_url(db)
    _check_sqlite_file(url)
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        if is_sqlite
        else {},
    )
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    try:
        existing = set(inspect(engine).get_table_names())
        version: int | None = None  # None: a new database
        if "meta" in existing:
            with Session(engine) as s:
                row = s.exec(select(tables.Meta).where(tables.Meta.key == "schema_version")).first()
                version = int(row.value) if row else 0
            if version > SCHEMA_VERSION:
                raise UserError(
                    f"this database has schema version {version}, newer than this ddsem "
                    f"understands ({SCHEMA_VERSION}); upgrade ddsem"
                )
        if not create and not existing:
            raise UserError(f"no ddsem database at {url}")
        SQLModel.metadata.create_all(engine)
        if version is not None and version < SCHEMA_VERSION:
            _upgrade(engine, version, is_sqlite)
        else:
            with Session(engine) as s:
                row = s.get(tables.Meta, "schema_version")
                if row is None:
                    s.add(tables.Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                    s.commit()
    except (DatabaseError, OperationalError) as e:
        engine.dispose()
        raise UserError(f"cannot open database {url}: {e.orig if hasattr(e, 'orig') else e}") from e
    except UserError:
        engine.dispose()
        raise
    return Database(url, engine)


def _upgrade(engine: Engine, version: int, is_sqlite: bool) -> None:
    """Bring a database of an older schema ``version`` to ``SCHEMA_VERSION`` in one transaction:
    the columns added since (``ADDED_COLUMNS``; NULL in existing rows), then the version."""
    from ddsem.db import tables

    inspector = inspect(engine)
    present = {
        t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()
    }
    meta = tables.Meta.__table__
    with engine.connect() as conn:
        try:
            if is_sqlite:  # pysqlite opens no transaction before DDL: open it here
                conn.exec_driver_sql("BEGIN")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for table, column, sql_type in ADDED_COLUMNS.get(step, []):
                    if column not in present.get(table, set()):
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
            found = conn.execute(select(meta.c.key).where(meta.c.key == "schema_version")).first()
            if found is None:
                conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            else:
                conn.execute(
                    meta.update()
                    .where(meta.c.key == "schema_version")
                    .values(value=str(SCHEMA_VERSION))
                )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
