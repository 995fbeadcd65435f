"""The load generator: its verifier (both implementations agree and catch loss, duplicates and
reordering) and every scenario run tiny against real servers started on port 0."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import _verify_py as verify_py
from benchmarks import verify
from chatcore import events as ev
from chatcore.codec import encode_frame
from chatcore.protocol import encode_event, encode_room_message
from tests.serverproc import ServerProcess

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMPLEMENTATIONS = [verify_py] + ([verify.verify_c] if verify.verify_c is not None else [])
NOW_US = 10_000_000


def room_frame(sender: int, seq: int, sent_us: int = NOW_US - 150, size: int = 100) -> bytes:
    return encode_room_message(b"lobby", b"user%d" % sender, seq + 1, 0,
                               verify.stamp(sender, seq, sent_us, size))


def direct_frame(sender: int, seq: int, size: int = 100) -> bytes:
    return encode_event(ev.DirectMessage(f"user{sender}", seq + 1, 0,
                                         verify.stamp(sender, seq, NOW_US - 20, size).decode()))


def scan(impl, data: bytes, cuts=(), size: int = 100):
    tally = impl.Tally(size)
    stream = impl.Stream(tally)
    others = []
    last = 0
    for cut in sorted(cuts) + [len(data)]:
        others += stream.feed(memoryview(data)[last:cut], NOW_US)
        last = cut
    snap = tally.snapshot()
    return snap, [(t, r, bytes(p)) for t, r, p in others], stream.acks, stream.buffered_bytes


# -- the verifier ----------------------------------------------------------------------------

def test_the_compiled_verifier_is_built_and_chosen():
    if os.environ.get("CHATCORE_NO_EXTENSIONS"):
        pytest.skip("extensions disabled")
    if os.environ.get("CHATCORE_REQUIRE_EXTENSIONS"):
        assert verify.verify_c is not None, "chatcore._loadgen was not built"
    if verify.verify_c is not None:
        assert verify.IMPLEMENTATION == "cython"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda m: m.__name__)
def test_in_order_messages_are_counted_with_latency(impl):
    data = b"".join(room_frame(s, q) for q in range(50) for s in range(3))
    data += direct_frame(7, 0) + direct_frame(7, 1)
    snap, others, acks, left = scan(impl, data)
    assert snap["messages"] == 152
    assert snap["counts"] == {0xA0: 150, 0x90: 2}
    assert (snap["gaps"], snap["duplicates"], snap["reordered"], snap["malformed"]) == (0, 0, 0, 0)
    assert snap["hist"] == {150: 150, 20: 2}
    assert others == [] and acks == 0 and left == 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda m: m.__name__)
def test_loss_duplicates_and_reordering_are_detected(impl):
    seqs = [0, 1, 3, 3, 2, 4, 9]        # 2 lost (then late), 3 twice, 5..8 lost
    snap, *_ = scan(impl, b"".join(room_frame(1, q) for q in seqs))
    assert snap["messages"] == 5        # 0 1 3 4 9
    assert snap["gaps"] == 1 + 4
    assert snap["duplicates"] == 1
    assert snap["reordered"] == 1


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda m: m.__name__)
def test_foreign_or_damaged_texts_are_malformed(impl):
    good = verify.stamp(0xABC, 0, NOW_US, 100)
    frames = [
        encode_room_message(b"r", b"u", 1, 0, good[:-1]),                  # wrong length
        encode_room_message(b"r", b"u", 1, 0, b"X" + good[1:]),            # not hex
        encode_room_message(b"r", b"u", 1, 0, good[:-1] + b"!"),           # bad padding
        encode_room_message(b"r", b"u", 1, 0, good.upper()),               # upper-case hex
        encode_frame(0xA0, 0, b"\x00"),                                    # truncated
    ]
    snap, *_ = scan(impl, b"".join(frames))
    assert snap["malformed"] == 5 and snap["messages"] == 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda m: m.__name__)
def test_acks_are_counted_and_other_frames_handed_back(impl):
    data = (encode_event(ev.Ping(42, request_id=7)) + encode_event(ev.Ack(1, 2, request_id=3))
            + encode_event(ev.UserJoined("lobby", "x")) + encode_event(ev.Ok(request_id=2))
            + encode_event(ev.Ack(2, 2, request_id=4)))
    snap, others, acks, _ = scan(impl, data)
    assert acks == 2
    assert others == [(0x02, 7, (42).to_bytes(8, "big")), (0x80, 2, b"")]
    assert snap["counts"] == {0x02: 1, 0x82: 2, 0xA1: 1, 0x80: 1}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda m: m.__name__)
def test_a_bad_frame_length_breaks_the_stream(impl):
    with pytest.raises(ValueError):
        scan(impl, b"\x00\x00\x00\x01" + b"\x00" * 8)


def test_histogram_buckets_round_trip():
    for us in (0, 1, 2047, 2048, 2049, 4095, 4096, 123_456, 10**9):
        bucket = verify_py.bucket_of(us)
        assert verify_py.bucket_floor(bucket) <= us
        assert verify_py.bucket_of(verify_py.bucket_floor(bucket)) == bucket
        if us >= 2048:
            assert us - verify_py.bucket_floor(bucket) <= us / 1024
        if verify.verify_c is not None:
            assert verify.verify_c.bucket_of(us) == bucket


_message = st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 5000),
                     st.sampled_from(["room", "direct", "ack", "ping", "joined"]))


@pytest.mark.skipif(verify.verify_c is None, reason="chatcore._loadgen is not built")
@settings(max_examples=150, deadline=None)
@given(st.lists(_message, max_size=60), st.lists(st.integers(0, 20_000), max_size=8))
def test_both_implementations_agree(messages, cuts):
    parts = []
    for sender, seq, age, kind in messages:
        if kind == "room":
            parts.append(room_frame(sender, seq, NOW_US - age, size=40))
        elif kind == "direct":
            parts.append(direct_frame(sender, seq, size=40))
        elif kind == "ack":
            parts.append(encode_event(ev.Ack(seq, age, request_id=sender)))
        elif kind == "ping":
            parts.append(encode_event(ev.Ping(age, request_id=seq)))
        else:
            parts.append(encode_event(ev.UserJoined("r", "n%d" % seq)))
    data = b"".join(parts)
    cuts = [c % (len(data) + 1) for c in cuts]
    assert scan(verify_py, data, cuts, size=40) == scan(verify.verify_c, data, cuts, size=40)


# -- the scenarios against real servers -------------------------------------------------------

# Both log "listening on HOST:PORT" once bound, which ServerProcess waits for.
SERVERS = {
    "chatcore": dict(flags=("--log-level", "INFO", "--limit-exempt", "127.0.0.1")),
    "reference": dict(flags=("-v",), command=["-m", "benchmarks.reference"]),
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request):
    spec = SERVERS[request.param]
    proc = ServerProcess(*spec["flags"], command=spec.get("command")).start()
    yield proc.proc.pid, proc.port
    proc.stop()


TINY = {
    "fanout": ["-c", "12", "--senders", "3"],
    "rooms": ["-c", "24", "--rooms", "4", "--senders", "8"],
    "dm": ["-c", "10"],
    "connect": ["-c", "60"],
    "latency": ["-c", "10", "--senders", "2", "--rate", "200"],
}


def run_bench(args, tmp_path, env=None):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", *args, "--json", str(out),
                           "-q", "--procs", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=50)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.parametrize("scenario", sorted(TINY))
def test_each_scenario_runs_and_verifies(server, scenario, tmp_path):
    pid, port = server
    proc, result = run_bench([scenario, "-p", str(port), "--server-pid", str(pid),
                              "--duration", "0.5", *TINY[scenario]], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result["ok"] and result["problems"] == []
    assert result["scenario"] == scenario
    assert result["connect"]["ready"] == result["config"]["clients"]
    assert result["connect"]["failures"] == 0
    for key in ("sent_per_second", "delivered_per_second", "latency_ms", "generator", "server",
                "check", "frames", "latency_cdf"):
        assert key in result
    assert set(result["latency_ms"]) == {"count", "p50", "p90", "p99", "p99.9", "max"}
    assert result["server"]["pid"] == pid and result["server"]["rss_hold_bytes"] > 0
    assert result["server"]["cpu_seconds"] is not None
    if scenario == "connect":
        assert result["sent"] == 0
    else:
        assert result["delivered"] == result["expected"] > 0
        assert result["latency_ms"]["count"] == result["delivered"]
        assert all(v == 0 for v in result["check"].values())


def test_the_latency_probe_measures_beside_a_verified_load(server, tmp_path):
    """--probe: the independent probe listens in the loaded room and echoes in its own; the
    load is still verified exactly (the probe is one more member, not one of the counted)."""
    pid, port = server
    proc, result = run_bench(["latency", "-p", str(port), "--server-pid", str(pid),
                              "--duration", "1", "-c", "10", "--senders", "2", "--rate", "100",
                              "--probe", "100", "--probe-samples",
                              str(tmp_path / "samples")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result["ok"] and result["delivered"] == result["expected"] > 0
    probe = result["probe"]
    # --probe-samples: every sample, to line up with a server's turn trace
    rows = [line.split() for line in (tmp_path / "samples").read_text().splitlines()]
    for what in ("listen", "echo"):
        mine = [(int(sent), int(us)) for kind, sent, us in rows if kind == what]
        assert len(mine) == probe[what]["count"]
        assert max(us for _, us in mine) == round(probe[what]["max"] * 1000)
    assert probe["echo_lost"] == 0 and probe["room"]
    # one room: the probe hears (almost) every message the generator sent in its second
    assert 0.8 * result["sent"] <= probe["listen"]["count"] <= result["sent"]
    assert probe["echo"]["count"] >= 30                 # ~100 at 100 a second, Poisson
    for what in ("listen", "echo"):
        p = probe[what]
        assert 0 < p["p50"] <= p["p90"] <= p["p99"] <= p["p999"] <= p["max"] < 1000
    assert "probe listen p50" in proc.stdout


def test_paced_sends_go_out_on_schedule_and_say_how_late(server, tmp_path):
    """--rate: message k is due at go + k / rate; the result says how late each one went."""
    pid, port = server
    proc, result = run_bench(["latency", "-p", str(port), "--duration", "1", "-c", "6",
                              "--senders", "2", "--rate", "300"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    late = result["generator"]["send_late_ms"]
    assert late["count"] == result["sent"] >= 290          # 300 a second for 1 s, one at go
    assert late["p50"] < 5.0                                # on time, bar a loaded machine


@pytest.mark.skipif(verify.verify_c is None, reason="chatcore._loadgen is not built")
def test_the_compiled_receiver_waits_less_than_a_millisecond():
    """A paced sender's wait ends on time: epoll_wait's whole milliseconds would wake it up to
    1 ms late (the best of 20 waits of 0.3 ms, so a busy machine cannot fail it)."""
    import select
    import time
    receiver = verify.verify_c.Receiver(select.epoll(), 4096)
    best = min(_timed(receiver.poll, 0.0003, time.monotonic) for _ in range(20))
    assert 0.0003 <= best < 0.0009


def _timed(call, arg, clock) -> float:
    started = clock()
    call(arg)
    return clock() - started


def test_the_fallback_verifier_runs_end_to_end(server, tmp_path):
    pid, port = server
    env = dict(os.environ, CHATCORE_NO_EXTENSIONS="1")
    proc, result = run_bench(["fanout", "-p", str(port), "--duration", "0.3", "-c", "6",
                              "--senders", "2"], tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr


def test_a_loss_fails_the_run_loudly(tmp_path):
    """A server that drops every tenth room message: the run must exit 1 and say why."""
    lossy = ServerProcess("-v", command=["-c", LOSSY_SERVER]).start()
    try:
        bench, result = run_bench(["fanout", "-p", str(lossy.port), "--duration", "0.3",
                                   "-c", "4", "--senders", "1", "--window", "4"], tmp_path)
    finally:
        lossy.stop()
    assert bench.returncode == 1
    assert "VERIFICATION FAILED" in bench.stderr
    assert not result["ok"] and result["check"]["gaps"] > 0 and result["check"]["lost"] > 0


LOSSY_SERVER = """
import sys
from benchmarks.reference import server as ref
original = ref.Hub.broadcast
count = [0]
def lossy(self, members, frame):
    if frame[4] == 0xA0:
        count[0] += 1
        if count[0] % 10 == 0:
            members = list(members)[1:]
    original(self, members, frame)
