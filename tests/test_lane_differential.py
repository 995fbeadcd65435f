"""The lane (chatcore._lane_py and its compiled twin chatcore._lane) against the hub path it
shortens: the same requests, pipelined over real sockets into a real server, reach the same
recipients as the same bytes in the same order, with the same replies and errors, whichever
of the three handles them (native members, an IRC member, moderated rooms, away users,
closed conversations, bad UTF-8, forbidden characters, empty and too-long texts, unknown
users and rooms, membership changing in the middle of a pipeline, fair turns, flood
control)."""
from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcore import _lane_py, lane
from chatcore import events as ev
from chatcore.codec import codec_py
from chatcore.protocol import Role, decode_frame, encode_event
from tests.conftest import REQUIRE_EXTENSIONS
from tests.lane_world import frame, irc, name_and_text, native, world

# The cython runs skip when chatcore._lane is not built, unless CHATCORE_REQUIRE_EXTENSIONS
# is set (CI): then they fail (calling None), as the codec's do.
_SKIP_C = lane.lane_c is None and not REQUIRE_EXTENSIONS
IMPLEMENTATIONS = [pytest.param(_lane_py, id="lane-python"),
                   pytest.param(lane.lane_c, id="lane-cython",
                                marks=pytest.mark.skipif(_SKIP_C,
                                                         reason="chatcore._lane not built"))]
LANES = [_lane_py] + ([] if _SKIP_C else [lane.lane_c])
MAX_TEXT_BYTES = 64

NATIVES = ("alice", "bob", "carol", "dave")
# IRC users: ivan asks for no capability, jane for echo-message, kim for server-time.
IRC_USERS = {"ivan": (), "jane": ("echo-message",), "kim": ("server-time",)}
SENDERS = NATIVES[:3] + tuple(IRC_USERS)
ROOM_TARGETS = [b"kitchen", b"KITCHEN", b"hall", b"ircroom", b"irconly", b"nowhere",
                "\u212aitchen".encode(), b"\xff", b""]
USER_TARGETS = [b"bob", b"BOB", b"alice", b"carol", b"dave", b"zed", b"ivan", b"kim",
                b"\xc3", b""]

texts = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=20).map(lambda t: t.encode()),
    st.text(st.sampled_from("ab \t\n\x00\x1b\x7f\x80\x9f\xa0\u00e9\u20ac\U0001f600"),
            max_size=12).map(lambda t: t.encode()),
    st.binary(max_size=12),
    st.sampled_from([b"", b"x" * MAX_TEXT_BYTES, b"x" * (MAX_TEXT_BYTES + 1),
                     "\u00e9".encode() * 32, "\u00e9".encode() * 33, b"\xed\xa0\x80",
                     b"\xc0\x80", b"\xf4\x90\x80\x80", b"ok\xc2"]))

requests = st.one_of(
    st.tuples(st.just(0x22), st.sampled_from([b"kitchen"] * 6 + ROOM_TARGETS), texts),
    st.tuples(st.just(0x12), st.sampled_from([b"bob"] * 6 + USER_TARGETS), texts),
    st.tuples(st.just(0x22), st.just(b"kitchen"), st.just(b"hello")),
    st.tuples(st.just(0x12), st.just(b"bob"), st.just(b"hi bob")),
    st.sampled_from([
        ("join", "hall"), ("join", "kitchen"), ("join", "newroom"), ("leave", "kitchen"),
        ("leave", "hall"), ("ping",), ("unknown",), ("truncated",), ("action", "kitchen"),
        ("away", "back soon"), ("away", ""), ("open", "carol")]))


irc_texts = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20)
    .map(lambda t: t.encode()),
    st.text(st.sampled_from("ab \t\x01\x02\x7f\x80\x9f\xa0\u00e9\u20ac\U0001f600"),
            max_size=12).map(lambda t: t.encode()),
    st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"", b"x" * MAX_TEXT_BYTES, b"x" * (MAX_TEXT_BYTES + 1),
                     "\u00e9".encode() * 32, "\u00e9".encode() * 33, b"\xed\xa0\x80",
                     b"\xff", b"\x01ACTION waves\x01", b":colon", b" lead"]))
irc_targets = st.sampled_from([b"#kitchen"] * 4 + [b"#irconly", b"bob"] * 2 + [
    b"#KITCHEN", b"#hall", b"#ircroom", b"#nowhere", b"#", b"#\xc3", b"#kitchen,#hall",
    b"BOB", b"alice", b"dave", b"ivan", b"kim", b"jane", b"zed", b"\xc3", b":bob"])
