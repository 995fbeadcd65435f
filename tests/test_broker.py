"""The Redis link on a real reactor against a real redis-server: pipelining, replies in
order, pub/sub, errors, outages (Redis stopped, paused, or dropping a slow subscriber)."""
from __future__ import annotations

import logging
import signal

import pytest

from chatcore.broker import (Broker, BrokerUnavailable, RedisAddress, ReplyError,
                             check_reachable)
from chatcore.errors import ChatError, ErrorCode
from chatcore.reactor import Reactor


@pytest.fixture
def reactor():
    loop = Reactor()
    yield loop
    loop.close()


def run_until(reactor: Reactor, condition, timeout: float = 10.0) -> None:
    """Run the loop until ``condition()`` holds after a turn; fail after ``timeout``."""
    state = {"active": True}

    def check():
        if state["active"] and condition():
            reactor.stop()

    def give_up():
        state["timed_out"] = True
        reactor.stop()

    reactor.add_before_sleep(check)
    guard = reactor.call_later(timeout, give_up)
    try:
        if not condition():
            reactor.run()
    finally:
        state["active"] = False
        guard.cancel()
    assert not state.get("timed_out"), f"condition not met within {timeout}s"


def make_broker(reactor, url: str, **kwargs) -> Broker:
    broker = Broker(reactor, RedisAddress.parse(url), **kwargs)
    broker.start()
    run_until(reactor, lambda: broker.up)
    return broker


def test_url_parsing_and_redaction():
    address = RedisAddress.parse("redis://:s3cret@example.org:6380/2")
    assert (address.host, address.port, address.db, address.password) == (
        "example.org", 6380, 2, "s3cret")
    assert "s3cret" not in address.url
    assert RedisAddress.parse("redis://localhost").port == 6379
    for bad in ("http://x", "redis://", "redis://h/abc", "redis://h:99999"):
        with pytest.raises(ValueError, match="redis URL"):
            RedisAddress.parse(bad)


def test_commands_of_one_turn_are_one_write_and_replies_come_in_order(reactor, redis_server):
    broker = make_broker(reactor, redis_server.url)
    writes_before = broker.commands.writes
    replies = []

    def issue():
        for i in range(200):
            broker.call("SET", f"broker-test:{i}", i)
            broker.call("GET", f"broker-test:{i}", callback=replies.append)

    reactor.call_soon(issue)
    run_until(reactor, lambda: len(replies) == 200)
    assert replies == [str(i).encode() for i in range(200)]
    assert broker.commands.writes == writes_before + 1
    broker.close()


def test_an_error_reply_goes_to_its_callback_and_the_link_stays(reactor, redis_server):
    broker = make_broker(reactor, redis_server.url)
    replies = []
    broker.call("SET", "broker-test:text", "not a number")
    broker.call("INCR", "broker-test:text", callback=replies.append)
    broker.call("PING", callback=replies.append)
    run_until(reactor, lambda: len(replies) == 2)
    assert isinstance(replies[0], ReplyError) and "not an integer" in str(replies[0])
    assert replies[1] == b"PONG"
    broker.close()


def test_published_messages_reach_subscribers(reactor, redis_server):
    broker = make_broker(reactor, redis_server.url)
    got = []
    broker.subscribe("broker-test:chan", lambda channel, data: got.append((channel, data)))
    wait_subscribed(reactor, broker, "broker-test:chan")
    for i in range(3):
        broker.publish("broker-test:chan", b"m%d" % i)
    run_until(reactor, lambda: len(got) == 3)
    assert got == [(b"broker-test:chan", b"m0"), (b"broker-test:chan", b"m1"),
                   (b"broker-test:chan", b"m2")]
    broker.close()


def wait_subscribed(reactor, broker: Broker, channel: str) -> None:
    """SUBSCRIBE and PUBLISH go out on different connections: publish only once Redis counts
    the subscriber, so a test does not race the subscription."""
    box: list = []
    run_until(reactor, lambda: _subscribers(broker, channel, box) == 1)


def _subscribers(broker: Broker, channel: str, box: list) -> int:
    """Ask Redis (asynchronously) how many subscribe ``channel``; the last answer so far."""
    if not box or box[-1] is not None:
        box.append(None)
        broker.call("PUBSUB", "NUMSUB", channel,
                    callback=lambda reply: box.__setitem__(-1, reply[1]))
    answered = [count for count in box if count is not None]
    return answered[-1] if answered else -1


