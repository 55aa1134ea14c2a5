"""Joins and leaves: announced through the hub, so that the subscribers of every process hear
them, with one Redis or a cluster as with publications.

Each channel has a companion topic (internal: no client subscribes to it by name) where a
connection publishes its join when it subscribes and its leave when it unsubscribes or goes;
the connections that asked for ``join_leave`` follow it from the moment they subscribe and turn
its events into join and leave pushes.  A process that dies announces nothing: its clients'
presence entries expire instead (Centrifugo does the same).

>>> topic_of("chat")
'sluiceway.joinleave:c54efd770e4dd86d29eb355c8490db5a'
"""

from __future__ import annotations

import hashlib

from sluiceway.auth.resources import INTERNAL_TOPIC_PREFIX

PREFIX = INTERNAL_TOPIC_PREFIX + "joinleave:"
JOIN = "join"
LEAVE = "leave"


def topic_of(channel: str) -> str:
    """The companion topic of ``channel``: a digest, so that any channel name (up to the
    topic name's 200 characters) has a valid one."""
    return PREFIX + hashlib.blake2b(channel.encode(), digest_size=16).hexdigest()