irc_lines = st.one_of(
    st.tuples(irc_targets, irc_texts).map(lambda t: b"PRIVMSG " + t[0] + b" :" + t[1]),
    st.sampled_from([b"JOIN #hall", b"JOIN #kitchen", b"PART #kitchen", b"PART #irconly",
                     b"AWAY :gone", b"AWAY", b"PING :tok", b"NOTICE #kitchen :notice",
                     b"@label=1 PRIVMSG #kitchen :tagged", b"privmsg #kitchen :lower",
                     b"PRIVMSG #kitchen :two  spaces", b"PRIVMSG  #kitchen :x",
                     b"PRIVMSG #kitchen :" + b"x" * 500, b"WHATEVER"]),
    # PINGs the lane answers (one printable word) and those it leaves to the parser.
    st.sampled_from([b"PING tok", b"PING :a:b", b"PING 12345", b"PING ::x", b"PING",
                     b"PING :", b"PING :two words", b"PING a b", b"ping tok",
                     b"PING :\xc3\xa9", b"@label=p PING :tok", b"PING  tok"]))


def encode_request(request, request_id: int) -> bytes:
    kind = request[0]
    if kind in (0x22, 0x12):
        return frame(kind, request_id, name_and_text(request[1], request[2]))
    if kind == "join":
        return encode_event(ev.JoinRoom(request[1], request_id))
    if kind == "leave":
        return encode_event(ev.LeaveRoom(request[1], request_id))
    if kind == "ping":
        return encode_event(ev.Ping(request_id, request_id))
    if kind == "unknown":
        return frame(0x7E, request_id, b"")
    if kind == "truncated":
        return frame(0x22, request_id, b"\x00\x09kit")
    if kind == "action":
        return encode_event(ev.SendRoomAction(request[1], "waves", request_id))
    if kind == "away":
        return encode_event(ev.SetAway(request[1], request_id))
    return encode_event(ev.OpenChat(request[1], request_id))


def run_script(lane_impl, script, with_irc: bool, remote_rooms=None, old_peer=False,
               count_hub_sends=None, **config) -> dict:
    """Set up a few users and rooms, then let each sender pipeline its requests (native
    senders frames, IRC senders lines; IRC senders only ``with_irc``); returns what every
    client received after the setup, and what the server counted. ``remote_rooms`` (room
    key -> names of members on another node): those rooms are shared through a loopback
    cluster backplane, and what it published is returned too. ``count_hub_sends``: a list
    that gets one entry per message the hub's send_room took (the lane took the rest)."""
    settings_ = dict(max_text_bytes=MAX_TEXT_BYTES, limit_exempt="",
                     flood_chat_burst_messages=100_000, flood_chat_messages_per_second=1e6,
                     flood_burst_requests=100_000, flood_requests_per_second=1e6)
    if with_irc:
        settings_["irc_port"] = 0
    settings_.update(config)
    with world(lane_impl, remote_rooms, old_peer, **settings_) as server:
        if count_hub_sends is not None:
            hub_send_room = server.hub.send_room
            server.hub.send_room = lambda *args, **kwargs: (
                count_hub_sends.append(args[1]), hub_send_room(*args, **kwargs))[1]
        peers = {name: native(server, name) for name in NATIVES}
        alice, bob, carol, dave = (peers[n] for n in NATIVES)
        for peer in (alice, bob, carol):
            peer.send(encode_event(ev.JoinRoom("kitchen", 2)))
            peer.sync()
        for peer in (alice, bob):
            peer.send(encode_event(ev.JoinRoom("hall", 3)))
            peer.sync()
        # hall: moderated, bob voiced (alice is its operator: she made it)
        alice.send(encode_event(ev.SetRoomMode("hall", (ev.ModeChange(True, "m"),
                                                        ev.ModeChange(True, "v", "bob")), 4)))
        alice.send(encode_event(ev.OpenChat("bob", 5)))
        alice.send(encode_event(ev.OpenChat("dave", 6)))
        carol.send(encode_event(ev.OpenChat("bob", 7)))
        dave.send(encode_event(ev.SetAway("out", 8)))
        for peer in (alice, carol, dave):
            peer.send(encode_event(ev.JoinRoom("ircroom", 9)))
            peer.sync()
        if with_irc:
            # kitchen: natives and all three IRC encodings' members; ircroom: natives and
            # IRC; irconly: IRC users with and without server-time. Chats open: ivan-bob,
            # ivan-kim, jane-bob, alice-ivan, alice-kim.
            for nick, caps in IRC_USERS.items():
                peers[nick] = irc(server, nick, caps)
            ivan, jane, kim = (peers[n] for n in IRC_USERS)
            ivan.send("JOIN #ircroom,#kitchen,#irconly", "PRIVMSG bob :open",
                      "PRIVMSG kim :open")
            ivan.sync()
            jane.send("JOIN #kitchen,#ircroom", "PRIVMSG bob :open")
            jane.sync()
            kim.send("JOIN #kitchen,#irconly")
            kim.sync()
            alice.send(encode_event(ev.OpenChat("ivan", 10)))
            alice.send(encode_event(ev.OpenChat("kim", 11)))
        for peer in peers.values():
            peer.sync()
            peer.received.clear()
        published = server.hub.backplane.broker.published if remote_rooms is not None else []
        published_before = len(published)
        active_before = {s.key: s.last_active for s in server.hub.sessions.values()}
        for sender, sent in script:
            if sender >= len(NATIVES[:3]) and not with_irc:
                continue
            peer = peers[SENDERS[sender]]
            if sender < len(NATIVES[:3]):
                peer.send(b"".join(encode_request(request, 100 + i)
                                   for i, request in enumerate(sent)
                                   if not isinstance(request, bytes)))
            else:
                peer.send(*[request for request in sent if isinstance(request, bytes)]
                          or [b"PING :nothing"])
            peer.sync()
            for other in peers.values():
                other.sync()
        received = {name: _comparable(name, bytes(peer.received))
                    for name, peer in peers.items()}
        hub, stats = server.hub, server.stats
        # What the hub and the server count: the work of fair turns, deliveries, messages.
        counted = (hub.work_done, server.outlet.deliveries, stats.room_messages,
                   stats.direct_messages,
                   sorted(s.key for s in hub.sessions.values()
                          if s.last_active != active_before.get(s.key)),
                   published[published_before:])
        return received, counted


