"""The Mercure face's own costs with 1,000 updates retained: opening a subscription (live, and
resuming from a publisher's id) and publishing with a publisher's id (which checks the id is
not already held). In-process, no HTTP: what each request adds to the hub's work.

    uv run python bench/mercure_face.py [--retained 1000] [--rounds 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from harness.report import md_row, md_table

from sluiceway.auth.grants import Grants
from sluiceway.hub import Hub, HubConfig
from sluiceway.mercure.publication import parse_publish_form
from sluiceway.server.mercure_face import MercureFace

HUB_URL = "https://hub.example/.well-known/mercure"


def update(topic: str, data: str, external_id: str):  # type: ignore[no-untyped-def]
    fields = [("topic", topic), ("data", data), ("id", external_id)]
    return parse_publish_form(fields, hub_url=HUB_URL)


async def main(retained: int, rounds: int) -> None:
    hub = Hub(HubConfig(history_size=retained))
    await hub.start()
    face = MercureFace(hub)
    for n in range(retained):
        await face.publish(update(f"https://example.com/books/{n}", "x" * 100, f"urn:book:{n}"))
    anyone = Grants.anonymous(subscribe=True)
    middle = f"urn:book:{retained // 2}"

    async def open_live() -> None:
        subscription, _ = await face.open(None, anyone)
        subscription.release()

    async def open_from_id() -> None:
        subscription, _ = await face.open(middle, anyone)
        subscription.release()

    counter = iter(range(10**9))

    async def publish_with_id() -> None:
        await face.publish(update("https://example.com/x", "x", f"urn:new:{next(counter)}"))

    print(f"{retained} updates retained, {rounds} rounds each\n")
    print("\n".join(md_table(["operation", "µs each"], [], right=True)))
    for name, step in [
        ("open a live subscription", open_live),
        ("open, resuming from a publisher's id", open_from_id),
        ("publish with a publisher's id", publish_with_id),
    ]:
        started = time.perf_counter()
        for _ in range(rounds):
            await step()
        print(md_row([name, f"{(time.perf_counter() - started) / rounds * 1e6:.1f}"]))
    await hub.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--retained", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.retained, args.rounds))