def test_redis_stopped_and_restarted(reactor, start_redis, caplog):
    redis = start_redis()
    broker = make_broker(reactor, redis.url)
    got = []
    broker.subscribe("broker-test:chan", lambda channel, data: got.append(data))
    downs = []
    broker.on_down = lambda: downs.append("down")
    wait_subscribed(reactor, broker, "broker-test:chan")

    with caplog.at_level(logging.WARNING, logger="chatcore.broker"):
        redis.stop()
        run_until(reactor, lambda: not broker.up)
        assert downs == ["down"]
        failed = []
        broker.call("PING", callback=failed.append)
        assert isinstance(failed[0], BrokerUnavailable)
        # A few failed reconnects (backoff) while Redis is down: still one log line.
        retries = []
        reactor.call_later(0.5, retries.append, True)
        run_until(reactor, lambda: retries)
        redis.start()
        run_until(reactor, lambda: broker.up)
        wait_subscribed(reactor, broker, "broker-test:chan")
        broker.publish("broker-test:chan", b"after")
        run_until(reactor, lambda: got == [b"after"])

    warnings = [r.getMessage() for r in caplog.records]
    assert len([m for m in warnings if "is unreachable" in m]) == 1, warnings
    assert len([m for m in warnings if "reachable again" in m]) == 1, warnings
    assert redis.url in warnings[0]
    assert broker.outages == 1
    broker.close()


def test_a_redis_that_stops_answering_is_dropped_after_the_timeout(reactor, start_redis):
    redis = start_redis()
    broker = make_broker(reactor, redis.url, timeout_seconds=0.6)
    replies = []
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        broker.call("PING", callback=replies.append)
        run_until(reactor, lambda: not broker.up)
        assert isinstance(replies[0], BrokerUnavailable)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    run_until(reactor, lambda: broker.up)
    broker.call("PING", callback=replies.append)
    run_until(reactor, lambda: len(replies) == 2)
    assert replies[1] == b"PONG"
    broker.close()


def test_a_subscriber_dropped_by_redis_for_its_output_buffer_recovers(reactor, start_redis):
    redis = start_redis("--client-output-buffer-limit", "pubsub 64kb 0 0")
    broker = make_broker(reactor, redis.url)
    got = []
    broker.subscribe("broker-test:chan", lambda channel, data: got.append(data))
    wait_subscribed(reactor, broker, "broker-test:chan")
    # The loop is not running: nobody reads the subscriber socket while 2 MB are published.
    for _ in range(20):
        redis.command("PUBLISH", "broker-test:chan", b"x" * 100_000)
    run_until(reactor, lambda: broker.outages == 1 and broker.up)
    wait_subscribed(reactor, broker, "broker-test:chan")
    got.clear()
    broker.publish("broker-test:chan", b"after the drop")
    run_until(reactor, lambda: b"after the drop" in got)
    broker.close()


def test_check_reachable_names_what_failed(redis_server):
    check_reachable(RedisAddress.parse(redis_server.url), 2.0)
    with pytest.raises(OSError):
        check_reachable(RedisAddress.parse("redis://127.0.0.1:1/0"), 2.0)


def test_unix_socket_url_parsing():
    address = RedisAddress.parse("unix://:s3cret@/run/redis/redis.sock?db=3")
    assert (address.unix_path, address.db, address.password) == ("/run/redis/redis.sock", 3,
                                                                 "s3cret")
    assert "s3cret" not in address.url and address.url.endswith("redis.sock?db=3")
    assert RedisAddress.parse("unix:///tmp/r.sock").db == 0
    for bad in ("unix://", "unix:///", "unix:///tmp/r.sock?db=x"):
        with pytest.raises(ValueError, match="redis URL"):
            RedisAddress.parse(bad)


def test_a_unix_socket_link_pipelines_and_subscribes(reactor, start_redis, tmp_path):
    path = tmp_path / "redis.sock"
    start_redis("--unixsocket", str(path), "--unixsocketperm", "700")
    url = f"unix://{path}"
    check_reachable(RedisAddress.parse(url), 2.0)
    broker = make_broker(reactor, url)
    replies, got = [], []
    broker.subscribe("broker-test:unix", lambda channel, data: got.append(data))
    wait_subscribed(reactor, broker, "broker-test:unix")
    writes_before = broker.commands.writes

    def issue():
        for i in range(50):
            broker.call("SET", f"broker-test:unix:{i}", i)
            broker.call("GET", f"broker-test:unix:{i}", callback=replies.append)
        broker.publish("broker-test:unix", b"over the socket")

    reactor.call_soon(issue)
    run_until(reactor, lambda: len(replies) == 50 and got)
    assert replies == [str(i).encode() for i in range(50)] and got == [b"over the socket"]
    assert broker.commands.writes == writes_before + 1
    broker.close()


def test_a_cluster_node_on_a_unix_socket_claims_names(start_redis, start_node, clients,
                                                      tmp_path):
    path = tmp_path / "redis.sock"
    start_redis("--unixsocket", str(path), "--unixsocketperm", "700")
    alpha = start_node("alpha", redis_url=f"unix://{path}")
    beta = start_node("beta", redis_url=f"unix://{path}")
    clients(alpha, "uma")
    with pytest.raises(ChatError) as refused:
        clients(beta, "UMA")
    assert refused.value.code == ErrorCode.NAME_TAKEN
