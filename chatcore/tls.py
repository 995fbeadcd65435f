"""TLS for the native protocol: contexts, the server's non-blocking handshake, the transport.

Python's ``ssl`` does all the cryptography; this module only moves bytes, sans-IO style: an
``ssl.SSLObject`` between two ``MemoryBIO``s, fed from and drained to the socket by us. A TLS
client is accepted as a ``TlsHandshake`` on the reactor, with its own timeout; once the
handshake is done, the same session becomes the ``TlsTransport`` of an ordinary
``Connection``, where its ``recv`` stands for the socket's and its ``write_to`` for the output
buffer's. Everything else about a connection (limits, pings, lingering close) is the code a
plain client runs.
"""
from __future__ import annotations

import logging
import os
import ssl

log = logging.getLogger(__name__)

# Plaintext taken from the output buffer per encryption: four full TLS records. The bytes stay
# counted in the buffer until their ciphertext is written (peek, then advance), so
# max_output_bytes holds as for plain clients, and ciphertext waiting for the kernel is
# bounded by this.
TLS_WRITE_CHUNK_BYTES = 65536
# Encryptions per write_to: about what the plain path's one writev sends (SCRATCH_BYTES), so
# one fast TLS reader takes no more of a loop turn than a plain one.
TLS_CHUNKS_PER_WRITE = 4
# An unfinished record is held twice (in the incoming memory BIO's buffer and in OpenSSL's
# read buffer) plus about 4 KiB of allocation: measured 38 KiB of RSS for 16 KiB of a
# record, 8 KiB for 4 000 bytes, 4 KiB for 100. The held-input budget counts it so.
TLS_PARTIAL_RECORD_OVERHEAD_BYTES = 4096
# Read per readable event during the handshake: a ClientHello is a few KiB at most.
HANDSHAKE_READ_BYTES = 16384
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2    # TLS 1.0 and 1.1 are deprecated (RFC 8996)


_NOT_TLS = " (a client without TLS?)"
_HANDSHAKE_HINTS = {
    "WRONG_VERSION_NUMBER": _NOT_TLS, "HTTP_REQUEST": _NOT_TLS, "UNKNOWN_PROTOCOL": _NOT_TLS,
    "RECORD_LAYER_FAILURE": _NOT_TLS, "UNSUPPORTED_PROTOCOL": " (a client too old for TLS 1.2)",
    "TLSV1_ALERT_UNKNOWN_CA": " (the client does not trust our certificate)",
    "SSLV3_ALERT_BAD_CERTIFICATE": " (the client does not trust our certificate)",
}


class TlsConfigError(ValueError):
    """The server's certificate or key cannot be used; the message names the file."""


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise TlsConfigError("the key is encrypted; give tls_key as an unencrypted PEM file")


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The server's context for ``cert_file`` (PEM chain) and its ``key_file``; raises
    TlsConfigError saying which file is wrong and why."""
    for setting, path in (("tls_cert", cert_file), ("tls_key", key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsConfigError(f"{setting} {path}: cannot read it "
                                 f"({exc.strerror or exc})") from None
    try:
        ssl.create_default_context(cafile=cert_file)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"tls_cert {cert_file}: no PEM certificate in it "
                             f"({exc.reason or exc})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    # Our clients do not resume sessions: tickets would cost every handshake for nothing.
    context.num_tickets = 0
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except TlsConfigError as exc:
        raise TlsConfigError(f"tls_key {key_file}: {exc}") from None
    except ssl.SSLError as exc:
        raise TlsConfigError(f"tls_key {key_file}: not an unencrypted PEM private key of the "
                             f"certificate in {cert_file} ({exc.reason or exc})") from None
    return context


def client_context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """What a client trusts: the system's CAs, or only those in ``ca_file``.

    ``insecure`` turns certificate and host name checks off, for self-signed test servers:
    anyone on the path could then read and change the chat.
    """
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = MINIMUM_VERSION
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe_error(exc: ssl.SSLError) -> str:
    """One line for a client's TLS failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the server's TLS certificate is not trusted: {exc.verify_message} "
                f"(--tls-ca FILE trusts a private CA)")
    reason = exc.reason or str(exc)
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return f"TLS failed ({reason}): is this a TLS port?"
    return f"TLS failed: {reason}"


