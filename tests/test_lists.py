"""Lists that scale, over real sockets: paged and filtered user, member and room lists, the
server-wide room bound, and 100 000 rooms read page by page while others keep chatting."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from chatcore import events as ev
from chatcore.client import ChatClient
from chatcore.errors import ChatError, ErrorCode
from chatcore.protocol import PROTOCOL_VERSION, encode_event

JOIN_BATCH = 2000           # joins per write: ~40 KB of replies, well under the output limit


def create_rooms(port: int, names, user: str = "maker") -> socket.socket:
    """Join (and so create) every room in ``names`` from one raw connection, pipelined a
    batch at a time; the replies are counted as bytes, not decoded, to keep this fast."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_event(ev.Hello(PROTOCOL_VERSION, user, request_id=1)))
    names = list(names)
    for batch, start in enumerate(range(0, len(names), JOIN_BATCH)):
        frames = [encode_event(ev.JoinRoom(name, request_id=2 + start + i))
                  for i, name in enumerate(names[start:start + JOIN_BATCH])]
        # The server answers in order: its Pong to this Ping ends the batch's replies.
        pong = encode_event(ev.Pong(batch, request_id=0xFFFFFFFF))
        sock.sendall(b"".join(frames) + encode_event(ev.Ping(batch, request_id=0xFFFFFFFF)))
        tail = b""
        while pong not in tail:
            data = sock.recv(1 << 20)
            assert data, "server closed the connection while rooms were being created"
            tail = tail[-len(pong):] + data
    return sock


@pytest.fixture
def big_server(start_server):
    """A server where one user may be in very many rooms."""
    return start_server("--max-rooms-per-user", "100000", "--log-level", "INFO")


def test_rooms_are_paged_in_name_order_with_their_total(big_server):
    names = [f"Room-{i:03d}" for i in range(250)]
    maker = create_rooms(big_server.port, reversed(names))
    with ChatClient("127.0.0.1", big_server.port) as reader:
        reader.connect("reader")
        first = reader.list_rooms_page(limit=100)
        assert (first.total, first.total_exact) == (250, True)
        assert [room.name for room in first.rooms] == names[:100]
        assert first.rooms[0].members == 1
        assert first.next_after == "room-099"
        second = reader.list_rooms_page(after=first.next_after, limit=100)
        assert [room.name for room in second.rooms] == names[100:200]
        rest = reader.list_rooms_page(after=second.next_after, limit=100)
        assert [room.name for room in rest.rooms] == names[200:]
        assert rest.next_after == ""
        assert [room.name for room in reader.iter_rooms(limit=7)] == names
    maker.close()


def test_a_page_is_capped_by_the_servers_page_limit(start_server):
    server = start_server("--max-rooms-per-user", "1000", "--max-list-page-entries", "30")
    maker = create_rooms(server.port, [f"r{i:03d}" for i in range(100)])
    with ChatClient("127.0.0.1", server.port) as reader:
        reader.connect("reader")
        assert len(reader.list_rooms_page(limit=1000).rooms) == 30
        assert len(reader.list_rooms_page().rooms) == 30           # 0: the server's maximum
        old = reader.list_rooms()                       # the unpaged request: its first page
        assert (old.total, len(old.rooms)) == (100, 30)
        assert len(list(reader.iter_rooms())) == 100
    maker.close()


