"""The database engine: one place that opens, configures and versions the database.

SQLite by default (a path, or ``sqlite:///...``); any SQLAlchemy URL works. SQLite runs in WAL
mode with a busy timeout and foreign keys on, so a reader (the TUI) and a writer (a running
``ddsem influence``) can share a file without "database is locked".

Opening is careful with files that are not ours: an existing SQLite file is first inspected
through a read-only connection (``mode=ro``), and ddsem writes to it only when it is a ddsem
database of this schema or an older one (migrated in one transaction) or a new, empty file. A
file holding other tables, a ddsem-looking file without a schema version, a newer schema or a
database whose columns do not match its version are refused with one line, unchanged.

``readonly=True`` (the reading commands) opens SQLite with ``mode=ro``; a file this process
cannot write is opened that way too, so it can still be listed, and any write to it raises
"the database is read-only: PATH". A read-only file in a read-only folder without a ``-wal``
is opened ``immutable=1``, since no process can be writing it and SQLite could not create the
``-wal``/``-shm`` files a reader of a WAL database otherwise needs.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, inspect
from sqlalchemy import select as sa_select
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine, select

from ddsem.errors import UserError

SCHEMA_VERSION = 3
# The columns each version adds to existing tables (a new table needs no entry: it is created).
# An older database gets them, and the new version number, in one transaction when it is opened.
ADDED_COLUMNS: dict[int, list[tuple[str, str, str]]] = {
    2: [  # chance level and significance of every score (issue 14)
        ("attributescore", "chance_ap", "FLOAT"),
        ("attributescore", "p_value", "FLOAT"),
        ("attributescore", "q_value", "FLOAT"),
        ("attributescore", "draws", "INTEGER"),
    ],
    3: [  # approximate influence estimators beside exact LOO (issue 20)
        ("influencerun", "estimator", "VARCHAR NOT NULL DEFAULT 'loo'"),
    ],
}
# Tables whose unique constraints change in a version: SQLite cannot alter a constraint, so
# the table is rebuilt from its current definition (rows copied, foreign keys checked); a
# server database gets the old constraint dropped and the new one added.
REBUILT_TABLES: dict[int, list[str]] = {
    3: ["influencerun"],  # a run is (set, seed, context, estimator), no longer (set, seed, context)
}
DEFAULT_DB = "ddsem.db"
BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10  # a database server that does not answer: one line after this long
LIBPQ_DRIVERS = ("psycopg", "psycopg2")  # take libpq's connect_timeout and options
# The package to install for a driver module SQLAlchemy could not import.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "asyncpg": "asyncpg",
    "pg8000": "pg8000",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
}


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
        try:
            with open(path, "rb") as f:
                header = f.read(16)
        except OSError as e:
            raise UserError(f"cannot read the database {path}: {e.strerror or e}") from e
        if header != b"SQLite format 3\x00":
            raise UserError(f"{path} is not a SQLite database")
    elif not path.parent.exists():
        raise UserError(f"folder for the database does not exist: {path.parent}")


class Database:
    """An open database: ``with db.session() as s: ...`` for short transactions.

    ``readonly``: opened read-only (``mode=ro``); a write raises one UserError line."""

    def __init__(
        self, url: str, engine: Engine, *, readonly: bool = False, path: Path | None = None
    ) -> None:
        self.url = url
        self.engine = engine
        self.readonly = readonly
        self.path = path

    @property
    def where(self) -> str:
        """The file (SQLite) or the URL without its password, for messages."""
        return str(self.path) if self.path is not None else _safe(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on any exception."""
        with Session(self.engine, expire_on_commit=False) as s:
            try:
                yield s
                s.commit()
            except DBAPIError as e:
                s.rollback()
                if _is_readonly_error(e):
                    raise UserError(f"the database is read-only: {self.where}") from e
                raise
            except BaseException:
                s.rollback()
                raise

    def require_writable(self) -> None:
        """For a writing job to call before its work: one line when the database is read-only
        (otherwise the first write says so, after whatever was computed before it)."""
        if self.readonly:
            raise UserError(f"the database is read-only: {self.where}")

    def close(self) -> None:
        self.engine.dispose()


