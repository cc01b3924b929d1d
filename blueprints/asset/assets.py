"""Generated assets: each belongs to one user, and nobody else can tell it exists.

Listing, reading, deleting, and serving a ready asset's file from storage (one byte range,
conditional requests). Also two helpers the job rules share: pages newest first, and actions
that run only once the request's changes are committed (sending a job to a runner, removing
a file nobody uses any more).

Writes flush; the route commits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import Select, and_, event, func, or_
from sqlalchemy.orm import Session

from gaia_app.errors import APIError, Conflict, NotFound, Unavailable
from gaia_app.extensions import db, first_or_404
from gaia_app.models import Asset, AssetJob
from gaia_app.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from gaia_app.storage import AssetStorage, RangeNotSatisfiable, StorageError, parse_range

log = logging.getLogger("gaia.assets")

# A file's bytes never change under its URL (it is named by its content's hash).
FILE_CACHE_CONTROL = "private, max-age=31536000, immutable"


# -- errors of this service -------------------------------------------------------------


class RangeNotSatisfiableError(APIError):
    """The one byte range asked for starts past the end of the file (416)."""

    status = 416
    type = "/problems/range-not-satisfiable"

    def __init__(self, size: int):
        super().__init__(f"The file has {size} bytes; the range asked for starts past its end.",
                         headers={"Content-Range": f"bytes */{size}"})


class StorageUnavailable(Unavailable):
    type = "/problems/storage-unavailable"


class StoredFileMissing(APIError):
    """An asset marked ready whose file the store does not have (or not whole)."""

    status = 500
    type = "/problems/asset-file-missing"


# -- after the commit -------------------------------------------------------------------

_AFTER_COMMIT = "gaia_asset_after_commit"


def after_commit(session, action: Callable[[], None]) -> None:
    """Run `action` once `session` commits; forgotten if it rolls back. Failures are logged:
    the committed rows are what counts (the sweeper sends a job whose dispatch failed)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


def _run_after_commit(session) -> None:
    for action in session.info.pop(_AFTER_COMMIT, None) or ():
        try:
            action()
        except Exception:
            log.exception("an action after a commit failed")


