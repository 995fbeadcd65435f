"""What every part of the cluster shares: the versioned key prefix, the message envelope
(encode, decode, version check) and the error of an unreachable Redis.

Every key and channel starts with ``{cluster_name}:v1:`` and every message carries
``"v": 1``, so a later layout can run beside this one during a rolling upgrade (see
docs/cluster.md for every key and channel with its TTL).
"""
from __future__ import annotations

import json
import logging

from ..errors import ChatError, ErrorCode

log = logging.getLogger("chatcore.cluster")

ENVELOPE_VERSION = 1            # the "v" of every message; bumped with the layout
KEY_VERSION = "v1"              # in every key and channel name


def key_prefix(cluster_name: str) -> str:
    return f"{cluster_name}:{KEY_VERSION}"


def unreachable() -> ChatError:
    return ChatError(ErrorCode.CLUSTER_UNREACHABLE,
                     "the cluster is out of reach (Redis); try again shortly")


class Envelopes:
    """The envelope part of ``Cluster``: ``node``, ``instance`` and ``_unknown_versions``
    are the Cluster's."""

    def _envelope(self, fields: dict) -> bytes:
        return json.dumps({"v": ENVELOPE_VERSION, "node": self.node.name,
                           "instance": self.instance, **fields}).encode()

    def _decode(self, data: bytes, what: str, required: tuple) -> dict | None:
        """The message in ``data`` if it is a JSON object of this envelope version with every
        field of ``required``; else None (a malformed one is logged, another version once)."""
        try:
            message = json.loads(data)
            for name in required:
                message[name]
            version = message.get("v")
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("cluster: ignoring a malformed %s: %.80r", what, data)
            return None
        if version != ENVELOPE_VERSION:
            self._unknown_version(version, message.get("node"))
            return None
        return message

    def _unknown_version(self, version, origin) -> None:
        """Log once per version seen: a node of another layout is running beside this one."""
        if version not in self._unknown_versions:
            self._unknown_versions.add(version)
            log.warning("cluster: ignoring messages of envelope version %r from %r "
                        "(this node speaks %d)", version, origin, ENVELOPE_VERSION)
