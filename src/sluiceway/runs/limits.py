"""The bounds of runs, each with its policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class RunLimits:
    """Bounds of :class:`~sluiceway.runs.Runs`: what happens at each is the run's last event.

    >>> RunLimits(max_concurrent=8, max_per_owner=2, abandon_after=10.0)  # doctest: +ELLIPSIS
    RunLimits(max_concurrent=8, max_per_owner=2, ...)
    """

    #: Runs going at once; one more is refused (429 ``too_many_runs``).
    max_concurrent: int = 256
    #: Runs going at once for one owner; one more is refused (429). None: no such bound.
    max_per_owner: int | None = None
    #: Seconds a run may go on; then it ends with state ``time_limit``.
    max_duration: float = 600.0
    #: Seconds to wait for the producer's first item; then it fails with ``timeout``.
    first_item_timeout: float = 60.0
    #: Items a run may produce; then it ends with state ``limit``. None: no such bound.
    max_items: int | None = None
    #: Bytes of event data a run may produce; then it ends with state ``limit``.
    max_bytes: int | None = 64 * 1024 * 1024
    #: Seconds with nobody following it before ``on_abandon`` applies.
    abandon_after: float = 30.0
    #: ``cancel``: stop the producer (no more tokens billed); ``finish``: let it complete.
    on_abandon: Literal["cancel", "finish"] = "cancel"
    #: Seconds an ended run stays replayable (its events, its description).
    retention: float = 600.0

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        for name in ("max_per_owner", "max_items", "max_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None)")
        for name in ("max_duration", "first_item_timeout", "abandon_after", "retention"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
