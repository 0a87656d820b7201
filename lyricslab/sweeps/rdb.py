"""Optuna studies in a database (`storage=postgresql+psycopg://...`, `sqlite:///...`): checked before use.

Without a check, a missing driver, a server that is down, a database that does not exist or a
wrong password each surface as a 35- to 125-line SQLAlchemy traceback from deep inside Optuna.
`check_connection` opens one connection up front and turns each of these into one line that
names the fix. `open_storage` then builds Optuna's RDBStorage with connections that survive
hour-long trials: idle connections are dropped by servers and firewalls (optuna#5600), so each
is tested before use and replaced after five minutes.
"""

from __future__ import annotations

import re
from typing import Any

from lyricslab.sweeps.space import SpaceError

# pool_pre_ping: test a pooled connection before use; pool_recycle: never hand out one older than 300 s.
ENGINE_KWARGS = {"pool_pre_ping": True, "pool_recycle": 300}
CONNECT_TIMEOUT_S = 10
EXAMPLE = "postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE"
POSTGRES_EXTRA = "pip install 'lyricslab[postgres]'"
# The module SQLAlchemy imports for a driver -> how to install it.
DRIVER_INSTALL = {
    "psycopg": f"{POSTGRES_EXTRA} (psycopg 3)",
    "psycopg2": f"use postgresql+psycopg://... after {POSTGRES_EXTRA}, or pip install psycopg2-binary",
    "asyncpg": f"Optuna needs a blocking driver: use postgresql+psycopg://... after {POSTGRES_EXTRA}",
    "pg8000": "pip install pg8000",
    "pymysql": "pip install pymysql",
    "MySQLdb": "pip install mysqlclient, or use mysql+pymysql://... after pip install pymysql",
}
UNREACHABLE = ("connection refused", "could not connect", "timeout expired", "timed out", "failed to resolve host",
               "name or service not known", "could not translate host name", "no route to host",
               "network is unreachable", "server closed the connection", "can't connect")
BAD_LOGIN = ("password authentication failed", "no password supplied", "authentication failed", "access denied",
             "no pg_hba.conf entry")


class StorageError(SpaceError):
    """The storage URL cannot be used; the message names the fix.

    A SpaceError so the sweep's command line, which already prints those as one `error:` line,
    reports it the same way.
    """


def shown_url(url: str | None) -> str:
    """The URL as it may be printed or logged: its password as ***."""
    if not is_rdb_url(url):
        return str(url or "journal")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def hide_passwords(text: str, *urls: str | None) -> str:
    """`text` with the password of each URL (and of any user:password@ in it) replaced by ***."""
    for url in urls:
        if is_rdb_url(url):
            text = text.replace(url, shown_url(url))
    return re.sub(r"(://[^:/@\s]+:)[^@\s]*@", r"\1***@", text)


def is_rdb_url(url: str | None) -> bool:
    """Anything that is not a journal file (`journal`, `journal:PATH` or unset) is a database URL."""
    return bool(url) and url != "journal" and not url.startswith("journal:")


def check_connection(url: str, timeout_s: int = CONNECT_TIMEOUT_S) -> None:
    """Open (and close) one connection to `url`; raise StorageError with the fix if that fails."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
    from sqlalchemy.pool import NullPool

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"storage={url!r} is neither a database URL nor journal:PATH; use e.g. {EXAMPLE}, "
                           f"sqlite:///mlruns/optuna.db or journal:mlruns/optuna/study.log") from None
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    connect_args = {"connect_timeout": timeout_s} if backend in ("postgresql", "mysql", "mariadb") else {}
    try:
        engine = sqlalchemy.create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    except NoSuchModuleError:
        raise StorageError(f"storage={shown}: SQLAlchemy knows no database {parsed.drivername!r}; use e.g. {EXAMPLE} "
                           f"or sqlite:///PATH") from None
    except ImportError as err:
        module = err.name or parsed.get_driver_name()
        fix = DRIVER_INSTALL.get(module, f"install the Python package that provides {module!r}")
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StorageError(f"storage={shown}: the database driver is not installed ({first}); {fix}") from None
    try:
        with engine.connect():
            pass
    except DBAPIError as err:
        raise StorageError(_explain(parsed, shown, err)) from None
    finally:
        engine.dispose()


def _explain(parsed: Any, shown: str, err: Exception) -> str:
    """One line for a failed connection: what went wrong and what to change."""
    detail = " ".join(str(getattr(err, "orig", None) or err).split())
    text = detail.lower()
    default_port = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}.get(parsed.get_backend_name(), "")
    where = f"{parsed.host or 'localhost'}:{parsed.port or default_port}"
    if parsed.get_backend_name() == "sqlite":
        return (f"storage={shown}: cannot open the SQLite file {parsed.database!r} ({detail}); "
                f"check that its folder exists and is writable")
    if "does not exist" in text and "database" in text:
        return (f"storage={shown}: database {parsed.database!r} does not exist on {where}; create it "
                f"(createdb -h {parsed.host} -p {parsed.port or 5432} -U {parsed.username} {parsed.database}) "
                f"or fix the name at the end of the URL")
    if any(s in text for s in BAD_LOGIN) or ("role" in text and "does not exist" in text):
        return (f"storage={shown}: the server at {where} refused user {parsed.username!r} (wrong user or password); "
                f"fix USER:PASSWORD in the URL (scripts/services.sh status prints the local one)")
    if any(s in text for s in UNREACHABLE):
        reason = next(s for s in UNREACHABLE if s in text)
        return (f"storage={shown}: cannot reach the database server at {where} ({reason}); "
                f"start it (make services) or fix the host and port in the URL")
    return f"storage={shown}: cannot connect ({detail[:300]})"


def open_storage(url: str, **rdb_kwargs: Any):
    """Optuna's RDBStorage for `url`, after `check_connection`; `rdb_kwargs` go to RDBStorage (heartbeat...)."""
    import optuna

    check_connection(url)
    return optuna.storages.RDBStorage(url, engine_kwargs=dict(ENGINE_KWARGS), **rdb_kwargs)
