"""``--send``: one message, acknowledged or not, told by the exit status and stderr."""
from __future__ import annotations

import sys

from .. import events as ev
from ..client import ChatClient
from ..errors import ChatError, ErrorCode
from ..roaming import RoamingClient
from ..serverchoice import ChoicePolicy
from . import exitcodes
from .config import ClientConfig
from .connection import explain_connect_error
from .formatting import error_name


def run(config: ClientConfig, stderr=None) -> int:
    stderr = stderr or sys.stderr

    def fail(status: int, message: str) -> int:
        print(f"chatcore-client: {message}", file=stderr, flush=True)
        return status

    text = config.send[-1]
    peer = config.send[0] if len(config.send) == 2 else config.to
    room = None if len(config.send) == 2 else config.room
    where = f"#{room}" if room else peer
    servers = config.server_list()
    options = dict(local_port=config.local_port, timeout=config.connect_timeout_seconds,
                   tls=config.tls_context() or False)
    host, port = servers[0]
    client = ChatClient(host, port, **options)
    try:
        try:
            if len(servers) > 1:
                # The lowest-RTT server that answers (no moves: one message and gone).
                roaming = RoamingClient(servers, policy=ChoicePolicy(probe_interval_seconds=0),
                                        **options)
                try:
                    roaming.connect(config.name or "")
                finally:
                    if roaming.client is not None:
                        client = roaming.client
            else:
                client.connect(config.name or "")
        except ChatError as exc:
            return fail(exitcodes.NAME_REFUSED, f"the server refused the name "
                        f"{config.name!r}: {exc.message or error_name(exc.code)}")
        except OSError as exc:
            if len(servers) > 1:
                return fail(exitcodes.UNAVAILABLE, f"none of the {len(servers)} servers can "
                            f"be reached (the last: {exc})")
            return fail(exitcodes.UNAVAILABLE, explain_connect_error(
                exc, host, port, local_port=config.local_port,
                timeout=config.connect_timeout_seconds))
        address = f"{client.host}:{client.port}"
        try:
            if room:
                client.join(room)
                request = ev.SendRoom(room, text)
            else:
                request = ev.SendDirect(peer, text)
            request_id = client.send(request)
            reply = client.wait_for(lambda e: type(e) in (ev.Ack, ev.Error)
                                    and e.request_id == request_id)
            if type(reply) is ev.Error:
                raise ChatError(ErrorCode(reply.code), reply.message)
        except ChatError as exc:
            return fail(exitcodes.NOT_DELIVERED, f"not delivered to {where}: "
                        f"{exc.message or error_name(exc.code)}")
        except (OSError, TimeoutError) as exc:
            return fail(exitcodes.UNAVAILABLE,
                        f"not delivered to {where}: lost the server at {address}: {exc}")
        return exitcodes.OK
    finally:
        client.quit()