class RecordTracker:
    """Follows TLS record boundaries in the ciphertext as it arrives (a 5-byte header whose
    last two bytes are the body's length), so that ``partial`` says how many bytes of an
    unfinished record the ssl object holds: they are held input like a partial frame.
    OpenSSL refuses a header longer than a record may be, so ``partial`` stays under 18 KiB."""

    __slots__ = ("partial", "_left", "_header")

    def __init__(self):
        self.partial = 0                # bytes of the unfinished record received so far
        self._left = 0                  # of its body still to come
        self._header = b""              # a header split between two reads

    def feed(self, data: bytes) -> None:
        size = len(data)
        at = 0
        left = self._left
        partial = self.partial
        header = self._header
        while at < size:
            if left:
                step = min(left, size - at)
                at += step
                left -= step
                partial = partial + step if left else 0
                continue
            need = 5 - len(header)
            header += data[at:at + need]
            at += need
            if len(header) < 5:
                partial = len(header)
                break
            left = int.from_bytes(header[3:5], "big")
            partial = 5 if left else 0
            header = b""
        self._left = left
        self.partial = partial
        self._header = header


class TlsTransport:
    """An established TLS session over a non-blocking socket, for one ``Connection``.

    ``recv`` has the contract of ``socket.recv`` (plaintext; ``b""`` at the end of the stream;
    BlockingIOError while no whole record is in) and ``write_to(fd)`` that of
    ``OutputBuffer.write_to`` for ``outbuf``.
    """

    __slots__ = ("sock", "outbuf", "_tls", "_incoming", "_outgoing", "_cipher", "_taken",
                 "_early", "_eof", "_records")

    def __init__(self, sock, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO, records: RecordTracker | None = None):
        """``records``: the tracker that has seen every byte of the stream so far."""
        self.sock = sock
        self._records = records or RecordTracker()
        self.outbuf = None                  # set by the Connection
        self._tls = tls
        self._incoming = incoming
        self._outgoing = outgoing
        self._cipher = b""                  # ciphertext the kernel has not taken yet
        self._taken = 0                     # plaintext bytes of outbuf inside _cipher
        self._eof = False                   # the peer's close_notify came
        # Records that came with the client's last handshake message.
        self._early = self._decrypt() if incoming.pending else b""

    @property
    def has_early_data(self) -> bool:
        return bool(self._early)

    @property
    def held_bytes(self) -> int:
        """Input received and not yet given to the connection, in the memory it takes: an
        unfinished record inside the ssl object, and plaintext that came with the
        handshake."""
        partial = self._records.partial
        if partial:
            partial = 2 * partial + TLS_PARTIAL_RECORD_OVERHEAD_BYTES
        return partial + len(self._early)

    def recv(self, max_bytes: int) -> bytes:
        if self._early:
            data, self._early = self._early, b""
            return data
        if self._eof:
            return b""
        data = self.sock.recv(max_bytes)
        if not data:
            return b""
        self._records.feed(data)
        self._incoming.write(data)
        plaintext = self._decrypt()
        if not plaintext and not self._eof:
            raise BlockingIOError("no complete TLS record yet")
        return plaintext

    def _decrypt(self) -> bytes:
        parts = []
        read = self._tls.read
        try:
            while True:
                parts.append(read(TLS_WRITE_CHUNK_BYTES))
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            # The peer's close_notify: the end of the stream, after what came before it.
            self._eof = True
        if self._outgoing.pending:
            # A post-handshake message (a key update): it goes out before the next output.
            self._cipher = bytes(self._cipher) + self._outgoing.read()
        return b"".join(parts)

    def write_to(self, fd: int) -> int:
        """Encrypt queued output and write what the kernel takes; returns ciphertext bytes
        written. Raises OSError for errors other than a full socket buffer."""
        outbuf = self.outbuf
        if self._tls is None:               # released: nothing can be sent any more
            outbuf.advance(outbuf.pending_bytes)
            return 0
        written = 0
        for _ in range(TLS_CHUNKS_PER_WRITE):
            if not self._cipher:
                plaintext = outbuf.peek(TLS_WRITE_CHUNK_BYTES)
                if not plaintext:
                    break
                self._tls.write(plaintext)
                self._cipher = self._outgoing.read()
                self._taken = len(plaintext)
            try:
                sent = os.write(fd, self._cipher)
            except (BlockingIOError, InterruptedError):
                break
            written += sent
            if sent < len(self._cipher):
                self._cipher = memoryview(self._cipher)[sent:]
                break
            self._cipher = b""
            outbuf.advance(self._taken)
            self._taken = 0
        return written

    def close_notify(self) -> None:
        """Tell the peer the stream ends here (before the socket's write side shuts down),
        then let the session go (``release``)."""
        if self._tls is None:
            return
        try:
            self._tls.unwrap()
            data = self._outgoing.read()
        except ssl.SSLWantReadError:        # sent ours; the peer's would come later
            data = self._outgoing.read()
        except (ssl.SSLError, ValueError):
            data = b""
        if data:
            try:
                os.write(self.sock.fileno(), data)
            except OSError:
                pass                        # best effort: the socket closes after this anyway
        self.release()

    def release(self) -> None:
        """Free the session (about 22 KiB, and any unfinished record in it) now rather than
        when the connection object goes: a closing connection lingers for seconds. Nothing
        may be read or written through the transport afterwards."""
        self._tls = self._incoming = self._outgoing = None
        self._cipher = self._early = b""
        self._records.partial = 0


