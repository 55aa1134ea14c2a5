"""Runs over HTTP: the response an endpoint returns, and the endpoints that follow, describe and
cancel a family of runs (Starlette here; FastAPI in :mod:`sluiceway.runs.fastapi`).

An endpoint starts a run and returns its stream::

    @app.post("/answers")
    async def answer(question: Question, user: str = Depends(current_user)):
        return await runs.respond(produce(question), owner=user)

:func:`respond` starts the run, waits for its first item (an error before it is the HTTP
answer, in the format's error shape), and streams it: its first event, ``start``, carries the
run's id, as does the ``x-run-id`` header. The run goes on when the client leaves; the client
comes back with ``GET {prefix}/{run_id}/events`` and ``Last-Event-ID`` (:func:`run_routes`).

Who may see a run: whoever ``identify`` says is its owner; a run started without an owner is
anyone's. Anyone else gets the same 404 as for an unknown id.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast, get_args

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sluiceway.asgi import EventStreamResponse
from sluiceway.hub import HubClosed, InvalidEventId, Subscription
from sluiceway.ids import parse_cursor
from sluiceway.llm.chunks import UpstreamError
from sluiceway.llm.pacing import paced
from sluiceway.runs.directory import DirectoryUnavailable, RemoteRun
from sluiceway.runs.follow import run_frames, run_stream
from sluiceway.runs.formats import Format, error_body, format_headers, format_stream
from sluiceway.runs.items import RunError
from sluiceway.runs.manager import RunRefused, Runs, close_unstarted
from sluiceway.runs.run import Run
from sluiceway.sse import Event

if TYPE_CHECKING:
    from sluiceway.auth import TokenVerifier

logger = logging.getLogger("sluiceway.runs")

__all__ = [
    "ID_HEADER",
    "HTTPRunError",
    "Identify",
    "cancel_chat",
    "cancel_run",
    "describe_run",
    "follow_chat",
    "follow_run",
    "respond",
    "run_response",
    "run_routes",
    "token_subject",
]

#: The response header that names the run a stream comes from.
ID_HEADER = "x-run-id"
#: Who makes a request (its owner), from the request: a string, or None for nobody in
#: particular. May be a coroutine function; may raise an HTTP error (401) of its own.
Identify = Callable[[Request], "str | Awaitable[str | None] | None"]


class HTTPRunError(Exception):
    """An endpoint's refusal: ``status``, ``code`` and ``message``, answered in the format's
    error shape (:func:`~sluiceway.runs.formats.error_body`)."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self, format: Format = "sse") -> Response:
        body = error_body(format, self.status, self.code, self.message)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def refusal_of(exc: BaseException) -> HTTPRunError:
    """What a run's failure before its first item (or a refusal to start it) answers."""
    if isinstance(exc, RunRefused):
        wait = _retry_after(1 if exc.status == 429 else None)
        return HTTPRunError(exc.status, exc.code, exc.detail, wait)
    if isinstance(exc, RunError):
        return HTTPRunError(exc.status, exc.code, exc.message)
    if isinstance(exc, UpstreamError):
        return HTTPRunError(exc.status, exc.kind, exc.message, _retry_after(exc.retry_after))
    # The producer's own bug: its text stays in the log (the run logged it), never on the wire.
    return HTTPRunError(500, "producer_failed", "the run's producer failed")


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {"retry-after": str(max(1, int(seconds)))} if seconds is not None else {}


async def respond(
    runs: Runs,
    producer: AsyncIterator[Any],
    *,
    owner: str | None = None,
    format: Format = "sse",
    chat_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
    annotations: Mapping[str, Any] | None = None,
    background: bool = False,
    partial_json: bool = False,
    headers: Mapping[str, str] | None = None,
    id_header: str = ID_HEADER,
) -> Response:
    """Start a run of ``producer`` for ``owner`` and answer with its stream in ``format``.

    Waits for the producer's first item: a refusal (429 too many runs, 503 shutting down) or
    an error before it (:class:`~sluiceway.runs.RunError`, an upstream error, 500 for any
    other exception) is the HTTP answer, in ``format``'s error shape. ``chat_id``: the chat
    this run answers now (for ``useChat``'s resume, :func:`follow_chat`)."""
    if chat_id is not None:
        try:
            await _check_chat(runs, chat_id, owner)
        except HTTPRunError as exc:
            close_unstarted(producer)
            return exc.response(format)
    try:
        run = runs.start(
            producer,
            owner=owner,
            background=background,
            meta=meta,
            annotations=annotations,
            partial_json=partial_json,
        )
    except RunRefused as exc:
        return refusal_of(exc).response(format)
    undo = await runs.chats.bind(chat_id, run.id) if chat_id is not None else None
    await run.opened
    if run.failure is not None:
        if undo is not None:
            await undo()
        refused = refusal_of(run.failure)
        refused.headers[id_header] = run.id
        return refused.response(format)
    return await run_response(runs, run, format, headers=headers, id_header=id_header)


