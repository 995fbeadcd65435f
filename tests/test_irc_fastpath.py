"""The plain PRIVMSG fast path: ``read_privmsg`` (both implementations, held to each other and
to the general parser), the sender left out by ``fanout``'s ``skip``, and the two ways a
PRIVMSG can take through a real server giving the same result."""
from __future__ import annotations

import os
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatcore.codec import codec_c, codec_py, ircframe_c, ircframe_py
from chatcore.irc.message import Message, MessageError, parse
from chatcore.irc.text import parse_ctcp, strip_formatting

_REQUIRED = bool(os.environ.get("CHATCORE_REQUIRE_EXTENSIONS"))


def _impls(python, compiled, name):
    return pytest.fixture(scope="session", params=[
        pytest.param(python, id="python"),
        pytest.param(compiled, id="cython", marks=pytest.mark.skipif(
            compiled is None and not _REQUIRED, reason=f"chatcore.{name} is not built")),
    ])(lambda request: request.param or pytest.fail(f"chatcore.{name} is not built",
                                                    pytrace=False))


framer = _impls(ircframe_py, ircframe_c, "_ircframe")
codec = _impls(codec_py, codec_c, "_speedups")


# -- read_privmsg ------------------------------------------------------------------------


@pytest.mark.parametrize("line, target, text", [
    (b"PRIVMSG #lobby :hello there", "#lobby", "hello there"),
    (b"PRIVMSG bob :hi", "bob", "hi"),
    (b"PRIVMSG #a : leading space kept", "#a", " leading space kept"),
    (b"PRIVMSG #a :colons: :and spaces ", "#a", "colons: :and spaces "),
    ("PRIVMSG #caf\u00e9 :th\u00e9 \U0001f600".encode(), "#caf\u00e9", "th\u00e9 \U0001f600"),
    (b"PRIVMSG #a :" + b"x" * 498, "#a", "x" * 498),           # 510 bytes: the longest
])
def test_plain_privmsg_lines_are_read(framer, line, target, text):
    event = framer.read_privmsg(line)
    assert (event.target, event.text) == (target, text)


@pytest.mark.parametrize("line", [
    b"PRIVMSG #a :" + b"x" * 499,           # 511 bytes: 417 from the general parser
    b"privmsg #a :lower-case command",
    b"@label=1 PRIVMSG #a :tagged",
    b":alice PRIVMSG #a :with a source",
    b"PRIVMSG #a,#b :two targets",
    b"PRIVMSG  #a :two spaces",
    b"PRIVMSG #a  :two spaces",
    b"PRIVMSG :#a :trailing target",
    b"PRIVMSG #a word", b"PRIVMSG #a :", b"PRIVMSG #a ", b"PRIVMSG #a", b"PRIVMSG ",
    b"PRIVMSG", b"NOTICE #a :not a privmsg",
    b"PRIVMSG #a :\x01ACTION waves\x01",      # CTCP
    b"PRIVMSG #a :\x02bold\x02",              # formatting
    b"PRIVMSG #a :tab\there",
    b"PRIVMSG #a :nul\x00", b"PRIVMSG #a :del\x7f", b"PRIVMSG #a :c1 \xc2\x85",
    b"PRIVMSG #a :bad \xff utf-8", b"PRIVMSG #\xc3 :bad target",
    b"PRIVMSG #a :surrogate \xed\xa0\x80",
])
def test_other_lines_take_the_general_way(framer, line):
    assert framer.read_privmsg(line) is None


_pieces = st.one_of(
    st.sampled_from([b"PRIVMSG", b"PRIVMSG ", b" ", b"  ", b":", b"#", b",", b"#room", b"bob",
                     b"\x01", b"\x02", b"\t", b"\x00", b"\x7f", b"\xc2\x85", b"\xc2\xa0",
                     b"\xc3\xa9", b"\xff", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80", b"@a=b ",
                     b"privmsg", b"x" * 200]),
    st.binary(max_size=12),
)
_lines = st.tuples(
    st.sampled_from([b"PRIVMSG ", b"PRIVMSG", b"", b"privmsg ", b"@t "]),
    st.lists(_pieces, max_size=12).map(b"".join),
).map(b"".join).map(lambda line: line.replace(b"\r", b"").replace(b"\n", b""))


