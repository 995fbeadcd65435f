"""The server's counters as Prometheus metrics (docs/metrics.md), built at scrape time.

``registry_for(server)`` gives a prometheus_client registry whose collector reads the plain
counters the server keeps (chatcore.stats, the reactor's turn histogram, the outlet's
deliveries) and its live state (connections, users, rooms, output queues) when it is
scraped; nothing here runs per message. chatcore.metrics_http serves it over HTTP.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from .stats import Histogram

PREFIX = "chatcore_"


def registry_for(server) -> CollectorRegistry:
    """A registry with chatcore's metrics for ``server`` and the process's own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    ProcessCollector(registry=registry)         # memory, CPU, open files: read from /proc
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class ServerCollector:
    """Yields one server's metric families whenever the registry is collected."""

    def __init__(self, server):
        self.server = server

    def collect(self):
        server = self.server
        stats = server.stats
        hub = server.hub
        tls = stats.tls_connections
        connections = GaugeMetricFamily(PREFIX + "connections", "Open client connections "
                                        "(chat handshake done or not), by transport.",
                                        labels=["transport"])
        connections.add_metric(["plain"], len(server.connections) - tls)
        connections.add_metric(["tls"], tls)
        yield connections
        yield _gauge("tls_handshakes", "TLS handshakes in progress (not yet connections).",
                     len(server.tls_handshakes))
        yield _counter("connections_accepted", "Client connections accepted.",
                       stats.connections_accepted)
        yield _gauge("users", "Users of this server: connected, or held for a resume after "
                     "an unclean drop.", len(hub.sessions) if hub is not None else 0)
        yield _gauge("held_users", "Users whose connection dropped and whose name, rooms and "
                     "chats wait for a resume.", hub.held_count() if hub is not None else 0)
        yield _gauge("rooms", "Rooms with at least one member on this server.",
                     len(hub.rooms) if hub is not None else 0)
        messages = CounterMetricFamily(PREFIX + "messages", "Chat messages accepted from "
                                       "clients, by kind.", labels=["kind"])
        messages.add_metric(["room"], stats.room_messages)
        messages.add_metric(["direct"], stats.direct_messages)
        yield messages
        yield _counter("deliveries", "Events queued for clients, one per recipient (room "
                       "and direct messages, joins, leaves, notices).", server.outlet.deliveries)
        yield _counter("received_bytes", "Bytes read from client sockets.",
                       stats.bytes_received)
        yield _counter("sent_bytes", "Bytes written to client sockets (as the kernel took "
                       "them).", stats.bytes_sent)
        drops = CounterMetricFamily(PREFIX + "drops", "Connections the server closed, by "
                                    "reason.", labels=["reason"])
        for reason, count in sorted(stats.drops.items()):
            drops.add_metric([reason], count)
        yield drops
        # Queues are non-empty only on backlogged connections and, during a turn, on those
        # with output queued since the last flush (or left for a later turn's writes).
        holders = stats.backlogged.union(outbuf.owner for outbuf in server.outlet.pending)
        holders.update(outbuf.owner for outbuf in server.flusher.buffers())
        queued = [connection.outbuf.pending_bytes for connection in holders]
        yield _gauge("output_queue_bytes", "Output queued for clients and not yet taken by "
                     "the kernel, all connections together.", sum(queued))
        yield _gauge("output_queue_max_bytes", "The longest output queue of one connection.",
                     max(queued, default=0))
        yield _histogram("rtt_seconds", "Round-trip times of the server's pings to clients.",
                         stats.rtt_seconds)
        yield _histogram("loop_turn_seconds", "Work of one event-loop turn, from its wake-up "
                         "to its next wait.", server.reactor.turn_seconds)


def _gauge(name: str, documentation: str, value) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _counter(name: str, documentation: str, value) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    rows = histogram.cumulative()
    buckets = [(_bound(bound), count) for bound, count in rows]
    return HistogramMetricFamily(PREFIX + name, documentation, buckets=buckets,
                                 sum_value=histogram.sum)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