def _comparable(name: str, received: bytes):
    """The frames a native client received, byte for byte, except that the members of a
    RoomModes are sorted: the hub lists them from sets of sessions, in an order that differs
    from one process to the next. IRC: the raw bytes, but for the server-time tags of lines
    stamped with the real clock (JOIN, PART, echoes; not from the hub's test clock, 2023)."""
    if name not in NATIVES:
        return _REAL_TIME_TAG.sub(b"@time=now ", received)
    decoder = codec_py.FrameDecoder(1 << 20)
    decoder.receive_data(received)
    frames = []
    while (item := decoder.next_frame()) is not None:
        if item[0] == 0xA8:
            modes = decode_frame(*item, role=Role.CLIENT)
            item = (modes.room, modes.modes, sorted((m.name, m.modes) for m in modes.members), modes.bans)
        frames.append(item)
    return frames


_REAL_TIME_TAG = re.compile(rb"@time=(?!2023-)[^ ]* ")

scripts = st.lists(st.one_of(
    st.tuples(st.integers(0, 2), st.lists(requests, min_size=1, max_size=25)),
    st.tuples(st.integers(3, 5), st.lists(irc_lines, min_size=1, max_size=25))),
    min_size=1, max_size=3)


# Rooms shared with members of another cluster node (a loopback backplane): kitchen (native
# and IRC members here), ircroom, both, or none.
SHARED = [None, {"kitchen": ["zoe"]}, {"kitchen": ["zoe"], "ircroom": ["yann", "xavi"]}]


@pytest.mark.timeout(600)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts, with_irc=st.booleans(), turn_units=st.sampled_from([20_000, 7, 1]),
       shared=st.sampled_from(SHARED), window=st.sampled_from([64, 2]))
def test_every_client_receives_the_same_bytes_from_the_lanes_and_the_hub_path(
        script, with_irc, turn_units, shared, window):
    flags = dict(max_turn_work_units=turn_units, max_room_sends_in_flight=window)
    expected = run_script(None, script, with_irc, shared, **flags)
    for lane_impl in LANES:
        assert run_script(lane_impl, script, with_irc, shared, **flags) == expected, \
            lane_impl.__name__


@pytest.mark.parametrize("window", [64, 3])
@pytest.mark.parametrize("lane_impl", IMPLEMENTATIONS)
def test_messages_to_a_room_shared_across_nodes_take_the_lane_and_match_the_hub_path(
        lane_impl, window):
    # kitchen has a member on another node: its messages are published (room batches), and
    # delivered here and acked in request order once back; mixed with a local room's
    # messages, direct messages, refusals and other requests that wait behind the Acks.
    sent = []
    for i in range(300):
        sent.append((0x22, b"kitchen", b"m%d" % i))
        if i % 50 == 7:
            sent += [(0x22, b"ircroom", b"local %d" % i), (0x12, b"bob", b"d%d" % i),
                     (0x22, b"kitchen", b""), (0x22, b"nowhere", b"x"), ("ping",),
                     ("action", "kitchen"), (0x22, b"KITCHEN", "caf\u00e9".encode())]
    script = [(0, sent), (1, sent[:60]),
              (3, [b"PRIVMSG #kitchen :from irc %d" % i for i in range(40)]),
              (5, [b"PRIVMSG #kitchen :timed", b"PRIVMSG #kitchen :", b"PRIVMSG bob :x"])]
    flags = dict(max_turn_work_units=40, max_output_bytes=8192,
                 max_room_sends_in_flight=window, remote_rooms={"kitchen": ["zoe"]})
    expected = run_script(None, script, True, **flags)
    published = expected[1][-1]
    assert len(published) > 1 and all(data[:1] == b"\x02" for _, data in published)
    assert [f[2].endswith(b"m299") for f in expected[0]["bob"]].count(True) == 1
    assert any(f[2].endswith(b"from afar 2") for f in expected[0]["bob"])     # zoe's
    assert b"from afar 2" in expected[0]["kim"]                             # an IRC member
    hub_sends: list = []
    assert run_script(lane_impl, script, True, count_hub_sends=hub_sends, **flags) == expected
    # The lane took kitchen's messages, the IRC senders' lines too (the hub only the
    # refused ones): far fewer than the 400 sent there.
    assert len([name for name in hub_sends if name.casefold() == "kitchen"]) < 30


