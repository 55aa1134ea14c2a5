"""Job kinds: a name, a pydantic model of the parameters, and the async function that runs it.

``sluiceway serve`` ships one kind, ``export`` (a table to a file). Your app adds its own:

>>> from pydantic import BaseModel
>>> class Resize(BaseModel):
...     paths: list[str]
>>> async def resize(progress, params):
...     progress.set_total(len(params.paths))
...     for path in params.paths:
...         ...  # the work
...         await progress.advance()
...     return {"resized": len(params.paths)}
>>> kind = register_job_kind("resize", Resize, resize)
>>> kind.name, "resize" in default_registry().names()
('resize', True)

``POST /jobs {"kind": "resize", "params": {"paths": [...]}}`` then starts it. ``run`` returns
the job's result (a JSON object: the ``result`` event), or raises :class:`JobFailed` for an
``error`` event with a code of its own. An optional ``check(context, params)`` runs before the job
is accepted and raises :class:`JobRefused` to turn a request down (422 by default).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from sluiceway.jobs.progress import Progress

Run = Callable[[Progress, Any], Awaitable[Mapping[str, Any] | None]]
Check = Callable[[Any, Any], Awaitable[None]]


class JobRefused(Exception):
    """Not started: ``status`` (422 bad parameters, 429 too many jobs, 503...) and ``code``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class JobFailed(Exception):
    """Raised by a job's ``run``: it ends with ``error`` ``{"error": code, "message": ...}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class JobKind:
    name: str
    params_model: type[BaseModel]
    run: Run
    check: Check | None = None


class JobRegistry:
    """Job kinds by name."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(
        self,
        name: str,
        params_model: type[BaseModel],
        run: Run,
        *,
        check: Check | None = None,
        replace: bool = False,
    ) -> JobKind:
        """Add a kind; a name already taken raises ``ValueError`` unless ``replace``."""
        if not name or not name.isidentifier():
            raise ValueError(f"a job kind's name must be an identifier, not {name!r}")
        if name in self._kinds and not replace:
            raise ValueError(f"job kind {name!r} is already registered")
        kind = JobKind(name, params_model, run, check)
        self._kinds[name] = kind
        return kind

    def get(self, name: str) -> JobKind | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def copy(self) -> JobRegistry:
        clone = JobRegistry()
        clone._kinds = dict(self._kinds)
        return clone


_default = JobRegistry()


def default_registry() -> JobRegistry:
    """The registry job managers use unless given another: the built-in kinds, plus those
    added with :func:`register_job_kind`."""
    if "export" not in _default.names():
        from sluiceway.jobs.export_job import register_export_kind  # imports transfer/

        register_export_kind(_default)
    return _default


def register_job_kind(
    name: str,
    params_model: type[BaseModel],
    run: Run,
    *,
    check: Check | None = None,
    replace: bool = False,
) -> JobKind:
    """Add a job kind to the default registry (see the module's example)."""
    return default_registry().register(name, params_model, run, check=check, replace=replace)


__all__ = [
    "Check",
    "JobFailed",
    "JobKind",
    "JobRefused",
    "JobRegistry",
    "Run",
    "default_registry",
    "register_job_kind",
]
