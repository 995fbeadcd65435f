"""How long a CLI client whose cluster node is SIGKILLed takes to chat again on another:
from the SIGKILL to the delivery, on another node, of a message typed right after it.

    python scripts/measure_failover.py --runs 7 [--silence 6 --announce 2]

Each run: a redis-server, three nodes (``--node-silence-seconds``/``--node-announce-seconds``
as given; the server defaults are 6 and 2), the CLI client in script mode (``--json``) with
all three in ``--server``, bob (the library client) on a node it is not on. The client's
node is killed, "after" is typed at once (queued offline, sent on the new node), and the
time until bob receives it is one sample. Prints every sample, p50 and max.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chatcore import events as ev  # noqa: E402
from chatcore.client import ChatClient  # noqa: E402
from tests.cli_helpers import ScriptClient  # noqa: E402
from tests.redisproc import RedisProcess  # noqa: E402
from tests.serverproc import ServerProcess  # noqa: E402


def one_run(redis: RedisProcess, number: int, silence: float, announce: float,
            config: str) -> float:
    cluster = f"failover{os.getpid()}-{number}"
    nodes = {}
    for name in ("alpha", "beta", "gamma"):
        node = ServerProcess("--redis", redis.url, "--cluster-name", cluster,
                             "--server-name", name, "--node-silence-seconds", str(silence),
                             "--node-announce-seconds", str(announce),
                             "--log-level", "INFO").start()
        node.wait_for_log("connected to Redis")
        nodes[name] = node
    alice = ScriptClient("--json", "--name", "alice", "--to", "bob", "--config", config,
                         *[arg for node in nodes.values()
                           for arg in ("--server", f"127.0.0.1:{node.port}")])
    bob = None
    try:
        connected = json.loads(alice.expect('"type":"connected"', 15).string)
        victim = nodes[connected["server"]]
        bob_node = next(n for name, n in nodes.items() if name != connected["server"])
        bob = ChatClient("127.0.0.1", bob_node.port, timeout=30)
        bob.connect("bob")
        alice.write("before")
        assert bob.wait_for(ev.DirectMessage).text == "before"
        time.sleep(1.5 * announce)                  # the client has measured the others
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        alice.write("after")
        message = bob.wait_for(lambda e: type(e) is ev.DirectMessage and e.text == "after",
                               timeout=60)
        seconds = time.monotonic() - killed_at
        assert message.sender == "alice"
        return seconds
    finally:
        alice.close()
        if bob is not None:
            bob.close()
        for node in nodes.values():
            node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--silence", type=float, default=6.0,
                        help="the nodes' --node-silence-seconds (server default 6)")
    parser.add_argument("--announce", type=float, default=2.0,
                        help="the nodes' --node-announce-seconds (server default 2)")
    args = parser.parse_args()
    redis = RedisProcess().start()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write("probe_interval_seconds = 1.0\n")
        config = f.name
    samples = []
    try:
        for number in range(args.runs):
            seconds = one_run(redis, number, args.silence, args.announce, config)
            samples.append(seconds)
            print(f"run {number + 1}: {seconds:.2f}s", flush=True)
    finally:
        redis.stop()
        os.unlink(config)
    print(f"SIGKILL -> first message delivered on another node, node silence "
          f"{args.silence:g}s, announce {args.announce:g}s, {len(samples)} runs: "
          f"p50 {statistics.median(samples):.2f}s, max {max(samples):.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
