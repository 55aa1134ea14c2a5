"""The bounds of generations, each with its policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sluiceway.runs.limits import RunLimits


@dataclass(frozen=True, slots=True)
class GenerationLimits:
    """Bounds of :class:`~sluiceway.gateway.manager.Generations`.

    >>> GenerationLimits(max_concurrent=4, abandon_after=10.0, on_abandon="finish")
    ... # doctest: +ELLIPSIS
    GenerationLimits(max_concurrent=4, ...)
    """

    #: Generations running at once; one more is refused (429).
    max_concurrent: int = 16
    #: Largest ``max_tokens`` a request may ask for (400 beyond).
    max_tokens: int = 4096
    #: Seconds a generation may run; then it ends with finish reason ``time_limit``.
    max_duration: float = 300.0
    #: Seconds to wait for the first chunk from the provider (504 beyond).
    first_token_timeout: float = 60.0
    #: Seconds with no client attached before ``on_abandon`` applies.
    abandon_after: float = 30.0
    #: ``cancel``: stop the provider (no more tokens billed); ``finish``: let it complete.
    on_abandon: Literal["cancel", "finish"] = "cancel"
    #: Seconds a finished generation stays replayable.
    retention: float = 600.0

    def __post_init__(self) -> None:
        if self.max_concurrent < 1 or self.max_tokens < 1:
            raise ValueError("max_concurrent and max_tokens must be at least 1")
        for name in ("max_duration", "first_token_timeout", "abandon_after", "retention"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    def run_limits(self) -> RunLimits:
        """The bounds of the runs that generations are."""
        return RunLimits(
            max_concurrent=self.max_concurrent,
            max_duration=self.max_duration,
            first_item_timeout=self.first_token_timeout,
            # Tokens, tool-call pieces and partial values: four events a token is plenty.
            max_items=4 * self.max_tokens + 64,
            abandon_after=self.abandon_after,
            on_abandon=self.on_abandon,
            retention=self.retention,
        )