async def _check_chat(runs: Runs, chat_id: str, owner: str | None) -> None:
    """A chat stays with whoever started it: answering it anew would repoint its resume to
    someone else's run (403)."""
    try:
        run_id = await runs.chats.latest(chat_id)
        previous = await runs.find(run_id) if run_id is not None else None
    except (DirectoryUnavailable, OSError) as exc:
        logger.warning("cannot look chat %s up: %s", chat_id, exc)
        raise HTTPRunError(503, "backend_unavailable", "cannot look the chat up now") from None
    if previous is not None and previous.owner is not None and previous.owner != owner:
        raise HTTPRunError(403, "chat_taken", "this chat belongs to another user")


async def run_response(
    runs: Runs,
    run: Run | RemoteRun,
    format: Format = "sse",
    *,
    last_event_id: str | None = None,
    starting_after: int | None = None,
    ends_at: float | None = None,
    pace: float | None = None,
    retry: int | None = None,
    headers: Mapping[str, str] | None = None,
    id_header: str = ID_HEADER,
) -> Response:
    """The stream of ``run`` (here or in another process) in ``format``.

    ``sse``: the run's own events with their ids, after ``last_event_id`` (from its first
    when None, after a ``sluiceway.position`` event naming where it starts); ``204`` when the
    client has all of an ended run (an ``EventSource`` then stops reconnecting); ``400`` for
    an id that is not one of the run's. ``responses``: after
    ``starting_after`` (or ``last_event_id``, a ``sequence_number``). The other formats replay
    from the start. ``pace`` (tokens/s): smooth ``sse`` output. ``ends_at``: when the stream
    must end (the reader's credentials expire)."""
    try:
        content = await _content(runs, run, format, last_event_id, starting_after, pace)
    except HTTPRunError as exc:
        return exc.response(format)
    if content is None:
        return Response(status_code=204, headers={id_header: run.id})
    return EventStreamResponse(
        content,
        headers={**format_headers(format), id_header: run.id, **(headers or {})},
        retry=retry,
        ends_at=ends_at,
    )


async def _content(
    runs: Runs,
    run: Run | RemoteRun,
    format: Format,
    last_event_id: str | None,
    starting_after: int | None,
    pace: float | None,
) -> Subscription | AsyncIterator[bytes] | AsyncIterator[Event] | None:
    hub = runs.hub
    if format == "responses":
        if starting_after is None and last_event_id:
            if not last_event_id.isdigit():
                raise HTTPRunError(400, "invalid_last_event_id", "not a sequence number")
            starting_after = int(last_event_id)
        after = -1 if starting_after is None else starting_after
        return format_stream(hub, run, format, starting_after=after)
    if format != "sse":
        return format_stream(hub, run, format)
    try:
        if last_event_id:
            position = parse_cursor(last_event_id, 1)[0]
            latest = (await hub.history(run.topic, None, 0)).latest
            if latest is None or position.epoch != latest.epoch or position.offset > latest.offset:
                # Not one of this run's ids (another run's, or made up): resuming from it
                # would silently skip or repeat events.
                raise HTTPRunError(400, "invalid_last_event_id", "not an id of this run's events")
            if run.done.is_set() and position == latest:
                return None  # it has everything of an ended run
        if pace is not None:
            return paced(run_stream(hub, run, last_event_id, position=True), pace)
        if hub.backend is None:
            # In one process the topic ends when the run does: stream it as stored.
            return hub.subscribe_nowait([run.topic], last_event_id, from_start=not last_event_id)
        # A mirror of a shared topic is not told that the run ended: stop at its last event.
        return run_frames(hub, run, last_event_id)
    except InvalidEventId as exc:
        raise HTTPRunError(400, "invalid_last_event_id", str(exc)) from None
    except HubClosed as exc:
        raise HTTPRunError(503, "shutting_down", str(exc)) from None


# -- the endpoints of a family ---------------------------------------------------------------


