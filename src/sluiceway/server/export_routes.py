"""``GET /exports/{table}.csv`` and ``.ndjson``: a table of ``settings.export_tables``, streamed.

Query parameters: see :mod:`sluiceway.transfer.export_query`; NDJSON also takes
``numeric=string`` (the default: decimals as exact strings) or ``numeric=number`` (as JSON
numbers written with their exact text). Errors before the first byte are
JSON (404 ``unknown_table``, 400 ``invalid_*``/``unknown_parameter``, 503
``database_unavailable``); after it, the body ends with the format's error marker.

Wiring: ``routes`` into the app, and :func:`~sluiceway.transfer.exports.dispose_engine` at the
end of the lifespan.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.auth.resources import export_resource
from sluiceway.server.access import SUBSCRIBE, require
from sluiceway.server.errors import APIError
from sluiceway.server.services import services_of
from sluiceway.transfer.export_query import ExportQuery, ExportQueryError
from sluiceway.transfer.exports import (
    ExportError,
    ExportResponse,
    check_table,
    open_export,
)
from sluiceway.transfer.row_formats import NUMERIC_MODES


def _numeric(params: list[tuple[str, str]]) -> str:
    """The ``numeric`` parameter of an NDJSON export (taken out of ``params``)."""
    given = [value for key, value in params if key == "numeric"]
    params[:] = [(key, value) for key, value in params if key != "numeric"]
    if not given:
        return "string"
    if len(given) > 1 or given[0] not in NUMERIC_MODES:
        modes = " or ".join(NUMERIC_MODES)
        raise ExportQueryError("invalid_numeric", f"numeric must be given once, as {modes}")
    return given[0]


async def _export(request: Request, format: str) -> Response:
    settings = services_of(request).settings
    require(request, SUBSCRIBE, export_resource(request.path_params["table"]))
    try:
        table = check_table(request.path_params["table"], settings.export_tables)
        params = request.query_params.multi_items()
        # NDJSON only: CSV writes a decimal's text whatever, so there `numeric` is unknown.
        numeric = _numeric(params) if format == "ndjson" else "string"
        query = ExportQuery.from_params(params)
        cursor = await open_export(services_of(request).exports.engine, table, query)
    except ExportQueryError as exc:
        raise APIError(400, exc.code, exc.detail) from None
    except ExportError as exc:
        raise APIError(exc.status, exc.code, exc.detail) from None
    return ExportResponse(cursor, format, numeric=numeric)


async def export_csv(request: Request) -> Response:
    return await _export(request, "csv")


async def export_ndjson(request: Request) -> Response:
    return await _export(request, "ndjson")


routes: list[Route] = [
    Route("/exports/{table}.csv", export_csv, methods=["GET"]),
    Route("/exports/{table}.ndjson", export_ndjson, methods=["GET"]),
]