@given(_lines)
@example(b"PRIVMSG #a :" + b"x" * 498)
@example(b"PRIVMSG #a :" + b"x" * 499)
def test_compiled_and_pure_read_alike(line):
    if ircframe_c is None:
        pytest.skip("chatcore._ircframe is not built")
    assert ircframe_c.read_privmsg(line) == ircframe_py.read_privmsg(line)
    assert (ircframe_c.read_privmsg(line) is None) == (ircframe_py.read_privmsg(line) is None)


@given(_lines)
def test_what_the_fast_path_takes_the_general_parser_reads_the_same(line):
    """A line read_privmsg takes is one privmsg() would treat as exactly this: one target,
    text that is neither CTCP nor changed by strip_formatting."""
    event = ircframe_py.read_privmsg(line)
    if event is None:
        return
    try:
        message = parse(line)
    except MessageError as exc:           # pragma: no cover - the assertion's message
        raise AssertionError(f"the general parser refuses {line!r}: {exc.text}") from None
    assert message == Message("PRIVMSG", [event.target, event.text])
    assert "," not in event.target and event.text
    assert strip_formatting(event.text) == event.text
    assert parse_ctcp(event.text) is None


# -- fanout's skip -----------------------------------------------------------------------


def test_fanout_skips_the_one_buffer_named(codec):
    buffers = [codec.OutputBuffer(None, 0) for _ in range(4)]
    became_pending = codec.fanout(b"line\r\n", buffers, buffers[2])
    assert became_pending == [buffers[0], buffers[1], buffers[3]]
    assert [b.pending_bytes for b in buffers] == [6, 6, 0, 6]
    assert codec.fanout(b"more\r\n", buffers) == [buffers[2]]    # no skip: everyone
    assert [b.pending_bytes for b in buffers] == [12, 12, 6, 12]


# -- through a real server ---------------------------------------------------------------


def test_plain_formatted_ctcp_and_lower_case_privmsgs_arrive_in_order(irc):
    alice, bob = irc("alice"), irc("bob")
    for client in (alice, bob):
        client.send("JOIN #r")
        client.expect("366")
    alice.send("PRIVMSG #r :plain", "PRIVMSG #r :\x02bold\x02", "privmsg #r :lower",
               "PRIVMSG #r :\x01ACTION waves\x01", "PRIVMSG #r :plain again",
               "PRIVMSG bob :direct", "PRIVMSG bob,#r :both")
    alice.sync()            # alice's lines handled: bob's copies are queued before...
    bob.sync()              # ...the answer to bob's PING
    got = [m for m in bob.drain() if m.command == "PRIVMSG"]
    assert [(m.params[0], m.params[1]) for m in got] == [
        ("#r", "plain"), ("#r", "bold"), ("#r", "lower"), ("#r", "\x01ACTION waves\x01"),
        ("#r", "plain again"), ("bob", "direct"), ("bob", "both"), ("#r", "both")]
    assert not [m for m in alice.drain() if m.command == "PRIVMSG"]   # no echo


def test_a_plain_privmsg_before_registration_gets_451(irc):
    client = irc()
    client.send("PRIVMSG #r :too early", "PRIVMSG bob :too early")
    client.expect("451", "You have not registered")
    client.expect("451", "You have not registered")


def test_plain_privmsg_refusals(irc, native):
    alice = irc("alice")
    native("carol").join("elsewhere")
    alice.send("PRIVMSG nobody :hi", "PRIVMSG #nowhere :hi", "PRIVMSG #elsewhere :hi",
               "PRIVMSG # :hi", "PRIVMSG carol :to a native user")
    alice.expect("401", "nobody")
    alice.expect("403", "#nowhere")
    alice.expect("404", "#elsewhere")
    alice.expect("403", "#")
    alice.sync()
    assert not [m for m in alice.drain() if m.command.isdigit()]