def test_room_patterns_filter_like_irc_masks(big_server):
    names = ([f"dev-{i}" for i in range(12)] + [f"ops-{i}" for i in range(5)] +
             ["Devices", "lobby"])
    maker = create_rooms(big_server.port, names)
    with ChatClient("127.0.0.1", big_server.port) as reader:
        reader.connect("reader")
        prefix = reader.list_rooms_page(pattern="DEV-*")
        assert (prefix.total, prefix.total_exact) == (12, True)
        assert sorted(room.name for room in prefix.rooms) == sorted(names[:12])
        one = reader.list_rooms_page(pattern="LOBBY")
        assert [room.name for room in one.rooms] == ["lobby"] and one.total == 1
        glob = reader.list_rooms_page(pattern="*-1?")
        assert sorted(room.name for room in glob.rooms) == ["dev-10", "dev-11"]
        assert glob.total_exact is False and glob.total >= 2
        sets = [room.name for room in reader.iter_rooms(pattern="[do]*-[!0-2]", limit=2)]
        assert sets == [f"dev-{i}" for i in range(3, 10)] + ["ops-3", "ops-4"]
        assert reader.list_rooms_page(pattern="nothing*").rooms == ()
        with pytest.raises(ChatError) as refused:
            reader.list_rooms_page(pattern="a" * 101)
        assert refused.value.code == ErrorCode.LIST_PATTERN_INVALID
        with pytest.raises(ChatError) as refused:
            reader.list_rooms_page(pattern="#dev")
        assert refused.value.code == ErrorCode.LIST_PATTERN_INVALID
    maker.close()


def test_a_sparse_pattern_returns_short_pages_with_a_cursor(start_server):
    # A pattern that matches one name in 2000 must not scan them all in one request.
    server = start_server("--max-rooms-per-user", "10000", "--max-list-scan-entries", "500")
    names = [f"r{i:05d}" for i in range(3000)]
    maker = create_rooms(server.port, names)
    with ChatClient("127.0.0.1", server.port) as reader:
        reader.connect("reader")
        page = reader.list_rooms_page(pattern="*777")
        assert page.rooms == () and page.next_after == "r00499"
        found, pages = [], 0
        after = ""
        while True:
            page = reader.list_rooms_page(after=after, pattern="*777")
            found += [room.name for room in page.rooms]
            pages += 1
            if not page.next_after:
                break
            after = page.next_after
        assert found == ["r00777", "r01777", "r02777"] and pages == 6
    maker.close()


def test_users_and_room_members_are_paged_and_filtered(start_server):
    server = start_server()
    clients = []
    try:
        for i in range(12):
            client = ChatClient("127.0.0.1", server.port)
            clients.append(client)
            client.connect(f"{'ab'[i % 2]}-user{i:02d}")
            if i % 3 == 0:
                client.join("lobby")
        reader = clients[0]
        everyone = [f"{'ab'[i % 2]}-user{i:02d}" for i in range(12)]
        page = reader.list_users_page(limit=5)
        assert page.total == 12 and [u.name for u in page.users] == sorted(everyone)[:5]
        assert [u.name for u in reader.iter_users(limit=5)] == sorted(everyone)
        b_users = [u.name for u in reader.iter_users(pattern="B-*", limit=2)]
        assert b_users == sorted(name for name in everyone if name.startswith("b-"))
        members = reader.list_users_page("LOBBY", limit=2)
        assert members.total == 4 and [u.name for u in members.users] == ["a-user00", "a-user06"]
        assert [u.name for u in reader.iter_users("lobby", pattern="*user0?")] == [
            "a-user00", "a-user06", "b-user03", "b-user09"]
        assert reader.list_users_page("no-such-room").total == 0
    finally:
        for client in clients:
            client.close()


def test_a_big_rooms_member_list_is_paged(start_server):
    # Past 64 members a room keeps its own sorted index; members come and go meanwhile.
    server = start_server()
    clients = []
    try:
        for i in range(80):
            client = ChatClient("127.0.0.1", server.port)
            clients.append(client)
            client.connect(f"m{i:02d}")
            client.join("big")
        for client in clients[:10]:
            client.leave("big")
        names = [u.name for u in clients[-1].iter_users("big", limit=25)]
        assert names == [f"m{i:02d}" for i in range(10, 80)]
        assert clients[-1].list_users_page("big", pattern="m1*").total == 10
    finally:
        for client in clients:
            client.close()


