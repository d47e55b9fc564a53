"""Switch states in Redis: written when they are news, and a version that
tells readers when to read them again."""

from __future__ import annotations

from redis.asyncio import Redis

from announcer.keys import Keys
from announcer.states import State, SwitchState
from announcer.store import StateStore


async def test_jitter_is_not_news_but_a_new_state_or_a_slow_link_is(
    redis: Redis, keys: Keys
) -> None:
    store = StateStore(redis, keys)
    await store.publish({"a": SwitchState(State.UP, 100.0, rtt_ms=0.210)})
    first = await store.version()
    assert first > 0
    await store.publish({"a": SwitchState(State.UP, 100.0, rtt_ms=0.260)})
    assert await store.version() == first  # microseconds of jitter: nothing written
    assert (await store.states())["a"]["rtt_ms"] == 0.21

    await store.publish({"a": SwitchState(State.UP, 100.0, rtt_ms=35.0)})
    assert await store.version() == first + 1  # a link that got slow is shown
    assert (await store.states())["a"]["rtt_ms"] == 35.0

    await store.publish({"a": SwitchState(State.DOWN, 200.0, reason="no echo reply")})
    assert await store.version() == first + 2
    assert (await store.states())["a"]["state"] == "down"

    await store.forget(keep=[])
    assert await store.version() == first + 3
    assert await store.states() == {}