@pytest.mark.parametrize("lane_impl", IMPLEMENTATIONS)
def test_a_shared_room_with_a_peer_that_reads_no_batches_is_left_to_the_hub_path(lane_impl):
    # A rolling upgrade: a node that reads only v1 JSON is up, so nothing is batched.
    script = [(0, [(0x22, b"kitchen", b"m%d" % i) for i in range(40)])]
    flags = dict(remote_rooms={"kitchen": ["zoe"]}, old_peer=True)
    expected = run_script(None, script, False, **flags)
    assert all(data[:1] == b"{" for _, data in expected[1][-1])
    hub_sends: list = []
    assert run_script(lane_impl, script, False, count_hub_sends=hub_sends, **flags) \
        == expected
    assert len(hub_sends) == 40


@pytest.mark.parametrize("lane_impl", IMPLEMENTATIONS)
def test_a_long_pipeline_of_room_and_direct_messages_matches_the_hub_path(lane_impl):
    # Enough to take several fair turns and cross the output-queue check at the loop's head.
    sent = [(0x22, b"kitchen", b"m%d" % i) if i % 3 else (0x12, b"bob", b"d%d" % i)
            for i in range(600)]
    script = [(0, sent), (1, sent[:50]), (2, [(0x22, b"kitchen", b"x")] * 40)]
    flags = dict(max_turn_work_units=50, max_output_bytes=4096)
    expected = run_script(None, script, True, **flags)
    assert [f[2].endswith(b"m599") for f in expected[0]["bob"]].count(True) == 1   # arrived
    assert run_script(lane_impl, script, True, **flags) == expected


@pytest.mark.parametrize("lane_impl", IMPLEMENTATIONS)
def test_flood_control_holds_the_same_message_with_the_lane(lane_impl):
    # A burst of 5 and a refill that takes minutes: the 6th message waits, held, in both.
    def held(run):
        with world(run, limit_exempt="", flood_chat_burst_messages=5,
                   flood_chat_messages_per_second=0.001) as server:
            alice, bob = native(server, "alice"), native(server, "bob")
            for peer in (alice, bob):
                peer.send(encode_event(ev.JoinRoom("kitchen", 2)))
                peer.sync()
            bob.received.clear()
            alice.received.clear()
            alice.send(b"".join(frame(0x22, 10 + i, name_and_text(b"kitchen", b"t%d" % i))
                                for i in range(8)))
            for i in range(5):
                alice.wait_for(lambda f, i=i: f[0] == 0x82 and f[1] == 10 + i)
            (connection,) = [c for c in server.connections if c.session.name == "alice"]
            deadline = time.monotonic() + 10         # the reactor thread holds it next
            while connection._held_event is None and time.monotonic() < deadline:
                time.sleep(0.005)
            bob.sync()
            return connection._held_event, bytes(alice.received), bytes(bob.received)

    expected = held(None)
    assert expected[0] == ev.SendRoom("kitchen", "t5", 15)
    assert held(lane_impl) == expected


@pytest.mark.parametrize("lane_impl", IMPLEMENTATIONS)
def test_a_broken_stream_after_pipelined_messages_ends_as_on_the_hub_path(lane_impl):
    def until_broken(run):
        with world(run, limit_exempt="127.0.0.1/8") as server:
            alice, bob = native(server, "alice"), native(server, "bob")
            for peer in (alice, bob):
                peer.send(encode_event(ev.JoinRoom("kitchen", 2)))
                peer.sync()
            alice.received.clear()
            bob.received.clear()
            alice.send(b"".join(frame(0x22, 10 + i, name_and_text(b"kitchen", b"t%d" % i))
                                for i in range(5)) + b"\x00\x00\x00\x02")   # length 2
            alice.until_closed()
            bob.sync()
            return bytes(alice.received), bytes(bob.received)

    expected = until_broken(None)
    assert b"below the minimum of 5" in expected[0]         # the fatal Error
    assert until_broken(lane_impl) == expected