def test_a_page_that_does_not_fit_a_frame_is_cut_and_resumes(start_server):
    server = start_server("--max-frame-bytes", "512", "--max-text-bytes", "400",
                          "--max-rooms-per-user", "1000")
    names = [f"room-with-a-longish-name-{i:03d}" for i in range(200)]
    maker = create_rooms(server.port, names)
    with ChatClient("127.0.0.1", server.port) as reader:
        reader.connect("reader")
        page = reader.list_rooms_page()
        assert 0 < len(page.rooms) < 200 and page.next_after == names[len(page.rooms) - 1]
        assert len(encode_event(page)) - 4 <= 512
        assert [room.name for room in reader.iter_rooms()] == names
    maker.close()


def test_the_server_wide_room_bound(start_server):
    server = start_server("--max-rooms", "3")
    with ChatClient("127.0.0.1", server.port) as alice, \
            ChatClient("127.0.0.1", server.port) as bob:
        alice.connect("alice")
        bob.connect("bob")
        for room in ("one", "two", "three"):
            alice.join(room)
        with pytest.raises(ChatError) as refused:
            bob.join("four")
        assert refused.value.code == ErrorCode.SERVER_ROOM_LIMIT
        assert "3 rooms" in refused.value.message
        bob.join("two")                                 # an existing room is still open
        alice.leave("one")                              # a room gone makes space again
        bob.join("four")
        assert [room.name for room in bob.iter_rooms()] == ["four", "three", "two"]


@pytest.mark.slow
def test_100000_rooms_are_read_page_by_page_without_stalling_a_bystander(start_server):
    # 100 000 rooms plus the bystanders' own.
    port = start_server("--max-rooms-per-user", "100000", "--max-rooms", "100001").port
    names = [f"room-{i:06d}" for i in range(100_000)]
    makers = [create_rooms(port, names[i::4], user=f"maker{i}") for i in range(4)]
    with ChatClient("127.0.0.1", port) as sender, ChatClient("127.0.0.1", port) as receiver, \
            ChatClient("127.0.0.1", port, timeout=60) as pager:
        sender.connect("sender")
        receiver.connect("receiver")
        sender.join("chat")
        receiver.join("chat")
        pager.connect("pager")

        gaps: list[float] = []
        paging = threading.Event()
        done = threading.Event()

        def chatter():
            # One message at a time, timed from send to delivery at the other member.
            count = 0
            while not done.is_set():
                count += 1
                sent = time.monotonic()
                sender.send(ev.SendRoom("chat", str(count)))
                receiver.wait_for(lambda e: type(e) is ev.RoomMessage and e.text == str(count))
                if paging.is_set():
                    gaps.append(time.monotonic() - sent)
                sender.drain()

        thread = threading.Thread(target=chatter, daemon=True)
        thread.start()
        try:
            paging.set()
            started = time.monotonic()
            read = [room.name for room in pager.iter_rooms()]
            paging_seconds = time.monotonic() - started
            # Issue 8's attack: 20 unpaged ListRooms in one write (once 3.1 s of stall and
            # 1.3 MB of replies), and 20 sparse-glob pages, each at its scan budget.
            burst = [ev.ListRooms(request_id=100 + i) for i in range(20)] + [
                ev.ListRoomsPage(pattern="*x*", request_id=200 + i) for i in range(20)]
            pager.send_raw(b"".join(encode_event(request) for request in burst))
            replies = [pager.wait_for(lambda e, i=request.request_id:
                                      type(e) in (ev.RoomList, ev.RoomPage)
                                      and e.request_id == i) for request in burst]
        finally:
            done.set()
            thread.join(30)
        assert read == ["chat"] + names
        assert all(len(reply.rooms) <= 200 and reply.total == 100_001 for reply in replies)
        assert sum(len(encode_event(reply)) for reply in replies) < 200_000
        # Loose bounds for a shared, noisy machine; docs/benchmarks.md has the figures.
        assert gaps and max(gaps) < 1.0, f"worst delivery gap {max(gaps):.3f}s"
        assert paging_seconds < 60
    for maker in makers:
        maker.close()