class TlsHandshake:
    """A TLS client being accepted, driven on ``reactor`` until its handshake completes.

    Then ``on_established(self, transport)`` is called, and the socket and transport belong
    to the caller's connection (native, or any other kind with an OutputBuffer). On a bad
    handshake, the peer closing, or ``timeout_seconds`` passing first, the socket is closed,
    the reason logged once (INFO for what the peer sent or failed to send, DEBUG for a peer
    that went away), and ``on_failed(self, drop)`` called (``drop``: the metrics reason, or
    None).
    """

    __slots__ = ("reactor", "sock", "fd", "address", "_tls", "_incoming", "_outgoing",
                 "_unsent", "_timer", "_writing", "_done", "_on_established", "_on_failed",
                 "_hold", "_received", "_records")

    def __init__(self, reactor, sock, address, context: ssl.SSLContext,
                 timeout_seconds: float, on_established, on_failed, hold=None):
        """``hold(bytes)``: counts bytes received (released with a negative count once the
        handshake ends) and returns False when the server holds more input than it may; the
        handshake then fails (drop reason ``input_budget``)."""
        self.reactor = reactor
        self._hold = hold
        self._received = 0              # all of it is held until the handshake ends
        self._records = RecordTracker()
        self._on_established = on_established
        self._on_failed = on_failed
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._unsent = b""
        self._writing = False
        self._done = False
        self._timer = self.reactor.call_later(timeout_seconds, self._timed_out,
                                              timeout_seconds)
        self.reactor.add_reader(self.fd, self._on_readable)

    @property
    def peer(self) -> str:
        host, port = self.address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(HANDSHAKE_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(f"lost during the TLS handshake: {exc.strerror or exc}", logging.DEBUG)
            return
        if not data:
            self.fail("closed before the TLS handshake completed", logging.DEBUG)
            return
        self._records.feed(data)
        self._received += len(data)
        if self._hold is not None and not self._hold(len(data)):
            self.fail("the server holds all the unhandled input it may; closed during the "
                      "TLS handshake", logging.WARNING, drop="input_budget")
            return
        self._incoming.write(data)
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._send_output()
            return
        except ssl.SSLError as exc:
            self._send_output()             # the alert that tells the client why
            hint = _HANDSHAKE_HINTS.get(exc.reason, "")
            self.fail(f"TLS handshake failed: {exc.reason or exc}{hint}", logging.INFO,
                      drop="tls_handshake_failed")
            return
        self._done = True
        if self._send_output():
            self._complete()

    def _send_output(self) -> bool:
        """Write pending handshake bytes; False (and write interest) if the kernel is full."""
        self._unsent = bytes(self._unsent) + self._outgoing.read()
        if self._unsent:
            try:
                sent = os.write(self.fd, self._unsent)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.fail(f"lost during the TLS handshake: {exc.strerror or exc}",
                          logging.DEBUG)
                return False
            self._unsent = memoryview(self._unsent)[sent:] if sent < len(self._unsent) else b""
        if self._unsent and not self._writing:
            self._writing = True
            self.reactor.add_writer(self.fd, self._on_writable)
        elif not self._unsent and self._writing:
            self._writing = False
            self.reactor.remove_writer(self.fd)
        return not self._unsent

    def _on_writable(self) -> None:
        if self._send_output() and self._done:
            self._complete()

    def _complete(self) -> None:
        try:
            transport = TlsTransport(self.sock, self._tls, self._incoming, self._outgoing,
                                     self._records)
        except ssl.SSLError as exc:
            self.fail(f"TLS failed right after the handshake: {exc.reason or exc}")
            return
        self._release()
        self._timer.cancel()
        self.reactor.remove_fd(self.fd)
        log.debug("%s: TLS established (%s, %s)", self.peer, self._tls.version(),
                  (self._tls.cipher() or ("?",))[0])
        self._on_established(self, transport)

    def _release(self) -> None:
        # What the handshake held is the connection's to count from now on, or nobody's.
        if self._hold is not None and self._received:
            self._hold(-self._received)
        self._received = 0

    def _timed_out(self, timeout_seconds: float) -> None:
        self.fail(f"no TLS handshake within {timeout_seconds:g}s", logging.INFO,
                  drop="tls_handshake_timeout")

    def fail(self, why: str, level: int = logging.INFO, drop: str | None = None) -> None:
        """Close the socket now; logs ``why`` once at ``level``. ``drop`` names the reason
        for the drop counters (metrics), when this one is worth counting."""
        if self.sock.fileno() < 0:
            return
        log.log(level, "%s: %s", self.peer, why)
        self._release()
        self._timer.cancel()
        self.reactor.remove_fd(self.fd)
        self.sock.close()
        self._on_failed(self, drop)