def _is_readonly_error(e: DBAPIError) -> bool:
    text = str(e.orig).lower()
    return "readonly database" in text or "read-only" in text or "read only" in text


def _safe(url: str | URL) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return str(url)


def _sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database or a URI the user wrote."""
    name = url.database or ""
    if name in ("", ":memory:") or name.startswith("file:") or url.query.get("uri"):
        return None
    return Path(name)


def _dir_writable(path: Path) -> bool:
    return os.access(path.parent if str(path.parent) else Path("."), os.W_OK)


def _writable(path: Path) -> bool:
    """Whether SQLite could write ``path``: the file, and its folder (the -wal and -shm files)
    or -wal and -shm files already there. ``os.access`` also answers for root (a read-only
    mount, an immutable file)."""
    if not os.access(path, os.W_OK):
        return False
    if _dir_writable(path):
        return True
    return all(os.access(f"{path}{suffix}", os.W_OK) for suffix in ("-wal", "-shm"))


def _has_pending_wal(path: Path) -> bool:
    wal = Path(f"{path}-wal")
    return wal.is_file() and wal.stat().st_size > 0


def _sqlite_engine(url: URL, path: Path, mode: str) -> Engine:
    """``mode``: rw (WAL, created if missing), ro (``mode=ro``) or immutable (read-only media)."""
    timeout = BUSY_TIMEOUT_MS / 1000
    if mode == "rw":
        engine = create_engine(url, connect_args={"timeout": timeout, "check_same_thread": False})
    else:
        query = "mode=ro" + ("&immutable=1" if mode == "immutable" else "")
        uri = f"{path.absolute().as_uri()}?{query}"

        def creator() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)

        engine = create_engine(url, creator=creator)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # noqa: ANN001
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # first: the WAL switch waits too
        if mode == "rw":
            _switch_to_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


def _server_engine(url: URL, readonly: bool) -> Engine:
    """An engine for a database server; a missing driver is one line naming its package."""
    libpq = url.get_backend_name() == "postgresql" and url.get_driver_name() in LIBPQ_DRIVERS
    connect_args: dict[str, Any] = {}
    if (libpq or url.get_driver_name() in ("pymysql", "mysqldb")) and (
        "connect_timeout" not in url.query
    ):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    if libpq:
        # timestamps are stored as UTC without a zone (as on SQLite): the session's zone must
        # be UTC, or an aware datetime is written shifted to the server's local time
        options = ["-c timezone=UTC"]
        if readonly:  # the server refuses writes: "cannot execute ... read-only"
            options.append("-c default_transaction_read_only=on")
        connect_args["options"] = " ".join(options)
    try:
        return create_engine(url, connect_args=connect_args)
    except ModuleNotFoundError as e:
        module = (e.name or "").split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        raise UserError(
            f"{url.drivername}:// needs the Python package {package}, which is not installed: "
            f"pip install '{package}'"
        ) from None


def _address(url: URL) -> str:
    host = url.host or "localhost"
    return f"{host}:{url.port}" if url.port else host


def _parse(url_text: str) -> URL:
    try:
        url = make_url(url_text)
    except ArgumentError:
        raise UserError(f"not a database path or URL: {url_text}") from None
    try:
        url.get_dialect()
    except NoSuchModuleError:
        scheme = url_text.split("://", 1)[0]
        raise UserError(
            f"unknown database URL scheme {scheme!r} in {_safe(url_text)}: use a file path, "
            "sqlite:///PATH or a SQLAlchemy URL such as postgresql://USER@HOST/DB"
        ) from None
    except ModuleNotFoundError:
        pass  # the driver: named when the engine is made
    return url


# -- what a database holds -------------------------------------------------------------------------


def _state(engine: Engine) -> tuple[str, int | None, list[str]]:
    """(kind, version, problems): kind is new | ddsem | unversioned | foreign; problems lists
    the columns that do not match ddsem's tables (empty when they match)."""
    from ddsem.db import tables

    inspector = inspect(engine)
    names = set(inspector.get_table_names()) | set(inspector.get_view_names())
    ours = set(SQLModel.metadata.tables)
    if not names:
        return "new", None, []
    if not names & ours or ("meta" not in names and not names <= ours):
        return "foreign", None, sorted(names)
    version: int | None = None
    if "meta" in names:
        columns = {c["name"] for c in inspector.get_columns("meta")}
        if not {"key", "value"} <= columns:
            return "foreign", None, sorted(names)
        with Session(engine) as s:
            row = s.exec(select(tables.Meta).where(tables.Meta.key == "schema_version")).first()
        if row is not None:
            try:
                version = int(row.value)
            except ValueError:
                return "unversioned", None, [f"schema_version {row.value!r}"]
    if version is None:
        # created but never stamped (a crash between the tables and the version, before this
        # version made both one transaction): safe to take over only while it holds nothing
        empty = names <= ours and all(_empty(engine, t) for t in names)
        if empty and not _column_problems(inspector, names, 0):
            return "new", None, []
        return "unversioned", None, sorted(names)
    if version > SCHEMA_VERSION:
        return "ddsem", version, []
    return "ddsem", version, _column_problems(inspector, names & ours, version)


