"""Peer for ``bench/transfer.py``: files, uploads and a CSV export the way the docs show them.

Plain Starlette, one handler per pattern, nothing tuned:

* ``GET /files/{path}``: Starlette's ``FileResponse`` (64 KiB reads through ``anyio``);
* ``PUT /files/{path}``: ``await request.body()``, then one ``write()`` — the whole upload is
  in memory before a byte reaches the disk;
* ``POST /uploads``: ``request.form()`` (python-multipart; each file part spooled to a temporary
  file), then ``await upload.read()`` and one ``write()``, as in Starlette's request docs;
* ``GET /exports/demo.csv``: every row with ``.all()`` (SQLAlchemy async + aiosqlite, the driver
  sluiceway uses), ``csv.writer`` into a ``StringIO``, one ``Response``.

Configured by ``TRANSFER_FILES_DIR`` and ``TRANSFER_DATABASE_URL``. Run with uvicorn, e.g.::

    uvicorn transfer_peers:app --app-dir bench/peers --loop uvloop --http httptools
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import MetaData, Table, select
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

FILES_DIR = Path(os.environ.get("TRANSFER_FILES_DIR", "files")).resolve()
engine = create_async_engine(os.environ.get("TRANSFER_DATABASE_URL", "sqlite+aiosqlite:///demo.db"))


def target(name: str) -> Path:
    # Not what a tutorial shows, but this server should not write outside its directory.
    path = (FILES_DIR / name).resolve()
    if not path.is_relative_to(FILES_DIR):
        raise ValueError(name)
    return path


async def download(request: Request) -> Response:
    path = target(request.path_params["path"])
    if not path.is_file():
        return PlainTextResponse("not found", status_code=404)
    return FileResponse(path)


async def put_file(request: Request) -> JSONResponse:
    path = target(request.path_params["path"])
    body = await request.body()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # noqa: ASYNC230 - blocking, as the tutorials write it
        f.write(body)
    return JSONResponse({"path": request.path_params["path"], "size": len(body)}, status_code=201)


async def post_uploads(request: Request) -> JSONResponse:
    stored = []
    async with request.form() as form:
        for field, upload in form.multi_items():
            if not isinstance(upload, UploadFile) or not upload.filename:
                continue
            contents = await upload.read()
            path = target(upload.filename)
            with open(path, "wb") as f:  # noqa: ASYNC230
                f.write(contents)
            stored.append({"field": field, "path": upload.filename, "size": len(contents)})
    return JSONResponse({"files": stored}, status_code=201)


async def export_csv(request: Request) -> Response:
    async with engine.connect() as conn:
        table = await conn.run_sync(lambda c: Table("demo", MetaData(), autoload_with=c))
        rows = (await conn.execute(select(table))).all()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.columns.keys())
    writer.writerows(rows)
    return Response(buffer.getvalue(), media_type="text/csv")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await engine.dispose()


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def warmup(request: Request) -> PlainTextResponse:
    """Not part of any pattern: the benchmark calls it before measuring, so that the first
    export does not also pay for connecting the engine and the imports that come with it."""
    async with engine.connect() as conn:
        await conn.run_sync(lambda c: Table("demo", MetaData(), autoload_with=c))
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/files/{path:path}", download, methods=["GET", "HEAD"]),
        Route("/files/{path:path}", put_file, methods=["PUT"]),
        Route("/uploads", post_uploads, methods=["POST"]),
        Route("/exports/demo.csv", export_csv),
        Route("/healthz", healthz),
        Route("/warmup", warmup),
    ],
    lifespan=lifespan,
)