# -- the lane (chatcore.lane.run_irc) ----------------------------------------------------


def _lane_impls():
    from chatcore import _lane_py, lane
    return [pytest.param(None, id="hub-path"), pytest.param(_lane_py, id="lane-python"),
            pytest.param(lane.lane_c, id="lane-cython", marks=pytest.mark.skipif(
                lane.lane_c is None and not _REQUIRED, reason="chatcore._lane is not built"))]


def _mixed_room_run(lane_impl):
    """IRC and native senders into a room of native members and IRC members of both
    encodings, and into open chats across front ends: what each one received, and which
    of them reached the hub's send_room/send_direct (the hub path) rather than the lane."""
    from chatcore import events as ev
    from chatcore.protocol import encode_event
    from tests.lane_world import frame, irc, name_and_text, native, world

    with world(lane_impl, limit_exempt="", irc_port=0) as server:
        hub = server.hub
        calls = []
        for name in ("send_room", "send_direct"):
            def counted(*args, _name=name, _method=getattr(hub, name), **kwargs):
                calls.append(_name)
                return _method(*args, **kwargs)
            setattr(hub, name, counted)
        alice = native(server, "alice")
        alice.send(encode_event(ev.JoinRoom("kitchen", 2)))
        alice.sync()
        ivan, kim = irc(server, "ivan"), irc(server, "kim", ("server-time",))
        jane = irc(server, "jane", ("echo-message", "server-time"))
        for client in (ivan, kim, jane):
            client.send("JOIN #kitchen", "PRIVMSG alice :open chat")
            client.sync()
        ivan.send("PRIVMSG kim :open chat")
        ivan.sync()
        alice.send(encode_event(ev.OpenChat("ivan", 3)) + encode_event(ev.OpenChat("kim", 4)))
        peers = (alice, ivan, kim, jane)
        for client in peers:
            client.sync()
            client.received.clear()
        calls.clear()
        ivan.send(*[f"PRIVMSG #Kitchen :hello {i} \u00e9" for i in range(5)],
                  "PRIVMSG alice :to native", "PRIVMSG kim :to irc", "PRIVMSG #kitchen :" +
                  "x" * 480)                                # two lines: the hub path
        ivan.sync()
        jane.send("PRIVMSG #kitchen :echoed", "PRIVMSG alice :echoed, so the hub path")
        jane.sync()
        alice.send(frame(0x22, 10, name_and_text(b"kitchen", b"from native"))
                   + frame(0x12, 11, name_and_text(b"ivan", b"dm to irc"))
                   + frame(0x12, 12, name_and_text(b"kim", b"dm to timed irc")))
        for client in peers:
            client.sync()
        # jane's echo of a DM is stamped with the real clock (not the hub's test clock, 2023)
        return {c.name: re.sub(rb"@time=(?!2023-)[^ ]* ", b"@time=now ", bytes(c.received))
                for c in peers}, calls


@pytest.mark.parametrize("lane_impl", _lane_impls())
def test_the_lane_takes_plain_privmsgs_to_mixed_rooms_and_open_chats(lane_impl):
    expected, hub_calls = _mixed_room_run(None)
    assert sorted(hub_calls) == ["send_direct"] * 5 + ["send_room"] * 8
    assert expected["kim"].count(b" PRIVMSG #kitchen :hello ") == 5
    assert b"@time=2023-11-14T22:13:20.1" in expected["kim"]     # the hub's (test) clock
    assert b"echoed\r\n" in expected["jane"]
    got, calls = _mixed_room_run(lane_impl)
    assert got == expected
    if lane_impl is not None:
        # Handed back: the line too long for one IRC line, jane's echoed DM (its echo is
        # stamped with the time it is sent); the rest went from the line to the buffers.
        assert calls == ["send_room", "send_direct"]