def _column_problems(inspector: Any, names: set[str], version: int) -> list[str]:
    """How ddsem's tables in the database differ from ``version``'s: missing columns (other
    than those a migration adds) and unknown columns a row could not be written without."""
    added = {
        (t, c)
        for step in range(version + 1, SCHEMA_VERSION + 1)
        for t, c, _ in ADDED_COLUMNS.get(step, [])
    }
    problems = []
    for name in sorted(names):
        present = {c["name"]: c for c in inspector.get_columns(name)}
        expected = SQLModel.metadata.tables[name].columns
        missing = [
            c.name for c in expected if c.name not in present and (name, c.name) not in added
        ]
        if missing:
            problems.append(f"table {name} lacks column(s) {', '.join(missing)}")
        extra = [
            n
            for n, c in present.items()
            if n not in expected and not c["nullable"] and c.get("default") is None
        ]
        if extra:
            problems.append(f"table {name} has unknown required column(s) {', '.join(extra)}")
    return problems


def _empty(engine: Engine, table: str) -> bool:
    tbl = SQLModel.metadata.tables[table]
    with engine.connect() as conn:
        return conn.execute(sa_select(func.count()).select_from(tbl)).scalar_one() == 0


def _needs_write(engine: Engine, kind: str, version: int | None) -> str | None:
    """What opening must write first: "create" (new), "upgrade" (an older version), "tables"
    (tables added since the file was made, under the same version), or None."""
    if kind == "new":
        return "create"
    if version is not None and version < SCHEMA_VERSION:
        return "upgrade"
    if not set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names()):
        return "tables"
    return None


def _refuse(kind: str, version: int | None, problems: list[str], where: str) -> None:
    if kind == "foreign":
        shown = ", ".join(problems[:5]) + (", ..." if len(problems) > 5 else "")
        raise UserError(
            f"{where} is not a ddsem database (it holds other tables: {shown}); ddsem will not "
            "add its tables to it: pass another --db"
        )
    if kind == "unversioned":
        raise UserError(
            f"{where} has ddsem tables but no schema version (not written by ddsem, or "
            "damaged); refusing to open it"
        )
    if version is not None and version > SCHEMA_VERSION:
        raise UserError(
            f"this database has schema version {version}, newer than this ddsem "
            f"understands ({SCHEMA_VERSION}); upgrade ddsem"
        )
    if problems:
        raise UserError(
            f"{where} does not match schema {version}: {'; '.join(problems)} (written by "
            "another ddsem build, or altered by hand); refusing to open it"
        )


CREATED_BY = " (a command that stores work creates it: `ddsem distill`, `ddsem sets import`, ...)"