async def find_run(runs: Runs, run_id: str, owner: str | None) -> Run | RemoteRun:
    """The run, if ``owner`` may see it; else :class:`HTTPRunError` 404 (the same for an
    unknown id and someone else's run: ids are not confirmed to those who may not use them),
    or 503 when the shared directory cannot be reached."""
    try:
        run = await runs.find(run_id)
    except (DirectoryUnavailable, OSError) as exc:
        logger.warning("cannot look run %s up: %s", run_id, exc)
        raise HTTPRunError(503, "backend_unavailable", "cannot look the run up now") from None
    if run is None or (run.owner is not None and run.owner != owner):
        raise HTTPRunError(404, "unknown_run", "no such run (or its retention ended)")
    return run


async def describe_run(runs: Runs, run_id: str, owner: str | None) -> Response:
    """``GET {prefix}/{run_id}``: its state, meta, followers, what it produced so far."""
    try:
        run = await find_run(runs, run_id, owner)
    except HTTPRunError as exc:
        return exc.response()
    return JSONResponse(await runs.describe(run))


async def follow_run(
    runs: Runs,
    run_id: str,
    owner: str | None,
    *,
    format: Format = "sse",
    last_event_id: str | None = None,
    starting_after: int | None = None,
) -> Response:
    """``GET {prefix}/{run_id}/events``: the run's stream (see :func:`run_response`)."""
    try:
        run = await find_run(runs, run_id, owner)
    except HTTPRunError as exc:
        return exc.response(format)
    return await run_response(
        runs, run, format, last_event_id=last_event_id, starting_after=starting_after
    )


async def cancel_run(runs: Runs, run_id: str, owner: str | None) -> Response:
    """``POST {prefix}/{run_id}/cancel``: stop it wherever it goes on and wait (up to 2 s)
    until it has ended; idempotent. Answers its id and state."""
    try:
        run = await find_run(runs, run_id, owner)
        ended = await _cancel(runs, run)
    except HTTPRunError as exc:
        return exc.response()
    return JSONResponse({"id": ended.id, "state": _state(ended)})


async def _cancel(runs: Runs, run: Run | RemoteRun) -> Run | RemoteRun:
    try:
        return await runs.cancel_and_wait(run)
    except (DirectoryUnavailable, OSError) as exc:
        logger.warning("cannot cancel run %s: %s", run.id, exc)
        raise HTTPRunError(503, "backend_unavailable", "cannot reach the run now") from None


def _state(run: Run | RemoteRun) -> str:
    return run.state if isinstance(run, RemoteRun) else run.state.value


async def find_chat_run(runs: Runs, chat_id: str, owner: str | None) -> Run | RemoteRun | None:
    """The chat's latest run (None when there is none, or it is someone else's)."""
    run_id = await runs.chats.latest(chat_id)
    if run_id is None:
        return None
    try:
        return await find_run(runs, run_id, owner)
    except HTTPRunError as exc:
        if exc.status == 404:
            return None
        raise


async def follow_chat(
    runs: Runs, chat_id: str, owner: str | None, format: Format = "ai-sdk"
) -> Response:
    """``GET {chats}/{chat_id}/stream`` (``useChat({ resume: true })``): the chat's latest
    run from its start, live or ended; ``204`` when there is none to resume."""
    try:
        run = await find_chat_run(runs, chat_id, owner)
    except HTTPRunError as exc:
        return exc.response(format)
    if run is None:
        return Response(status_code=204)
    return await run_response(runs, run, format)


async def cancel_chat(runs: Runs, chat_id: str, owner: str | None) -> Response:
    """``POST {chats}/{chat_id}/cancel``: stop the chat's latest run (``useChat``'s ``stop()``
    only lets go of the stream)."""
    try:
        run = await find_chat_run(runs, chat_id, owner)
        if run is None:
            raise HTTPRunError(404, "unknown_chat", "no run for this chat (or it expired)")
        ended = await _cancel(runs, run)
    except HTTPRunError as exc:
        return exc.response("ai-sdk")
    return JSONResponse({"id": ended.id, "state": _state(ended)})


# -- Starlette -------------------------------------------------------------------------------


