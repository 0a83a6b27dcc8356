"""The stand-in serves the topics the SDK's TopicClientAsync uses (for fleet invalidation)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.stand_ins.momento_fixtures import TEST_CACHE
from tests.stand_ins.momento_server import MomentoStandIn

pytestmark = pytest.mark.momento


@pytest.fixture
async def topics(momento: MomentoStandIn) -> AsyncIterator[Any]:
    from momento import CredentialProvider, TopicClientAsync, TopicConfigurations

    provider = CredentialProvider.for_momento_local("127.0.0.1", momento.port)
    client = TopicClientAsync(TopicConfigurations.Default.latest(), provider)
    yield client
    await client.close()


async def next_item(subscription: Any) -> Any:
    return await asyncio.wait_for(anext(subscription), timeout=5)


async def test_published_items_reach_every_subscriber_in_order(
    topics: Any, momento: MomentoStandIn
) -> None:
    from momento.responses import TopicPublish, TopicSubscribe, TopicSubscriptionItem

    first = await topics.subscribe(TEST_CACHE, "invalidations")
    second = await topics.subscribe(TEST_CACHE, "invalidations")
    assert isinstance(first, TopicSubscribe.SubscriptionAsync)
    assert isinstance(second, TopicSubscribe.SubscriptionAsync)
    assert isinstance(
        await topics.publish(TEST_CACHE, "invalidations", "users:42"), TopicPublish.Success
    )
    assert isinstance(
        await topics.publish(TEST_CACHE, "other-topic", "not for them"), TopicPublish.Success
    )
    assert isinstance(
        await topics.publish(TEST_CACHE, "invalidations", b"\x00bin"), TopicPublish.Success
    )
    for subscription in (first, second):
        text = await next_item(subscription)
        assert isinstance(text, TopicSubscriptionItem.Text)
        assert text.value == "users:42"
        binary = await next_item(subscription)
        assert isinstance(binary, TopicSubscriptionItem.Binary)
        assert binary.value == b"\x00bin"
        subscription.unsubscribe()
    calls = momento.calls()
    assert calls["Subscribe"] == 2 and calls["Publish"] == 3


async def test_a_resumed_subscription_gets_what_it_missed(topics: Any) -> None:
    from momento.responses import TopicSubscriptionItem

    for value in ("one", "two", "three"):
        await topics.publish(TEST_CACHE, "t", value)
    subscription = await topics.subscribe(TEST_CACHE, "t", resume_at_topic_sequence_number=1)
    received = [await next_item(subscription) for _ in range(2)]
    assert all(isinstance(item, TopicSubscriptionItem.Text) for item in received)
    assert [item.value for item in received] == ["two", "three"]
    subscription.unsubscribe()


async def test_topics_of_a_missing_cache_are_not_found(topics: Any) -> None:
    from momento.errors import MomentoErrorCode
    from momento.responses import TopicPublish, TopicSubscribe

    published = await topics.publish("no-such-cache", "t", "x")
    assert isinstance(published, TopicPublish.Error)
    assert published.error_code is MomentoErrorCode.NOT_FOUND_ERROR
    subscribed = await topics.subscribe("no-such-cache", "t")
    assert isinstance(subscribed, TopicSubscribe.Error)
    assert subscribed.error_code is MomentoErrorCode.NOT_FOUND_ERROR
