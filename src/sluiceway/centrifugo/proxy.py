"""Hooks that ask the application over HTTP, as Centrifugo's proxy does: for ``sluiceway serve``,
whose application is another service.

``HttpProxy(rpc_url=..., publish_url=...)`` gives :class:`~sluiceway.centrifugo.options.Hooks`
an ``on_rpc`` and an ``on_publish`` that POST JSON to the application and map its answer:

* request: ``{"client", "user", "transport": "websocket", "protocol": "json"|"protobuf",
  "encoding": "json"|"binary", "method" (RPC) | "channel" (publish), "data" | "b64data"}``
  (a Protobuf client's payload as base64 in ``b64data``), with the connection token's claims
  under ``"meta"`` left out: the application authenticates by ``user``, which Sluiceway
  verified.
* answer ``{"result": {"data": ...}}`` (or ``"b64data"``): the RPC's result, or the data to
  publish instead (``{"result": {}}`` publishes the data unchanged);
  ``{"error": {"code": 4000, "message": "...", "temporary": false}}``: that error reply;
  ``{"disconnect": {"code": 4500, "reason": "..."}}``: close the connection.
* anything else — no answer within the hook timeout, a status other than 200, a body that is not
  such JSON or larger than ``max_answer_bytes`` — answers the command 100 (internal error) and is
  logged; the client is never left waiting.

>>> proxy = HttpProxy(rpc_url="http://127.0.0.1:9000/centrifugo/rpc")
>>> hooks = proxy.hooks()
>>> hooks.on_rpc is not None, hooks.on_publish is None
(True, True)
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

import httpx
import orjson

from sluiceway.centrifugo import codes
from sluiceway.centrifugo.codes import Disconnect, ReplyError
from sluiceway.centrifugo.options import Client, Hooks

logger = logging.getLogger("sluiceway.centrifugo")

_UNSET: Any = object()


class HttpProxy:
    """RPC and publish hooks answered by the application over HTTP (see the module doc)."""

    def __init__(
        self,
        *,
        rpc_url: str | None = None,
        publish_url: str | None = None,
        max_answer_bytes: int = 1 << 20,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        self.publish_url = publish_url
        self.max_answer_bytes = max_answer_bytes
        # No redirects and no environment proxies: the URL is the application, as configured.
        self._http = httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=None, transport=transport
        )

    def hooks(self, base: Hooks | None = None) -> Hooks:
        """``base`` (or empty hooks) with ``on_rpc`` and ``on_publish`` for the URLs given."""
        hooks = base or Hooks()
        if self.rpc_url is not None:
            hooks.on_rpc = self.rpc
        if self.publish_url is not None:
            hooks.on_publish = self.publish
        return hooks

    async def rpc(self, client: Client, method: str, data: Any) -> Any:
        assert self.rpc_url is not None
        body = _request(client, data)
        body["method"] = method
        result = await self._ask(self.rpc_url, body, binary=isinstance(data, bytes))
        return None if result is _UNSET else result

    async def publish(self, client: Client, channel: str, data: Any) -> Any:
        assert self.publish_url is not None
        body = _request(client, data)
        body["channel"] = channel
        result = await self._ask(self.publish_url, body, binary=isinstance(data, bytes))
        return data if result is _UNSET else result

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _ask(self, url: str, body: dict[str, Any], *, binary: bool) -> Any:
        """The result's data (``_UNSET`` when the result has none); raises the answer's
        error or disconnect, or 100 for anything else."""
        try:
            answer = await self._post(url, body)
        except ReplyError:
            raise
        except (httpx.HTTPError, OSError) as error:
            logger.warning("the application at %s did not answer: %s", url, error)
            raise codes.internal() from None
        return _mapped(url, answer, binary=binary)

    async def _post(self, url: str, body: dict[str, Any]) -> Any:
        request = self._http.build_request(
            "POST", url, content=orjson.dumps(body), headers={"content-type": "application/json"}
        )
        response = await self._http.send(request, stream=True)
        try:
            if response.status_code != 200:
                logger.warning("the application at %s answered %d", url, response.status_code)
                raise codes.internal()
            raw = bytearray()
            async for chunk in response.aiter_raw():
                raw += chunk
                if len(raw) > self.max_answer_bytes:
                    logger.warning("the application at %s answered too much", url)
                    raise codes.internal()
        finally:
            await response.aclose()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            logger.warning("the application at %s answered what is not JSON", url)
            raise codes.internal() from None


def _request(client: Client, data: Any) -> dict[str, Any]:
    binary = isinstance(data, bytes)
    body: dict[str, Any] = {
        "client": client.id,
        "user": client.user,
        "transport": "websocket",
        "protocol": "protobuf" if binary else "json",
        "encoding": "binary" if binary else "json",
    }
    if binary:
        body["b64data"] = base64.b64encode(data).decode()
    elif data is not None:
        body["data"] = data
    return body


def _mapped(url: str, answer: Any, *, binary: bool) -> Any:
    if not isinstance(answer, dict):
        logger.warning("the application at %s answered %r", url, answer)
        raise codes.internal()
    error = answer.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message", "")
        if isinstance(code, int) and 0 < code < 65536 and isinstance(message, str):
            raise ReplyError(code, message, temporary=error.get("temporary") is True)
    disconnect = answer.get("disconnect")
    if isinstance(disconnect, dict):
        code, reason = disconnect.get("code"), disconnect.get("reason", "")
        if isinstance(code, int) and 3000 <= code < 5000 and isinstance(reason, str):
            raise Disconnect(code, reason)
    result = answer.get("result")
    if isinstance(result, dict) and error is None and disconnect is None:
        if "b64data" in result:
            try:
                return base64.b64decode(result["b64data"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                pass
        elif "data" in result:
            data = result["data"]
            # A Protobuf client gets bytes: the JSON value's text.
            return orjson.dumps(data) if binary else data
        else:
            return _UNSET
    logger.warning("the application at %s answered %r", url, answer)
    raise codes.internal()
