"""The topics this process holds, by name: owned by the hub, filled by it and by the mirrors.

With a shared backend, topics are *shared* (every process sees the same history, mirrored
here by :mod:`sluiceway.hub.mirror`) unless their names match ``process_local_topics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sluiceway.hub.config import HubConfig
from sluiceway.hub.subscription import Subscription
from sluiceway.hub.topic import Topic


class TopicTable:
    def __init__(
        self,
        config: HubConfig,
        on_sinks_ready: Callable[[set[Subscription]], None],
        *,
        shared: bool,
    ) -> None:
        self.config = config
        self._on_sinks_ready = on_sinks_ready
        self._shared = shared
        self._topics: dict[str, Topic[Subscription]] = {}

    def is_shared(self, name: str) -> bool:
        """Kept by the shared backend (mirrored here), not by this process alone."""
        return self._shared and not self.config.is_process_local(name)

    def new(self, name: str, *, epoch: str | None = None, base: int = 1) -> Topic[Subscription]:
        """A topic with its own bounds, not yet in the table (see :meth:`add`)."""
        return Topic(name, self.config.for_topic(name), self._on_sinks_ready, epoch, base)

    def add(self, topic: Topic[Subscription]) -> None:
        self._topics[topic.name] = topic

    def get(self, name: str) -> Topic[Subscription] | None:
        return self._topics.get(name)

    def pop(self, name: str) -> Topic[Subscription] | None:
        return self._topics.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._topics

    def __len__(self) -> int:
        return len(self._topics)

    def __iter__(self) -> Iterator[Topic[Subscription]]:
        return iter(self._topics.values())

    def names(self) -> list[str]:
        return list(self._topics)

    @property
    def full(self) -> bool:
        return len(self._topics) >= self.config.max_topics
