"""The Mercure face across processes: two ``sluiceway serve`` sharing one Redis. An update
published on one is delivered by the other, a publisher's id resumes exactly on either, a
duplicate id is refused by either, and private updates still need a matching grant."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from conftest import StartServer
from redisproc import RedisCluster, RedisProcess
from serverproc import ServerProcess
from test_mercure import HUB, PUBLISHER, SECRET, publish, read, token, topic_of


@pytest.fixture
def pair(
    shared_redis: RedisProcess | RedisCluster, start_server: StartServer
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {
        "SLUICEWAY_BACKEND": shared_redis.url,
        "SLUICEWAY_TOKEN_HMAC_SECRET": SECRET,
        "SLUICEWAY_MERCURE_PUBLIC_URL": HUB,
        "SLUICEWAY_ANONYMOUS_PUBLISH": "false",
    }
    yield start_server(env=env), start_server(env=env)


def test_publisher_ids_across_processes(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    topic = topic_of("shared")
    for n in range(5):
        assert publish(a, topic=topic, data=str(n), id=f"urn:shared:{topic}:{n}").status_code == 200
    # B holds A's updates: resume from a publisher's id, and refuse it again.
    headers = {"last-event-id": f"urn:shared:{topic}:1"}
    response, events = read(b, [("match", topic)], 3, headers=headers)
    assert response.headers["last-event-id"] == f"urn:shared:{topic}:1"
    assert [e.data for e in events] == ["2", "3", "4"]
    assert [e.id for e in events] == [f"urn:shared:{topic}:{n}" for n in (2, 3, 4)]
    assert publish(b, topic=topic, data="again", id=f"urn:shared:{topic}:3").status_code == 409
    # And the other way: published on B, resumed and refused on A.
    assert publish(b, topic=topic, data="5", id=f"urn:shared:{topic}:5").status_code == 200
    assert publish(a, topic=topic, data="again", id=f"urn:shared:{topic}:5").status_code == 409
    response, events = read(
        a, [("match", topic)], 1, headers={"last-event-id": f"urn:shared:{topic}:4"}
    )
    assert [e.data for e in events] == ["5"]


def test_private_updates_across_processes(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    topic = topic_of("private")
    publish(a, topic=topic, data="secret", private="on")
    publish(a, topic=topic, data="public")
    everything = [("match", topic), ("lastEventID", "earliest")]
    _, anonymous = read(b, everything, 2, timeout=1.0)
    assert [e.data for e in anonymous] == ["public"]
    granted = {"authorization": f"Bearer {token(subscribe=[topic])}"}
    _, events = read(b, everything, 2, headers=granted)
    assert [e.data for e in events] == ["secret", "public"]


async def test_one_new_id_published_at_once_on_both_processes_is_accepted_once(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    """The duplicate-id check is atomic in the backend, not per process: 20 rounds of the
    same new id sent to both processes at the same instant, 4 tries each."""
    a, b = pair
    topic = topic_of("race")
    headers = {"authorization": f"Bearer {PUBLISHER}"}
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        for round_ in range(20):
            form = {"topic": topic, "data": str(round_), "id": f"urn:race:{topic}:{round_}"}
            answers = await asyncio.gather(
                *(
                    http.post(f"{server.url}/.well-known/mercure", data=form)
                    for server in (a, b, a, b, a, b, a, b)
                )
            )
            codes = sorted(answer.status_code for answer in answers)
            assert codes == [200] + [409] * 7, [a.text for a in answers]
    _, events = read(b, [("match", topic), ("lastEventID", "earliest")], 20)
    assert [e.data for e in events] == [str(n) for n in range(20)]
