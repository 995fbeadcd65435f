"""Flood buckets, exemption lists and per-address keys (chatcore.limits), on a fake clock."""
from __future__ import annotations

import pytest

from chatcore import config as config_module
from chatcore.limits import AddressCounter, ExemptList, TokenBucket, address_key


def test_a_bucket_allows_its_burst_then_its_rate():
    bucket = TokenBucket(burst=3, per_second=2.0, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)      # the next token in half a second
    assert bucket.take(100.5) == 0.0
    assert bucket.take(100.5) == pytest.approx(0.5)


def test_a_bucket_refills_only_up_to_its_burst():
    bucket = TokenBucket(burst=2, per_second=1.0, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    assert [bucket.take(3600.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_exempt_list_matches_addresses_and_networks():
    exempt = ExemptList("127.0.0.1, 10.0.0.0/8 ,2001:db8::/32")
    assert "127.0.0.1" in exempt
    assert "127.0.0.2" not in exempt
    assert "10.200.3.4" in exempt
    assert "::ffff:10.1.1.1" in exempt              # IPv4 on a dual-stack listener
    assert "2001:db8:1::5" in exempt
    assert "2001:db9::1" not in exempt
    assert "fe80::1%eth0" not in exempt
    assert "not an address" not in exempt
    assert "127.0.0.1" not in ExemptList("")


def test_a_bad_exemption_is_a_configuration_error():
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        config_module.load(environ={"CHATCORE_LIMIT_EXEMPT": "127.0.0.1,10.0.0.300"})


def test_ipv6_addresses_count_per_64():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") != address_key("192.0.2.8")


def test_address_counter_forgets_empty_keys():
    counter = AddressCounter()
    counter.add("a")
    counter.add("a")
    counter.remove("a")
    assert counter.count("a") == 1
    counter.remove("a")
    assert counter.count("a") == 0 and not counter._counts


@pytest.mark.parametrize("name", ["max_turn_work_units", "flood_chat_messages_per_second",
                                  "max_connections_per_address", "max_held_input_bytes"])
def test_new_limits_must_be_positive(name):
    with pytest.raises(ValueError, match=name):
        config_module.load(environ={f"CHATCORE_{name.upper()}": "0"})