def run_routes(
    runs: Runs,
    prefix: str = "/runs",
    *,
    identify: Identify | None = None,
    chats: str | None = None,
) -> list[BaseRoute]:
    """Starlette routes for a family of runs:

    * ``GET {prefix}/{run_id}``: describe;
    * ``GET {prefix}/{run_id}/events?format=sse``: follow, resume with ``Last-Event-ID``
      (``format`` one of :data:`~sluiceway.runs.formats.FORMATS`; ``starting_after`` for
      ``responses``);
    * ``POST {prefix}/{run_id}/cancel``: cancel;
    * with ``chats`` (the path ``useChat`` posts to, e.g. ``/api/chat``): ``GET
      {chats}/{chat_id}/stream`` (its resume) and ``POST {chats}/{chat_id}/cancel``.

    ``identify(request)``: who asks (see :data:`Identify`); without it, everyone is nobody in
    particular and sees only the runs started without an owner.

    >>> routes = run_routes(Runs(Hub()), "/answers", identify=current_user)  # doctest: +SKIP
    >>> start = Route("/answers", answer, methods=["POST"])                  # doctest: +SKIP
    >>> app = Starlette(routes=[start, *routes], lifespan=runs.lifespan)    # doctest: +SKIP
    """
    prefix = prefix.rstrip("/")

    async def who(request: Request) -> str | None:
        if identify is None:
            return None
        found = identify(request)
        if inspect.isawaitable(found):
            return await found
        return found

    async def describe(request: Request) -> Response:
        return await describe_run(runs, request.path_params["run_id"], await who(request))

    async def events(request: Request) -> Response:
        query = request.query_params
        try:
            format = parse_format(query.get("format"))
            after = parse_starting_after(query.get("starting_after"))
        except HTTPRunError as exc:
            return exc.response()
        last_event_id = request.headers.get("last-event-id") or query.get("last_event_id")
        return await follow_run(
            runs,
            request.path_params["run_id"],
            await who(request),
            format=format,
            last_event_id=last_event_id,
            starting_after=after,
        )

    async def cancel(request: Request) -> Response:
        return await cancel_run(runs, request.path_params["run_id"], await who(request))

    routes: list[BaseRoute] = [
        Route(f"{prefix}/{{run_id}}", describe, methods=["GET"]),
        Route(f"{prefix}/{{run_id}}/events", events, methods=["GET"]),
        Route(f"{prefix}/{{run_id}}/cancel", cancel, methods=["POST"]),
    ]
    if chats is not None:
        chats = chats.rstrip("/")

        async def chat_stream(request: Request) -> Response:
            return await follow_chat(runs, request.path_params["chat_id"], await who(request))

        async def chat_cancel(request: Request) -> Response:
            return await cancel_chat(runs, request.path_params["chat_id"], await who(request))

        routes += [
            Route(f"{chats}/{{chat_id:path}}/stream", chat_stream, methods=["GET"]),
            Route(f"{chats}/{{chat_id:path}}/cancel", chat_cancel, methods=["POST"]),
        ]
    return routes


def parse_format(value: str | None) -> Format:
    """``?format=``: one of :data:`~sluiceway.runs.formats.FORMATS` (``sse`` when absent)."""
    if value is None or value == "":
        return "sse"
    if value not in get_args(Format):
        choices = ", ".join(get_args(Format))
        raise HTTPRunError(400, "invalid_format", f"format must be one of {choices}")
    return cast(Format, value)


def parse_starting_after(value: str | None) -> int | None:
    """``?starting_after=``: a ``sequence_number`` (the Responses format)."""
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise HTTPRunError(400, "invalid_starting_after", "starting_after is a sequence number")
    return int(value)


def token_subject(verifier: TokenVerifier | str | None) -> Callable[[Request], str | None]:
    """An ``identify`` that reads a JWT from ``Authorization: Bearer`` and answers its
    ``sub`` (for :func:`run_routes`, and as a FastAPI dependency): no header is nobody in
    particular (None); a token that does not verify is a 401. ``verifier``: a
    :class:`~sluiceway.auth.TokenVerifier`, or an HMAC secret; None accepts no token.

    >>> current_user = token_subject(os.environ["TOKEN_SECRET"])                 # doctest: +SKIP
    >>> @app.post("/chat")                                                      # doctest: +SKIP
    ... async def chat(question: Question, user: str | None = Depends(current_user)): ...
    """
    from sluiceway.auth import TokenError, TokenVerifier  # needs the server extra (PyJWT)

    if not isinstance(verifier, TokenVerifier):
        verifier = TokenVerifier(hmac_secret=verifier, require_exp=True)
    checker = verifier

    def subject(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not scheme:
            return None
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "send a bearer token", {"www-authenticate": "Bearer"})
        try:
            claims = checker.verify(token.strip())
        except TokenError as exc:
            challenge = 'Bearer error="invalid_token"'
            raise HTTPException(
                401, f"invalid token: {exc}", {"www-authenticate": challenge}
            ) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise HTTPException(
                401, "the token names no subject (sub)", {"www-authenticate": "Bearer"}
            )
        return sub

    return subject
