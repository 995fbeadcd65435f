"""Helpers for the tests of the client's server choice: a fast-deciding client config, the
client in --json script mode, delaying proxies in front of servers."""
from __future__ import annotations

import json

import pytest

from tests.cli_helpers import ScriptClient
from tests.delayproxy import DelayProxy

SUSTAIN_SECONDS = 1.5


def pick_config(tmp_path, **settings) -> str:
    """A client config that measures and decides fast (a test's time, not a day's)."""
    values = dict(probe_interval_seconds=0.2, move_sustain_seconds=SUSTAIN_SECONDS,
                  reconnect_initial_seconds=0.2, reconnect_max_seconds=1.0)
    values.update(settings)
    path = tmp_path / "client.toml"
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in values.items()))
    return str(path)


class JsonClient(ScriptClient):
    """The client in --json script mode: ``record(type)`` waits for the next such record."""

    name = ""

    def record(self, kind: str, timeout: float = 15.0, **fields) -> dict:
        while True:
            rec = json.loads(self.expect(r'"type":"%s"' % kind, timeout).string)
            if all(rec.get(key) == value for key, value in fields.items()):
                return rec

    def back_in(self, room: str, timeout: float = 15.0) -> dict:
        """After a move: the session resumed (a cluster that resumes across nodes), or the
        client's own join of ``room`` again (a Hello there)."""
        while True:
            rec = json.loads(self.expect(r'"type":"(resumed|joined)"', timeout).string)
            if rec["type"] == "resumed":
                assert room in rec["rooms"], rec
                return rec
            if rec["room"] == room and rec["name"] == self.name:
                return rec

    def records(self, kind: str) -> list[dict]:
        return [json.loads(line) for line in self.lines if f'"type":"{kind}"' in line]


@pytest.fixture
def json_clients():
    started: list[JsonClient] = []

    def start(*args: str) -> JsonClient:
        client = JsonClient("--json", *args)
        if "--name" in args:
            client.name = args[args.index("--name") + 1]
        started.append(client)
        return client

    yield start
    for client in started:
        client.close()


@pytest.fixture
def proxies():
    started: list[DelayProxy] = []

    def start(server, delay_seconds: float = 0.0) -> DelayProxy:
        proxy = DelayProxy(server.port, delay_seconds)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.close()
