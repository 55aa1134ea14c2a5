"""Files of ``sluiceway serve``: ``GET/HEAD/PUT /files/{path}`` and ``POST /uploads``.

Everything lives under ``settings.files_dir``. Paths follow
:mod:`sluiceway.transfer.paths`: no ``..``, no hidden names, no escape through a symlink.
Grants (``/files/{path}``) are checked on the path as named and again on the file it resolves
to, so a symlink cannot lead out of what a grant covers. Files are shown inline only when
passive (images but not SVG, audio, video, PDF, plain text), and every response under
``/files`` is sandboxed (:mod:`sluiceway.server.sandbox`).

Status codes (errors are the usual ``{"error", "detail"}`` JSON):

* download: ``200``, ``206``, ``304``; ``404 not_found`` for anything that is not a regular
  file inside the directory — missing, a directory (no listings), *or an unsafe path*, so a
  probe learns nothing about what lies outside; ``412 precondition_failed``;
  ``416 range_not_satisfiable`` (with ``Content-Range: bytes */<size>``).
* upload: ``201`` (created) or ``200`` (replaced, with ``?overwrite=1``) with
  ``{"path", "size", "sha256"}`` (``POST``: ``{"files": [...]}``, each with its ``field``);
  ``400 invalid_path`` for every unsafe path (the client named something that can never be
  written, so say so); ``409 file_exists`` (no ``?overwrite=1``), ``409 path_conflict`` (the
  path is a directory, or runs through a file); ``413 upload_too_large``; ``415
  unsupported_media_type``, ``400 missing_boundary``/``invalid_multipart``/``missing_filename``/
  ``no_files``/... for forms; ``401``/``403`` without a grant (uploads write to the
  server's disk: they need ``publish`` on the file's path); ``507 insufficient_storage`` when
  the disk is full.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.auth import Grants
from sluiceway.auth.resources import file_resource
from sluiceway.server.access import (
    PUBLISH,
    SUBSCRIBE,
    admission_of,
    refused_as_api_error,
    require,
    require_publisher,
)
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.services import services_of
from sluiceway.server.settings import Settings
from sluiceway.transfer.download import file_response
from sluiceway.transfer.multipart_upload import (
    FRAMING_ALLOWANCE,
    FormError,
    boundary_of,
    save_multipart,
)
from sluiceway.transfer.paths import UnsafePath, relative_name, resolve_within
from sluiceway.transfer.upload import (
    PathConflict,
    StoredFile,
    UploadStalled,
    UploadTooLarge,
    check_declared_length,
    save_stream,
    with_read_timeout,
)

# What an open() of a client-named path may fail with that just means "no such file here".
_MISSING = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.ELOOP}
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_TRUE = {"1", "true", "yes"}


def _settings(request: Request) -> Settings:
    return services_of(request).settings


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in _TRUE


def _require_resolved(request: Request, grants: Grants, action: str, target: Path) -> None:
    """The grant is checked again on the file a path resolves to: a symlink inside the
    directory must not lead out of what the grant covers."""
    root = _settings(request).files_dir
    with refused_as_api_error():
        admission_of(request).require(grants, action, file_resource(relative_name(root, target)))


async def download(request: Request) -> Response:
    path = request.path_params["path"]
    grants = require(request, SUBSCRIBE, file_resource(path))
    try:
        target = resolve_within(_settings(request).files_dir, path)
        _require_resolved(request, grants, SUBSCRIBE, target)
        return await file_response(request, target, attachment=_flag(request, "download"))
    except UnsafePath:
        pass  # answered exactly like a missing file
    except OSError as exc:
        if exc.errno not in _MISSING:
            raise
    raise APIError(404, "not_found", f"no file {path!r}")


@contextlib.contextmanager
def _upload_errors() -> Iterator[None]:
    """The exceptions of receiving a file, as API errors."""
    try:
        yield
    except UnsafePath as exc:
        raise APIError(400, "invalid_path", str(exc)) from None
    except FormError as exc:
        raise APIError(exc.status, exc.code, exc.detail) from None
    except UploadTooLarge as exc:
        raise APIError(413, "upload_too_large", str(exc), limit=exc.limit) from None
    except UploadStalled as exc:
        # The rest of the body may still come one day: close rather than read it first.
        raise APIError(408, "upload_timeout", str(exc), headers={"connection": "close"}) from None
    except FileExistsError:
        detail = "the file exists; add ?overwrite=1 to replace it"
        raise APIError(409, "file_exists", detail) from None
    except PathConflict as exc:
        raise APIError(409, "path_conflict", str(exc)) from None
    except ClientDisconnect:  # nothing was kept; this answer reaches nobody
        raise APIError(400, "client_disconnected", "the client left mid-upload") from None
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise APIError(507, "insufficient_storage", "no space left for the upload") from None
        raise


def _body(request: Request) -> AsyncIterator[bytes]:
    """The request's body, dropped when it stalls (``upload_read_timeout``)."""
    return with_read_timeout(request.stream(), _settings(request).upload_read_timeout)


def _describe(root: Path, stored: StoredFile) -> dict[str, Any]:
    return {
        "path": relative_name(root, stored.path),
        "size": stored.size,
        "sha256": stored.sha256,
        "created": stored.created,
    }


async def put_file(request: Request) -> Response:
    grants = require(request, PUBLISH, file_resource(request.path_params["path"]))
    settings = _settings(request)
    root = settings.files_dir
    with _upload_errors():
        target = resolve_within(root, request.path_params["path"])
        _require_resolved(request, grants, PUBLISH, target)
        check_declared_length(request.headers, settings.max_upload_bytes)
        stored = await save_stream(
            _body(request),
            target,
            max_bytes=settings.max_upload_bytes,
            overwrite=_flag(request, "overwrite"),
            tag=await services_of(request).uploads.tag(),
        )
    body = _describe(root, stored)
    location = "/files/" + quote(body["path"])
    return JSONResponse(
        body, status_code=201 if stored.created else 200, headers={"location": location}
    )


def _require_upload(request: Request, grants: Grants, name: str, target: Path) -> None:
    """Each part's file name, as named and as it resolves (see :func:`_require_resolved`)."""
    with refused_as_api_error():
        admission_of(request).require(grants, PUBLISH, file_resource(name))
    _require_resolved(request, grants, PUBLISH, target)


async def post_uploads(request: Request) -> Response:
    grants = require_publisher(request)  # before the body; each file is checked as it comes
    settings = _settings(request)
    root = settings.files_dir
    with _upload_errors():
        boundary = boundary_of(request.headers.get("content-type", ""))
        check_declared_length(request.headers, settings.max_upload_bytes + FRAMING_ALLOWANCE)
        uploaded = await save_multipart(
            _body(request),
            boundary,
            root,
            max_bytes=settings.max_upload_bytes,
            overwrite=_flag(request, "overwrite"),
            authorize=lambda name, target: _require_upload(request, grants, name, target),
            tag=await services_of(request).uploads.tag(),
        )
    files = [{"field": item.field, **_describe(root, item.stored)} for item in uploaded]
    return JSONResponse({"files": files}, status_code=201)


routes: list[Route] = [
    Route("/files/{path:path}", download, methods=["GET", "HEAD"]),
    Route("/files/{path:path}", put_file, methods=["PUT"]),
    Route("/uploads", post_uploads, methods=["POST"]),
]
