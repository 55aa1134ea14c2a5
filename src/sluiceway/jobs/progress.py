"""``Progress``: how a running job says how far it got, without flooding its stream.

A job calls :meth:`Progress.advance` or :meth:`Progress.update` as often as it likes (every
row, if that is convenient); a ``progress`` event is published at most once per ``interval``
(0.1 s), and once more at the end, so a job's history holds at most ten events a second
however fast it runs.

>>> async def run(progress, params):                               # doctest: +SKIP
...     progress.set_total(len(params.items))
...     for item in params.items:
...         await handle(item)
...         await progress.advance()
...     return {"handled": len(params.items)}
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

#: Seconds between two ``progress`` events at most (the last one is always sent).
REPORT_INTERVAL = 0.1

Publish = Callable[[dict[str, Any]], Awaitable[None]]


class Progress:
    """A running job's progress: ``done`` of ``total`` (``None`` while unknown).

    Also carries what a job's ``run`` needs to know about where it runs: ``job_id``, and
    ``context``, what the job manager was given for its jobs (the server's: an
    :class:`~sluiceway.jobs.export_job.ExportContext`; your app's: anything).
    """

    def __init__(
        self,
        job_id: str,
        publish: Publish,
        *,
        context: Any = None,
        interval: float = REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_id = job_id
        self.context = context
        self.done = 0
        self.total: int | None = None
        self._publish = publish
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._ended: float | None = None
        self._last_report = float("-inf")
        self._reported: tuple[int, int | None] | None = None

    def set_total(self, total: int | None) -> None:
        """The amount of work, when known (rows, bytes, items...)."""
        self.total = total

    async def advance(self, amount: int = 1) -> None:
        """``amount`` more done; publishes if the last event is ``interval`` old."""
        self.done += amount
        await self._maybe_report()

    async def update(self, done: int, total: int | None = None) -> None:
        """``done`` so far (and the total, if it changed); publishes like :meth:`advance`."""
        self.done = done
        if total is not None:
            self.total = total
        await self._maybe_report()

    async def flush(self) -> None:
        """Publish now if anything changed since the last event."""
        snapshot = self.take_unreported()
        if snapshot is not None:
            await self._publish(snapshot)

    def take_unreported(self) -> dict[str, Any] | None:
        """The snapshot to publish if anything changed since the last event (counted as
        published): the job's end publishes it itself, with its last event."""
        if self._reported == (self.done, self.total):
            return None
        self._last_report = self._clock()
        self._reported = (self.done, self.total)
        return self.snapshot()

    def stop(self) -> None:
        """The job ended: the rate stops changing."""
        if self._ended is None:
            self._ended = self._clock()

    def snapshot(self) -> dict[str, Any]:
        """``{"done", "total", "percent", "eta_s", "rate"}``: rate is per second since the
        start; percent and ETA are ``None`` while the total is unknown."""
        now = self._ended if self._ended is not None else self._clock()
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        total = self.total
        percent = eta = None
        if total is not None:
            total = max(total, self.done)  # the work may have grown since it was counted
            percent = round(100.0 * self.done / total, 1) if total else 100.0
            eta = round((total - self.done) / rate, 1) if rate > 0 else None
        return {
            "done": self.done,
            "total": total,
            "percent": percent,
            "eta_s": eta,
            "rate": round(rate, 1),
        }

    async def _maybe_report(self) -> None:
        if self._clock() - self._last_report >= self._interval:
            await self._report()

    async def _report(self) -> None:
        self._reported = None  # published even when unchanged: the interval has passed
        await self.flush()


__all__ = ["REPORT_INTERVAL", "Progress"]
