"""Connections per IPv6 /64, live: clients from many addresses of one /64 and of another,
against a real server, inside a private network namespace (tests/ipv6_probe.py) so that the
addresses can exist without touching the machine's network. Skipped, with the reason, where
namespaces or IPv6 are not available."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest

from chatcore.errors import ErrorCode
from tests.serverproc import ROOT


def _namespace_available() -> str:
    """Why the test cannot run here, or "" if it can."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"no {tool} command"
    probe = subprocess.run(["unshare", "--net", "ip", "-6", "addr", "add", "2001:db8::1/64",
                            "dev", "lo"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return ("cannot make a network namespace with IPv6 addresses (needs root or "
                f"CAP_SYS_ADMIN, and IPv6): {probe.stderr.strip() or probe.returncode}")
    return ""


def test_connections_per_ipv6_64_are_limited_live():
    reason = _namespace_available()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(["unshare", "--net", sys.executable, "-m", "tests.ipv6_probe"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    refused = f"refused:{int(ErrorCode.TOO_MANY_CONNECTIONS)}"
    assert seen["same_64"] == ["ok", "ok", "ok", refused]
    assert seen["other_64"] == "ok"
    assert seen["after_a_close"] == "ok"
    assert seen["users"] == 4                   # a1, a2, b0 and a9
    assert seen["log_refusal"]
    assert seen["exempt_64"] == ["ok"] * 5
