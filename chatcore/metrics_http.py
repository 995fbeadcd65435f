"""The Prometheus page (``GET /metrics``) over HTTP/1.1, on the server's own reactor.

No thread (prometheus_client's ``start_http_server`` would start one): a listening socket
and one reader per HTTP connection on the same reactor as the chat, HTTP parsed by the
sans-IO h11. A scrape builds the page in one go (a few kilobytes; well under a millisecond
plus one pass over the connections' output queues). Keep-alive and pipelining work as
h11 allows; a connection idle past ``metrics_timeout_seconds`` is closed, at most
``max_metrics_connections`` are open at once, and a request head larger than
``max_metrics_request_bytes`` gets 431.
"""
from __future__ import annotations

import errno
import http
import logging
import socket

import h11
from prometheus_client.exposition import choose_encoder

from .server import format_address, listen_socket

log = logging.getLogger(__name__)

METRICS_PATH = b"/metrics"
READ_CHUNK_BYTES = 65536
LISTEN_BACKLOG = 64             # scrapers are few: Prometheus, an operator's curl
_SERVER_HEADER = ("server", "chatcore")


class MetricsEndpoint:
    """Serves ``registry`` at http://HOST:PORT/metrics on ``reactor``."""

    def __init__(self, config, reactor, registry):
        self.config = config
        self.reactor = reactor
        self.registry = registry
        self.listener: socket.socket | None = None
        self.address: tuple | None = None
        self.exchanges: set[_HttpConnection] = set()

    def start(self) -> tuple:
        """Bind and listen; returns the bound (host, port)."""
        host = self.config.metrics_host or self.config.host
        self.listener = listen_socket(host, self.config.metrics_port, LISTEN_BACKLOG)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()[:2]
        self.reactor.add_reader(self.listener.fileno(), self._on_acceptable)
        return self.address

    @property
    def url(self) -> str:
        return f"http://{format_address(*self.address)}{METRICS_PATH.decode()}"

    def close(self) -> None:
        for exchange in list(self.exchanges):
            exchange.close()
        if self.listener is not None:
            self.reactor.remove_fd(self.listener.fileno())
            self.listener.close()
            self.listener = None

    def _on_acceptable(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.warning("metrics: accept failed: %s", exc)
                    return
                continue
            if len(self.exchanges) >= self.config.max_metrics_connections:
                sock.close()        # a scraper retries; a stray client gets nothing to hold
                continue
            sock.setblocking(False)
            self.exchanges.add(_HttpConnection(self, sock))

    def page(self, accept: str) -> tuple[bytes, str]:
        """The exposition for a request's Accept header: (body, content type)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _HttpConnection:
    """One HTTP client of the metrics page: h11 does the protocol, this moves the bytes.

    One response at a time: the socket is read only when h11 needs more input and the last
    response has been written, and a pipelined request waits for the next loop turn, so a
    client that sends many requests at once costs one page per turn and one page of memory.
    """

    def __init__(self, endpoint: MetricsEndpoint, sock: socket.socket):
        self.endpoint = endpoint
        self.reactor = endpoint.reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.http = h11.Connection(
            h11.SERVER, max_incomplete_event_size=endpoint.config.max_metrics_request_bytes)
        self.output = bytearray()
        self.reading = False
        self.writing = False
        self.lingering = False
        self.closed = False
        self.timer = None
        self._restart_timer()
        self._read(True)

    def _restart_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.reactor.call_later(self.endpoint.config.metrics_timeout_seconds,
                                             self.close)

    def _read(self, wanted: bool) -> None:
        if wanted and not self.reading:
            self.reactor.add_reader(self.fd, self._on_readable)
        elif not wanted and self.reading:
            self.reactor.remove_reader(self.fd)
        self.reading = wanted

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(READ_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.http.receive_data(data)             # b"": the peer closed its side
        self._serve()

    def _serve(self) -> None:
        if self.closed or self.lingering:
            return
        try:
            need_data = self._handle_events()
        except h11.RemoteProtocolError as exc:
            self._refuse(exc)
            need_data = False
        if not self.lingering:
            self._read(need_data)
        self._flush()

    def _handle_events(self) -> bool:
        """Answer at most one request; True if h11 needs more input to go on."""
        http = self.http
        while not self.closed:
            if http.our_state is h11.DONE and http.their_state is h11.DONE:
                http.start_next_cycle()          # keep-alive: ready for the next request
                self._restart_timer()
            event = http.next_event()
            if event is h11.NEED_DATA:
                return True
            if event is h11.PAUSED:
                return False
            if type(event) is h11.Request:
                self._respond(event)
            elif type(event) is h11.ConnectionClosed:
                self.close()
                return False
            elif type(event) is h11.EndOfMessage and http.our_state is h11.DONE:
                return False                     # answered: the next request, next turn
        return False

    def _respond(self, request: h11.Request) -> None:
        target = request.target.split(b"?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            self._send_simple(405, b"only GET and HEAD\n", [("allow", "GET, HEAD")])
            return
        if target != METRICS_PATH:
            self._send_simple(404, b"the metrics are at /metrics\n")
            return
        accept = ""
        for name, value in request.headers:
            if name == b"accept":
                accept = value.decode("latin-1")
        body, content_type = self.endpoint.page(accept)
        self._send(_response(200, [("content-type", content_type),
                                   ("content-length", str(len(body)))]))
        if request.method == b"GET":
            self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def _send_simple(self, status: int, body: bytes, headers=()) -> None:
        self._send(_response(status, [("content-type", "text/plain; charset=utf-8"),
                                      ("content-length", str(len(body))), *headers]))
        self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def _refuse(self, exc: h11.RemoteProtocolError) -> None:
        """A request h11 could not parse: say so if a response can still be sent, then close."""
        if self.http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send_simple(exc.error_status_hint, f"{exc}\n".encode(),
                              [("connection", "close")])
        else:
            self.output.clear()
            self._linger()

    def _send(self, event) -> None:
        self.output += self.http.send(event)

    def _flush(self) -> None:
        if self.closed:
            return
        while self.output:
            try:
                sent = self.sock.send(self.output)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            del self.output[:sent]
        if self.output:
            if not self.writing:
                self.writing = True
                self.reactor.add_writer(self.fd, self._flush)
            return
        if self.writing:
            self.writing = False
            self.reactor.remove_writer(self.fd)
        if self.http.our_state in (h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._linger()
        elif not self.reading:
            self.reactor.call_soon(self._serve)  # a pipelined request, or more input wanted

    def _linger(self) -> None:
        """Close after the response: shut our side, then read until the client's EOF, so
        that input still arriving is not answered with a reset that would destroy the
        response before the client reads it (the timer bounds the wait)."""
        if self.lingering:
            return
        self.lingering = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self._read(False)
        self.reactor.add_reader(self.fd, self._discard_input)
        self.reading = True

    def _discard_input(self) -> None:
        try:
            data = self.sock.recv(READ_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self.reactor.remove_fd(self.fd)
        self.sock.close()
        self.endpoint.exchanges.discard(self)


def _response(status: int, headers: list) -> h11.Response:
    return h11.Response(status_code=status, reason=http.HTTPStatus(status).phrase.encode(),
                        headers=[_SERVER_HEADER, *headers])
