"""A new job's two rows, its pending asset and its queued job, written in as few round trips
as the database allows.

On PostgreSQL both rows go in one statement (the asset's INSERT in a WITH clause of the job's
INSERT), and when the request's session holds no transaction yet, on an autocommit
connection: a single statement is a transaction of its own, so the two rows are committed
together, or neither is, in one round trip instead of four (BEGIN, two INSERTs, COMMIT). The
session's commit that follows finds nothing to write and runs its after-commit actions (the
dispatch) as before. Elsewhere (SQLite), two INSERTs in the session's transaction, which the
route commits.

The statement commits before the route returns: were the request to fail after it (nothing
after it in the route can), the job would stay queued without a message until the sweeper
sends it (`ASSET_JOB_REDISPATCH_AFTER`), as for a message a broker lost.

Core statements built once: no ORM objects are made, flushed or refreshed for rows whose
every value is known here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert
from sqlalchemy.orm import Session

from gaia_app.models import Asset, AssetJob

ASSETS = Asset.__table__
JOBS = AssetJob.__table__

ASSET_COLUMNS = ("id", "user_id", "status", "category", "format", "description", "style", "provider",
                 "details", "created_at", "updated_at")
JOB_COLUMNS = ("id", "asset_id", "user_id", "api_key_id", "status", "request", "idempotency_key",
               "request_hash", "request_id", "max_attempts", "progress", "attempts", "cancel_requested",
               "dispatched_at", "created_at", "updated_at")


def _values(table, columns: tuple[str, ...], prefix: str) -> dict:
    return {name: bindparam(prefix + name, type_=table.c[name].type) for name in columns}


def _both_rows():
    asset = insert(ASSETS).values(_values(ASSETS, ASSET_COLUMNS, "asset_")).cte("new_asset")
    return insert(JOBS).values(_values(JOBS, JOB_COLUMNS, "job_")).add_cte(asset)


BOTH_ROWS = _both_rows()
INSERT_ASSET = insert(ASSETS)
INSERT_JOB = insert(JOBS)


def writes_in_one_statement(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def begin(session: Session) -> None:
    """Before the request's first statement: on PostgreSQL, with no transaction begun, take
    the connection in autocommit, so that the look-up of an Idempotency-Key and the one
    INSERT each cost one round trip. A session already in a transaction keeps it."""
    if writes_in_one_statement(session) and not session.in_transaction():
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def insert_job(session: Session, asset: dict[str, Any], job: dict[str, Any]) -> None:
    """Write both rows (IntegrityError when the job's Idempotency-Key is taken). On
    PostgreSQL, committed on return unless the session was already in a transaction."""
    begin(session)
    if writes_in_one_statement(session):
        params = {f"asset_{name}": asset[name] for name in ASSET_COLUMNS}
        params.update({f"job_{name}": job[name] for name in JOB_COLUMNS})
        session.execute(BOTH_ROWS, params)
    else:
        session.execute(INSERT_ASSET, asset)
        session.execute(INSERT_JOB, job)