def _forget_after_rollback(session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


def install_session_hooks() -> None:
    if not event.contains(Session, "after_commit", _run_after_commit):
        event.listen(Session, "after_commit", _run_after_commit)
        event.listen(Session, "after_rollback", _forget_after_rollback)


# -- reading ----------------------------------------------------------------------------


def newest_first(query: Select, model, limit: int | None, cursor: str | None) -> tuple[list, str | None]:
    """One page of `query` over `model`, newest first, by the keyset (created_at, id); the
    cursor is `gaia_app.pagination`'s. Returns (rows, next_cursor). A query that selects
    several columns gives rows whose first column is the `model` instance."""
    limit = min(max(limit or DEFAULT_LIMIT, 1), MAX_LIMIT)
    if cursor:
        created, row_id = decode_cursor(cursor)
        query = query.where(or_(model.created_at < created,
                                and_(model.created_at == created, model.id < row_id)))
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list(db.session.execute(query).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1][0]
        next_cursor = encode_cursor(last.created_at, last.id)
    return rows, next_cursor


@dataclass(frozen=True)
class AssetRecord:
    """An asset and the id of the job that makes (or made) it."""

    asset: Asset
    job_id: uuid.UUID | None


def _with_job():
    return db.select(Asset, AssetJob.id).outerjoin(AssetJob, AssetJob.asset_id == Asset.id)


def list_assets(user_id: uuid.UUID, *, category: str | None = None, status: str | None = None,
                limit: int | None = None, cursor: str | None = None) -> tuple[list[AssetRecord], str | None]:
    """One page of the user's assets, newest first."""
    query = _with_job().where(Asset.user_id == user_id)
    if category:
        query = query.where(Asset.category == category)
    if status:
        query = query.where(Asset.status == status)
    rows, next_cursor = newest_first(query, Asset, limit, cursor)
    return [AssetRecord(asset, job_id) for asset, job_id in rows], next_cursor


def get_asset(user_id: uuid.UUID, asset_id: uuid.UUID | str) -> AssetRecord:
    row = first_or_404(lambda parsed: _with_job().where(Asset.id == parsed, Asset.user_id == user_id).limit(1),
                       asset_id, NotFound(f"No asset {asset_id} among yours."))
    return AssetRecord(row[0], row[1])


# -- deleting ---------------------------------------------------------------------------


def delete_asset(user_id: uuid.UUID, asset_id: uuid.UUID | str, storage: AssetStorage, app) -> None:
    """Delete an asset; its job goes with it (ON DELETE CASCADE), and a worker still making
    it finds its job gone at its next conditional update. Once committed, the stored file is
    removed unless another asset (anyone's) has the same bytes."""
    asset = get_asset(user_id, asset_id).asset
    key, digest = asset.storage_key, asset.sha256
    db.session.delete(asset)
    db.session.flush()
    if key:
        after_commit(db.session, lambda: remove_file_if_unused(app, storage, key, digest))


def remove_file_if_unused(app, storage: AssetStorage, key: str, digest: str | None) -> bool:
    """Remove the file under `key` when no asset row names it; True when removed. Runs after
    the commit, on a connection of its own."""
    same = Asset.storage_key == key if digest is None else or_(Asset.storage_key == key, Asset.sha256 == digest)
    with app.app_context(), db.engine.connect() as connection:
        users = connection.execute(db.select(func.count()).select_from(Asset).where(same)).scalar_one()
    if users:
        return False
    storage.delete(key)
    return True


# -- the file ---------------------------------------------------------------------------


@dataclass
class FileAnswer:
    """What the download route sends: status, headers and (unless 304 or HEAD) the bytes."""

    status: int
    headers: dict[str, str]
    body: Iterable[bytes] = field(default_factory=tuple)
    content_type: str | None = None


def _etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match: `*`, or a list of (weak or strong) tags compared weakly (RFC 9110)."""
    if not header:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag in (tag[2:] if tag.startswith("W/") else tag for tag in tags)


def file_answer(user_id: uuid.UUID, asset_id: uuid.UUID | str, storage: AssetStorage, *,
                range_header: str | None = None, if_none_match: str | None = None,
                if_range: str | None = None, head: bool = False) -> FileAnswer:
    """The ready asset's bytes: all of them (200), one range (206), or nothing new (304)."""
    asset = get_asset(user_id, asset_id).asset
    if asset.status != "ready" or not asset.storage_key:
        detail = ("its job failed or was cancelled; there is no file" if asset.status == "failed"
                  else "its job has not finished; follow the job and try again when it succeeds")
        raise Conflict(f"Asset {asset.id} is {asset.status}: {detail}.", asset_status=asset.status)
    etag = f'"{asset.sha256}"'
    headers = {
        "ETag": etag,
        "Cache-Control": FILE_CACHE_CONTROL,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{asset.id}.{asset.format}"',
    }
    if _etag_matches(if_none_match, etag):
        return FileAnswer(304, headers)
    size = asset.size_bytes if asset.size_bytes is not None else _stored_size(storage, asset.storage_key)
    if if_range is not None and if_range.strip() != etag:
        range_header = None  # the client's copy is another version: send the whole file
    try:
        wanted = parse_range(range_header, size)
    except RangeNotSatisfiable as exc:
        raise RangeNotSatisfiableError(exc.size) from None
    first, last = wanted if wanted else (0, size - 1)
    status = 206 if wanted else 200
    if wanted:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(max(last - first + 1, 0))
    body: Iterable[bytes] = ()
    if not head:
        body = _open(storage, asset, first, last if wanted else None)
    return FileAnswer(status, headers, body, asset.content_type or "application/octet-stream")


def _stored_size(storage: AssetStorage, key: str) -> int:
    try:
        size = storage.size(key)
    except StorageError as exc:
        raise _storage_problem(exc, key) from None
    if size is None:
        raise _storage_problem(StorageError("not_found", "no file"), key)
    return size


def _open(storage: AssetStorage, asset: Asset, first: int, last: int | None):
    try:
        return storage.open_range(asset.storage_key, first, last)
    except RangeNotSatisfiable as exc:
        raise RangeNotSatisfiableError(exc.size) from None
    except StorageError as exc:
        raise _storage_problem(exc, asset.storage_key) from None


def _storage_problem(error: StorageError, key: str) -> APIError:
    if error.kind == "unavailable":
        log.warning("asset storage unavailable: %s", error)
        return StorageUnavailable("The asset store cannot be reached; try again shortly.",
                                  headers={"Retry-After": "5"})
    log.error("asset file %s is %s in storage: %s", key, error.kind, error)
    return StoredFileMissing("The asset's file is missing from storage; it has been logged.")