ref.Hub.broadcast = lossy
sys.exit(ref.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("scenario", ["fanout", "connect"])
def test_scenarios_run_over_tls(start_server, tls_files, scenario, tmp_path):
    server = start_server(*tls_files.server_flags)
    proc, result = run_bench([scenario, "-p", str(server.tls_port), "--tls", "--tls-ca",
                              tls_files.ca, "--duration", "0.3", *TINY[scenario]], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result["ok"] and result["config"]["tls"] is True
    assert result["connect"]["ready"] == result["config"]["clients"]
    if scenario == "fanout":
        assert result["delivered"] == result["expected"] > 0
    seen = 0
    for _ in range(result["config"]["clients"]):    # one handshake each, as the log says
        line = server.wait_for_log("TLS established", start=seen)
        seen = server.lines.index(line, seen) + 1


def test_the_probe_is_refused_over_irc_with_a_reason(capsys):
    # The probe speaks the native protocol; an IRC server would read its frames as junk.
    from benchmarks.loadgen import parse_args
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["latency", "--proto", "irc", "--probe", "200"])
    assert exit_info.value.code == 2
    assert "--probe speaks chatcore's native protocol" in capsys.readouterr().err


# -- several servers: a cluster on Redis ------------------------------------------------------

def test_the_plan_splits_rooms_senders_and_pairs_over_the_servers():
    from benchmarks.loadgen import parse_args
    from benchmarks.scenarios import make_plan
    for scenario, flags in (("rooms", ["-c", "40", "--rooms", "4", "--senders", "4"]),
                            ("fanout", ["-c", "12", "--senders", "4"])):
        plan = make_plan(parse_args([scenario, *flags, "--servers",
                                     "127.0.0.1:1,127.0.0.1:2"]))
        rooms = {}
        for spec in plan.clients:
            rooms.setdefault(spec.room, set()).add(spec.server)
        assert all(servers == {0, 1} for servers in rooms.values()), rooms
        assert {s.server for s in plan.clients if s.sender} == {0, 1}
    plan = make_plan(parse_args(["dm", "-c", "10", "--servers", "127.0.0.1:1,127.0.0.1:2"]))
    by_name = {s.name: s for s in plan.clients}
    assert all(by_name[s.peer].server != s.server for s in plan.clients)
    plan = make_plan(parse_args(["rooms", "-c", "40", "--rooms", "4", "--senders", "4"]))
    assert {s.server for s in plan.clients} == {0}


@pytest.fixture
def two_nodes(start_node, redis_server):
    exempt = ("--limit-exempt", "127.0.0.1")
    nodes = [start_node("alpha", *exempt), start_node("beta", *exempt)]
    servers = ",".join(f"127.0.0.1:{node.port}" for node in nodes)
    return servers, [node.proc.pid for node in nodes] + [redis_server.proc.pid]


@pytest.mark.parametrize("scenario", ["dm", "fanout", "rooms", "latency"])
def test_clients_spread_over_two_cluster_nodes_and_every_delivery_is_checked(
        two_nodes, scenario, tmp_path):
    servers, pids = two_nodes
    proc, result = run_bench([scenario, "--servers", servers, "--server-pid",
                              ",".join(map(str, pids)), "--duration", "0.5", *TINY[scenario]],
                             tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result["ok"] and result["config"]["servers"] == servers.split(",")
    assert result["delivered"] == result["expected"] > 0
    assert all(v == 0 for v in result["check"].values())
    processes = result["server"]["processes"]
    assert [p["pid"] for p in processes] == pids
    assert processes[-1]["name"] == "redis-server"
    assert result["server"]["cpu_seconds"] == pytest.approx(
        sum(p["cpu_seconds"] for p in processes))
    claims = result["connect"]["claim_ms"]
    assert claims["count"] == result["config"]["clients"] and claims["p99"] is not None


def test_the_suite_starts_a_cluster_and_one_node_with_their_pids(redis_server, tmp_path):
    """The suite's own starters (benchmarks/deploy.py): redis-server and two nodes, pinned
    nowhere, every pid reported, all stopped afterwards."""
    from benchmarks import deploy
    cluster = deploy.start_cluster("2-nodes", None, tmp_path, nodes=2)
    try:
        assert len(cluster.addrs) == 2 and len(cluster.pids) == 3
        servers = ",".join(f"{h}:{p}" for h, p in cluster.addrs)
        proc, result = run_bench(["fanout", "--servers", servers, "--server-pid",
                                  ",".join(map(str, cluster.pids)), "--duration", "0.3",
                                  *TINY["fanout"]], tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert result["server"]["processes"][-1]["name"] == "redis-server"
        assert result["delivered"] == result["expected"] > 0
    finally:
        cluster.stop()
    assert all(p.poll() is not None for p in cluster.procs)


# -- over IRC: chatcore's IRC front end, ngIRCd and InspIRCd ---------------------------------

IRC_SERVERS = ["chatcore-irc", "ngircd", "inspircd"]


@pytest.fixture(scope="module", params=IRC_SERVERS)
def irc_deployment(request, tmp_path_factory):
    """Started by the suite's own starters (benchmarks/deploy.py: the generated ngIRCd and
    InspIRCd configurations with their flood limits raised)."""
    from benchmarks import deploy
    workdir = tmp_path_factory.mktemp(request.param)
    if request.param == "chatcore-irc":
        deployment = deploy.start_chatcore(request.param, None, workdir, proto="irc")
    elif not deploy.ircd_available(request.param):
        pytest.skip(f"{request.param} is not installed (apt-get install {request.param})")
    else:
        deployment = deploy.start_ircd(request.param, None, workdir)
    yield request.param, deployment
    deployment.stop()


@pytest.mark.parametrize("scenario", ["fanout", "rooms", "dm", "latency", "connect"])
def test_each_scenario_runs_over_irc_and_verifies(irc_deployment, scenario, tmp_path):
    name, deployment = irc_deployment
    if name != "chatcore-irc" and scenario in ("rooms", "connect"):
        pytest.skip("the other IRC servers run fanout, dm and latency here (time)")
    (host, port), = deployment.addrs
    # A bounded rate: unbounded, a reader slower than the server (the pure-Python IRC
    # verifier on a loaded machine) passes its output limit and is dropped as a slow reader,
    # which is the server's right; this test is about verification, not speed.
    paced = ["--rate", "2000"] if scenario in ("fanout", "rooms") else []
    proc, result = run_bench([scenario, "--proto", "irc", "--servers", f"{host}:{port}",
                              "--server-pid", str(deployment.pids[0]), "--duration", "0.5",
                              *TINY[scenario], *paced], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result["ok"] and result["config"]["proto"] == "irc"
    assert result["connect"]["ready"] == result["config"]["clients"]
    assert result["connect"]["claim_ms"]["count"] == result["config"]["clients"]
    if scenario != "connect":
        assert result["delivered"] == result["expected"] > 0
        assert all(v == 0 for v in result["check"].values())
        assert result["frames"]["0x82"] > 0                 # PONGs acknowledged the messages
        kind = "0x90" if scenario == "dm" else "0xa0"
        assert result["frames"][kind] == result["delivered"]


def irc_line(seq, sender=1, text=None, target=b"#r", age=300, size=100):
    text = verify.stamp(sender, seq, NOW_US - age, size) if text is None else text
    return b":u%d!u@127.0.0.1 PRIVMSG %s :%s\r\n" % (sender, target, text)


def irc_scan(impl, data: bytes, cuts=(), size: int = 100):
    tally = impl.Tally(size)
    stream = impl.IrcStream(tally)
    others = []
    last = 0
    for cut in sorted(cuts) + [len(data)]:
        others += stream.feed(memoryview(data)[last:cut], NOW_US)
        last = cut
    return tally.snapshot(), [bytes(o) for o in others], stream.acks, stream.buffered_bytes


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda m: m.__name__)
def test_the_irc_stream_catches_loss_duplicates_and_damage(impl):
    data = b"".join(irc_line(q) for q in (0, 1, 3, 3, 2)) + irc_line(0, text=b"x" * 100)
    data += irc_line(0, sender=2, target=b"me") + b":u3!u@h PRIVMSG #r no-colon\n"
    data += b":srv PONG srv :16\r\n:srv PONG srv :9\n:srv PONG srv :x17\n"
    data += b":srv 001 me :Welcome\r\nPING :abc\r\n\n:srv PON"
    snap, others, acks, left = irc_scan(impl, data, cuts=range(0, len(data), 7))
    assert snap["messages"] == 4 and snap["gaps"] == 1
    assert snap["duplicates"] == 1 and snap["reordered"] == 1 and snap["malformed"] == 1
    assert snap["hist"] == {300: 4}
    assert snap["counts"] == {0xA0: 6, 0x90: 1, 0x82: 3, 0x00: 4}
    assert acks == 16 and left == len(b":srv PON")
    assert others == [b":u3!u@h PRIVMSG #r no-colon", b":srv 001 me :Welcome", b"PING :abc",
                      b""]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda m: m.__name__)
def test_an_endless_irc_line_breaks_the_stream(impl):
    with pytest.raises(ValueError):
        irc_scan(impl, b":x PRIVMSG #r :" + b"a" * 70_000)


_irc_item = st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 5000),
                      st.sampled_from(["room", "nick", "pong", "ping", "junk", "bad"]))


@pytest.mark.skipif(verify.verify_c is None, reason="chatcore._loadgen is not built")
@settings(max_examples=150, deadline=None)
@given(st.lists(_irc_item, max_size=60), st.lists(st.integers(0, 20_000), max_size=8),
       st.binary(max_size=40))
def test_both_irc_streams_agree(items, cuts, junk):
    parts = []
    for sender, seq, age, kind in items:
        if kind == "room":
            parts.append(irc_line(seq, sender, age=age, size=40))
        elif kind == "nick":
            parts.append(irc_line(seq, sender, target=b"n%d" % seq, age=age, size=40))
        elif kind == "pong":
            parts.append(b":s PONG s :%d\r\n" % (seq * 7))
        elif kind == "ping":
            parts.append(b"PING :%d\n" % age)
        elif kind == "junk":
            parts.append(junk.replace(b"\n", b"") + b"\r\n")
        else:
            parts.append(irc_line(seq, sender, text=junk.replace(b"\n", b"")[:40], size=40))
    data = b"".join(parts)
    cuts = [c % (len(data) + 1) for c in cuts]
    assert irc_scan(verify_py, data, cuts, size=40) == irc_scan(verify.verify_c, data, cuts,
                                                                size=40)