def open_db(
    db: str | os.PathLike | None = None, *, create: bool = True, readonly: bool = False
) -> Database:
    """Open (and create or upgrade) the database; refuse a foreign, unversioned, mismatched or
    newer one. ``create=False``: an existing ddsem database only. ``readonly``: open it
    read-only (an old database is still migrated first when the file is writable)."""
    from ddsem.db import tables  # noqa: F401  (registers every table on SQLModel.metadata)

    url_text = resolve_url(db)
    url = _parse(url_text)
    is_sqlite = url.get_backend_name() == "sqlite"
    path = _sqlite_file(url) if is_sqlite else None
    if path is not None:
        _check_sqlite_file(f"sqlite:///{path}")
    where = str(path) if path is not None else _safe(url_text)
    exists = path is not None and path.exists() and path.stat().st_size > 0
    writable = path is None or (_writable(path) if path.exists() else _dir_writable(path))
    if path is not None and not exists:
        if not create or readonly:
            raise UserError(f"no ddsem database at {where}{CREATED_BY}")
        if not writable:
            raise UserError(f"cannot create the database {path}: its folder is read-only")

    def read_mode() -> str:
        if path is not None and not _dir_writable(path) and not _has_pending_wal(path):
            return "immutable"
        return "ro"

    def engine_for(mode: str) -> Engine:
        if path is not None:
            return _sqlite_engine(url, path, mode)
        if is_sqlite:  # in memory, or a URI given as it is
            return create_engine(url, connect_args={"check_same_thread": False})
        return _server_engine(url, readonly=mode != "rw")

    # look through a read-only connection first: nothing is written to a file that is not ours.
    # Without a -wal file no writer has the database open and every commit is in the file, so
    # it is read as immutable and no -wal/-shm is left beside a file that is then refused.
    if exists:
        mode = "immutable" if not Path(f"{path}-wal").exists() else read_mode()
    else:
        mode = "ro" if readonly and path is None else "rw"
    engine = engine_for(mode)
    try:
        if path is None and not is_sqlite:
            _connect_or_refuse(engine, url, where)
        kind, version, problems = ("new", None, []) if path is not None and not exists else (
            _state(engine)
        )  # fmt: skip
        if kind == "new" and not create:
            raise UserError(f"no ddsem database at {where}{CREATED_BY}")
        _refuse(kind, version, problems, where)
        need = _needs_write(engine, kind, version)
        if need == "tables" and not writable:
            need = None  # read as it is: a reader has no use for the newer (job) tables
        if need is not None:
            if not writable:
                change = "created" if need == "create" else f"upgraded to version {SCHEMA_VERSION}"
                raise UserError(
                    f"the database is read-only: {where} (its schema must be {change} first: "
                    "open it once with write access)"
                )
            if mode != "rw":
                engine.dispose()
                mode, engine = "rw", engine_for("rw")
            _upgrade(engine, version, is_sqlite)
        final_readonly = readonly or not writable
        final_mode = read_mode() if final_readonly else "rw"
        if final_mode != mode:
            engine.dispose()
            mode, engine = final_mode, engine_for(final_mode)
        with engine.connect():
            pass  # rw: the file switches to WAL now; ro: a failure shows now, not mid-command
        return Database(url_text, engine, readonly=final_readonly, path=path)
    except UserError:
        engine.dispose()
        raise
    except DBAPIError as e:
        engine.dispose()
        reason = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e)
        if path is not None and not _dir_writable(path) and "unable to open" in reason:
            raise UserError(
                f"cannot read {path}: its folder is read-only and its write-ahead log "
                f"{path}-wal holds changes not yet merged; copy the database with its -wal and "
                "-shm files to a writable folder"
            ) from None
        raise UserError(f"cannot open database {where}: {reason}") from e
    except SQLAlchemyError as e:
        engine.dispose()
        raise UserError(f"cannot open database {where}: {e}") from e


def _connect_or_refuse(engine: Engine, url: URL, where: str) -> None:
    """One line naming the address when a database server cannot be reached."""
    try:
        with engine.connect():
            pass
    except DBAPIError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e)
        raise UserError(
            f"cannot connect to the database server at {_address(url)} ({where}): {reason}"
        ) from None


def _upgrade(engine: Engine, version: int | None, is_sqlite: bool) -> None:
    """Create a new database, or bring one of an older schema ``version`` to ``SCHEMA_VERSION``,
    in one transaction: the missing tables, the columns added since (``ADDED_COLUMNS``; NULL in
    existing rows), then the version."""
    from ddsem.db import tables

    meta = tables.Meta.__table__
    start = version or 0  # new, or created unstamped: any missing added column
    steps = range(start + 1, SCHEMA_VERSION + 1)
    rebuild = [t for step in steps for t in REBUILT_TABLES.get(step, [])]
    with engine.connect() as conn:
        try:
            if is_sqlite:
                if rebuild:  # a rebuild drops a parent table: no cascade may run meanwhile
                    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                # pysqlite opens no transaction before DDL: open it here, taking the write
                # lock at once, so that processes creating the same new database wait for
                # each other (busy timeout) instead of failing to upgrade a read lock
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            existing = set(inspect(conn).get_table_names())
            SQLModel.metadata.create_all(conn)
            inspector = inspect(conn)
            present = {
                t: {c["name"] for c in inspector.get_columns(t)}
                for t in inspector.get_table_names()
            }
            for step in range(start + 1, SCHEMA_VERSION + 1):
                for table, column, sql_type in ADDED_COLUMNS.get(step, []):
                    if column not in present.get(table, set()):
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
            for table in rebuild:
                if table in existing:  # a table created just now has its new constraints
                    _rebuild(conn, table, is_sqlite)
            found = conn.execute(
                sa_select(meta.c.key).where(meta.c.key == "schema_version")
            ).first()
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
        finally:
            if is_sqlite and rebuild:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")


def _rebuild(conn: Any, name: str, is_sqlite: bool) -> None:
    """Give an existing table the unique constraints of its current definition, keeping its
    rows (inside the upgrade's transaction)."""
    from sqlalchemy import UniqueConstraint
    from sqlalchemy.schema import AddConstraint, CreateIndex, CreateTable

    table = SQLModel.metadata.tables[name]
    wanted = [c for c in table.constraints if isinstance(c, UniqueConstraint)]
    if not is_sqlite:
        for old in inspect(conn).get_unique_constraints(name):
            conn.exec_driver_sql(f'ALTER TABLE {name} DROP CONSTRAINT "{old["name"]}"')
        for constraint in wanted:
            conn.execute(AddConstraint(constraint))
        return
    # SQLite's procedure (sqlite.org/lang_altertable.html, "other kinds of table schema
    # changes"): new table, copy, drop the old, rename, indexes, foreign_key_check
    ddl = str(CreateTable(table).compile(dialect=conn.dialect))
    head = f"CREATE TABLE {name} ("
    assert head in ddl, ddl
    conn.exec_driver_sql(ddl.replace(head, f"CREATE TABLE {name}_rebuilt (", 1))
    columns = ", ".join(c.name for c in table.columns)
    conn.exec_driver_sql(f"INSERT INTO {name}_rebuilt ({columns}) SELECT {columns} FROM {name}")
    conn.exec_driver_sql(f"DROP TABLE {name}")
    conn.exec_driver_sql(f"ALTER TABLE {name}_rebuilt RENAME TO {name}")
    for index in table.indexes:
        conn.execute(CreateIndex(index))
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise UserError(f"upgrading {name} would break {len(broken)} foreign keys; unchanged")


def database_files(db: Database | str) -> tuple[Path, ...]:
    """The resolved paths of a SQLite database and its side files (``-wal``, ``-shm``,
    ``-journal``), which no export may write over; empty for in-memory and other databases."""
    urls: list[str | URL] = [db] if isinstance(db, str) else [db.url, db.engine.url]
    found: list[Path] = []
    for url in urls:
        try:
            parsed = make_url(url) if isinstance(url, str) else url
        except ArgumentError:
            continue
        if parsed.get_backend_name() != "sqlite":
            continue
        name = (parsed.database or "").removeprefix("file:").split("?")[0]
        if not name or name == ":memory:" or parsed.query.get("mode") == "memory":
            continue
        path = Path(name).expanduser().resolve()
        for f in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
            if f not in found:
                found.append(f)
    return tuple(found)


def _switch_to_wal(cur) -> None:  # noqa: ANN001  (a DB-API cursor)
    """WAL mode, once per file. SQLite does not wait on its busy timeout for the switch itself,
    so processes opening one new database at once retry it briefly instead of failing."""
    import sqlite3
    import time

    for attempt in range(100):
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == 99:
                raise
            time.sleep(0.05)
