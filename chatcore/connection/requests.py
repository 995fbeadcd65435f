"""The native requests a connection handles, one method each, and the table that maps each
request type to its handler; requests the backplane may answer later wait in order."""
from __future__ import annotations

import logging
import time
from collections import deque

from .. import events as ev
from ..errors import ChatError, ErrorCode
from ..events import Reason
from ..hub import Page
from ..protocol import PROTOCOL_VERSION, encode_ack, encode_event
from .closing import State

log = logging.getLogger(__package__)


class Requests:
    """The request handlers of ``Connection``."""

    __slots__ = ()    # Connection's slots hold the state

    def _ask_hub(self, request, on_outcome) -> None:
        """``request(done)`` asks the hub something its backplane may answer later (a name
        claim, a user on another node): the requests after it wait, unread, until
        ``on_outcome(outcome)`` has run, so replies keep the order of their requests."""
        self._awaiting = "answering"            # an answer now comes back inside request()
        try:
            request(lambda outcome: self._answered(outcome, on_outcome))
        except ChatError:
            self._awaiting = False
            raise
        if self._awaiting:
            self._awaiting = "waiting"

    def _pipeline(self, send, event) -> None:
        """Like ``_ask_hub`` for a message (or action) to a shared room, without waiting:
        ``send(session, room, text, done)`` publishes it at once (Redis keeps this node's
        order, so the room's and the sender's order hold), and its reply, the Ack or the
        Error, is queued and released in request order as the copies come back: its slot
        holds the request id, the reply is built when released (``_release_replies``).
        Past ``max_room_sends_in_flight`` unanswered, or before any request that is not such
        a message (``_handle_input``), the input waits as behind ``_ask_hub``."""
        replies = self._replies
        if replies is None:
            replies = self._replies = deque()
        slot = [False, None, event.request_id]
        replies.append(slot)

        def done(outcome) -> None:
            slot[0], slot[1] = True, outcome
            self._release_replies()

        try:
            send(self.session, event.room, event.text, done)
        except ChatError as exc:                # refused here: its Error in its place
            done(exc)
        if len(replies) >= self.config.max_room_sends_in_flight and not self._awaiting:
            self._awaiting = "pipeline"

    def _in_order(self, reply) -> None:
        """``reply()`` now, or after the replies still owed to earlier requests."""
        if self._replies:
            self._replies.append([True, None, lambda _: reply()])
            self._release_replies()
        else:
            reply()

    def _release_replies(self) -> None:
        replies = self._replies
        while replies and replies[0][0]:
            _, outcome, on_outcome = replies.popleft()
            if type(on_outcome) is not int:
                on_outcome(outcome)
            elif self.state is State.OPEN:      # a room send's request id (see above)
                if type(outcome) is tuple:
                    self.stats.room_messages += 1
                    self.send(encode_ack(outcome[0], outcome[1], on_outcome))
                else:
                    self.send_error(outcome.code, outcome.message, False, on_outcome)
        if self._awaiting == "pipeline" and (not replies or (
                self._held_event is None
                and len(replies) < self.config.max_room_sends_in_flight)):
            self._awaiting = False
            if self.state is State.OPEN:
                self.reactor.call_soon(self._next_turn)

    def _pipelines(self, event) -> bool:
        """Whether ``event`` is a message to a shared room, answered through ``_pipeline``."""
        return (type(event) in _ROOM_SENDS and self.session is not None
                and self.hub.room_shared(self.session, event.room))

    def _answered(self, outcome, on_outcome) -> None:
        later = self._awaiting == "waiting"
        self._awaiting = False
        on_outcome(outcome)
        if later and self.state is State.OPEN:
            # Had the answer come at once, the loop that took the request would still be
            # running and handle what follows it itself.
            self.reactor.call_soon(self._next_turn)

    def _on_hello(self, event: ev.Hello) -> None:
        if self.server.full_for_a_new_session():
            self.send_error(ErrorCode.SERVER_FULL,
                            f"server is full ({self.config.max_clients} clients, counting "
                            f"{self.hub.held_sessions} waiting to resume)", fatal=True,
                            request_id=event.request_id)
            self.close(Reason.DISCONNECTED, "server full")
            return
        # A cluster claims the name in Redis first (see _ask_hub).
        self._ask_hub(lambda done: self.hub.connect(event.name, self.outlet, self.outbuf, done),
                      lambda outcome: self._on_named(event, outcome))

    def _on_named(self, event: ev.Hello, outcome) -> None:
        if self.state is not State.OPEN:            # gone while the claim was out
            if not isinstance(outcome, ChatError):
                self.hub.disconnect(outcome, Reason.DISCONNECTED)
            return
        if isinstance(outcome, ChatError):
            self.send_error(outcome.code, outcome.message, False, event.request_id)
        else:
            self.session = outcome
            self._welcome(event.request_id)
            log.debug("%s is %s (%s)", self.peer, outcome.name, event.client or "?")

    def _reply(self, request_id: int, reply):
        """``on_outcome`` for a request answered by Ok (or Ack, given ``encode_ack``)."""
        def on_outcome(outcome) -> None:
            if self.state is not State.OPEN:
                return
            if isinstance(outcome, ChatError):
                self.send_error(outcome.code, outcome.message, False, request_id)
            else:
                self.send(reply(outcome))
        return on_outcome

    def _on_resume(self, event: ev.Resume) -> None:
        # A cluster may find the session on another node (see _ask_hub).
        self._ask_hub(lambda done: self.hub.resume(event.name, event.token, self.outlet,
                                                   self.outbuf, done),
                      lambda outcome: self._on_resumed(event, outcome))

    def _on_resumed(self, event: ev.Resume, outcome) -> None:
        if self.state is not State.OPEN:            # gone while Redis was asked
            if not isinstance(outcome, ChatError):
                self.hub.detach(outcome, Reason.DISCONNECTED)
            return
        if isinstance(outcome, ChatError):
            self.send_error(outcome.code, outcome.message, False, event.request_id)
            return
        self.session = outcome
        self._welcome(event.request_id)
        self.hub.replay(self.session)
        log.info("%s resumed %s (%s)", self.peer, self.session.name, event.client or "?")

    def _welcome(self, request_id: int) -> None:
        # The token goes first, so a client has it by the time it sees Welcome.
        config = self.config
        self.send_event(ev.ResumeToken(self.session.resume_token,
                                       int(config.resume_grace_seconds)))
        self.send(self.protocol.send(ev.Welcome(
            PROTOCOL_VERSION, self.session.name, self.hub.node.name,
            int(config.ping_interval_seconds * 1000), config.max_frame_bytes,
            config.max_text_bytes, config.max_name_chars, request_id)))

    def _on_ping(self, event: ev.Ping) -> None:
        self.send_event(ev.Pong(event.token, event.request_id))

    def _on_pong(self, event: ev.Pong) -> None:
        if self.ping_sent_at is not None and event.token == self.ping_token:
            rtt = time.monotonic() - self.ping_sent_at
            self.session.record_rtt(rtt)
            self.stats.rtt_seconds.observe(rtt)
            self.ping_sent_at = None

    def _on_quit(self, event: ev.Quit) -> None:
        message = event.reason
        try:
            self.hub.check_quit_message(message)
        except ChatError as exc:
            # Refused as a goodbye, the quit itself still happens.
            self.send_error(exc.code, exc.message, False, event.request_id)
            message = ""
        self._leave_hub(Reason.QUIT, "quit", message)
        self.close(Reason.QUIT, "quit")

    def _on_open_chat(self, event: ev.OpenChat) -> None:
        self._ask_hub(lambda done: self.hub.open_chat(self.session, event.peer, done),
                      self._reply(event.request_id, lambda _: encode_event(ev.Ok(
                          event.request_id))))

    def _on_close_chat(self, event: ev.CloseChat) -> None:
        self._ask_hub(lambda done: self.hub.close_chat(self.session, event.peer, done),
                      self._reply(event.request_id, lambda _: encode_event(ev.Ok(
                          event.request_id))))

    def _on_send_direct(self, event: ev.SendDirect) -> None:
        def acked(stamp):
            self.stats.direct_messages += 1
            return encode_ack(*stamp, event.request_id)

        self._ask_hub(
            lambda done: self.hub.send_direct(self.session, event.peer, event.text, done),
            self._reply(event.request_id, acked))

    def _on_send_direct_action(self, event: ev.SendDirectAction) -> None:
        def acked(stamp):
            self.stats.direct_messages += 1
            return encode_ack(*stamp, event.request_id)

        self._ask_hub(lambda done: self.hub.send_direct_action(self.session, event.peer,
                                                               event.text, done),
                      self._reply(event.request_id, acked))

    def _on_send_room_action(self, event: ev.SendRoomAction) -> None:
        # Like SendRoom in a room shared with other nodes: the Ack once it is delivered here.
        if self.hub.room_shared(self.session, event.room):
            self._pipeline(self.hub.send_room_action, event)
            return
        self._ask_hub(lambda done: self.hub.send_room_action(self.session, event.room,
                                                             event.text, done),
                      self._reply(event.request_id, self._room_acked(event.request_id)))

    def _room_acked(self, request_id: int):
        def acked(stamp) -> bytes:
            self.stats.room_messages += 1
            return encode_ack(*stamp, request_id)
        return acked

    def _on_set_topic(self, event: ev.SetTopic) -> None:
        self._ask_hub(lambda done: self.hub.set_topic(self.session, event.room, event.topic,
                                                      done),
                      self._reply(event.request_id, lambda _: encode_event(ev.Ok(
                          event.request_id))))

    def _on_set_name(self, event: ev.SetName) -> None:
        # Like a Hello, a new name is claimed cluster-wide first (see _ask_hub).
        old_name = self.session.name
        self._ask_hub(lambda done: self.hub.set_name(self.session, event.name, done),
                      lambda error: self._on_renamed(event, old_name, error))

    def _on_renamed(self, event: ev.SetName, old_name: str, error) -> None:
        if self.state is not State.OPEN:
            return
        if error is not None:
            self.send_error(error.code, error.message, False, event.request_id)
        else:
            self.send_event(ev.Ok(event.request_id))
            log.debug("%s: %s is now %s", self.peer, old_name, self.session.name)

    def _on_set_away(self, event: ev.SetAway) -> None:
        self.hub.set_away(self.session, event.message)
        self.send_event(ev.Ok(event.request_id))

    def _on_whois(self, event: ev.Whois) -> None:
        # A user of another node is looked up in Redis (see _ask_hub).
        self._ask_hub(lambda done: self.hub.whois(self.session, event.name, done),
                      self._reply(event.request_id, lambda details: self._details_frame(
                          details, event.request_id)))

    def _details_frame(self, details: ev.UserDetails, request_id: int) -> bytes:
        details.request_id = request_id
        frame = encode_event(details)
        while len(frame) - 4 > self.config.max_frame_bytes and details.rooms:
            # Only a server with a tiny max_frame_bytes gets here: fewer rooms, still a reply.
            details.rooms = details.rooms[:len(details.rooms) // 2]
            frame = encode_event(details)
        return frame

    def _on_join(self, event: ev.JoinRoom) -> None:
        # A cluster node opening a room learns its members first (see _ask_hub).
        self._ask_hub(lambda done: self.hub.join(self.session, event.room, done=done),
                      self._reply(event.request_id, lambda _: encode_event(ev.Ok(
                          event.request_id))))

    def _on_leave(self, event: ev.LeaveRoom) -> None:
        self.hub.leave(self.session, event.room)
        self.send_event(ev.Ok(event.request_id))

    def _on_send_room(self, event: ev.SendRoom) -> None:
        if self.hub.room_shared(self.session, event.room):
            # Members on other nodes: the Ack once the message is back from the broker and
            # delivered here, so the sender sees it before its Ack, as on one server; the
            # next ones are published meanwhile (see _pipeline).
            self._pipeline(self.hub.send_room, event)
            return
        msg_id, timestamp_ms = self.hub.send_room(self.session, event.room, event.text)
        self.stats.room_messages += 1
        self.send(encode_ack(msg_id, timestamp_ms, event.request_id))

    def _on_join_room_key(self, event: ev.JoinRoomKey) -> None:
        self._ask_hub(lambda done: self.hub.join(self.session, event.room, event.key, done),
                      self._reply(event.request_id, lambda _: encode_event(ev.Ok(
                          event.request_id))))

    # A cluster node has moderation decided in Redis (see _ask_hub): the Ok follows the
    # outcome, as on one server.

    def _on_set_room_mode(self, event: ev.SetRoomMode) -> None:
        self._ask_hub(lambda done: self.hub.set_room_modes(self.session, event.room,
                                                           event.changes, done=done),
                      self._reply(event.request_id, lambda _: encode_event(ev.Ok(
                          event.request_id))))

    def _on_kick(self, event: ev.Kick) -> None:
        self._ask_hub(lambda done: self.hub.kick(self.session, event.room, event.name,
                                                 event.reason, done),
                      self._reply(event.request_id, lambda _: encode_event(ev.Ok(
                          event.request_id))))

    def _on_invite(self, event: ev.Invite) -> None:
        self._ask_hub(lambda done: self.hub.invite(self.session, event.room, event.name, done),
                      self._reply(event.request_id, lambda _: encode_event(ev.Ok(
                          event.request_id))))

    def _on_get_room_modes(self, event: ev.GetRoomModes) -> None:
        modes = self.hub.room_modes(self.session, event.room)
        modes.request_id = event.request_id
        frame = encode_event(modes)
        while len(frame) - 4 > self.config.max_frame_bytes and modes.members:
            # Only a server with a tiny max_frame_bytes gets here: fewer members listed.
            modes.members = modes.members[:len(modes.members) // 2]
            frame = encode_event(modes)
        self.send(frame)

    def _hidden(self, room: str) -> bool:
        """A secret room this user is not in: listed as if it did not exist."""
        return bool(room) and self.hub.room_hidden(self.session, room)

    # A cluster answers the room list and a room's members from Redis (see _ask_hub).

    def _on_list_users(self, event: ev.ListUsers) -> None:
        # The unpaged request of protocol 1.0: its first page (``total`` says how many).
        if self._hidden(event.room):
            self.send_event(ev.UserList(0, (), event.request_id))
            return
        # A cluster reads the users of every node from Redis (see _ask_hub).
        self._ask_hub(lambda done: self.hub.users_page(event.room, done=done),
                      self._reply(event.request_id, lambda page: self._fitted(
                          lambda entries, _: ev.UserList(page.total, entries,
                                                         event.request_id), page)))

    def _on_list_rooms(self, event: ev.ListRooms) -> None:
        self._ask_hub(lambda done: self.hub.rooms_page(done=done),
                      self._reply(event.request_id, lambda page: self._fitted(
                          lambda entries, _: ev.RoomList(page.total, entries,
                                                         event.request_id), page)))

    def _on_list_users_page(self, event: ev.ListUsersPage) -> None:
        if self._hidden(event.room):
            self.send_event(ev.UserPage(0, True, "", (), event.request_id))
            return
        self._ask_hub(lambda done: self.hub.users_page(event.room, event.after, event.pattern,
                                                       event.limit, done),
                      self._reply(event.request_id, lambda page: self._fitted(
                          lambda entries, next_after: ev.UserPage(
                              page.total, page.total_exact, next_after, entries,
                              event.request_id), page)))

    def _on_list_rooms_page(self, event: ev.ListRoomsPage) -> None:
        self._ask_hub(lambda done: self.hub.rooms_page(event.after, event.pattern,
                                                       event.limit, done),
                      self._reply(event.request_id, lambda page: self._fitted(
                          lambda entries, next_after: ev.RoomPage(
                              page.total, page.total_exact, next_after, entries,
                              event.request_id), page)))

    def _on_list_servers(self, event: ev.ListServers) -> None:
        servers = self.hub.list_servers()
        page = Page(servers, [server.name for server in servers], len(servers), True, "")
        self.send(self._fitted(lambda entries, _: ev.ServerList(page.total, entries,
                                                                event.request_id), page))

    def _fitted(self, make_reply, page) -> bytes:
        """The reply frame with as many of the page's entries as fit in one frame; if some
        are cut, the cursor resumes after the last one sent."""
        entries = page.entries
        count = len(entries)
        limit = self.config.max_frame_bytes
        while True:
            next_after = page.next_after if count == len(entries) else page.keys[count - 1]
            frame = encode_event(make_reply(tuple(entries[:count]), next_after))
            if len(frame) - 4 <= limit or count <= 1:
                return frame
            count = max(1, min(count - 1, count * limit // (len(frame) - 4) - 1))


# The requests ``_pipeline`` may answer out of turn (in a room shared with other nodes).
_ROOM_SENDS = (ev.SendRoom, ev.SendRoomAction)

# Keyed by event type; another connection kind (IRC) has its own table.
HANDLERS = {
    ev.Hello: Requests._on_hello,
    ev.Resume: Requests._on_resume,
    ev.Ping: Requests._on_ping,
    ev.Pong: Requests._on_pong,
    ev.Quit: Requests._on_quit,
    ev.OpenChat: Requests._on_open_chat,
    ev.CloseChat: Requests._on_close_chat,
    ev.SendDirect: Requests._on_send_direct,
    ev.JoinRoom: Requests._on_join,
    ev.LeaveRoom: Requests._on_leave,
    ev.SendRoom: Requests._on_send_room,
    ev.SendRoomAction: Requests._on_send_room_action,
    ev.SendDirectAction: Requests._on_send_direct_action,
    ev.SetTopic: Requests._on_set_topic,
    ev.SetName: Requests._on_set_name,
    ev.SetAway: Requests._on_set_away,
    ev.Whois: Requests._on_whois,
    ev.ListUsers: Requests._on_list_users,
    ev.ListRooms: Requests._on_list_rooms,
    ev.ListServers: Requests._on_list_servers,
    ev.ListUsersPage: Requests._on_list_users_page,
    ev.ListRoomsPage: Requests._on_list_rooms_page,
    ev.JoinRoomKey: Requests._on_join_room_key,
    ev.SetRoomMode: Requests._on_set_room_mode,
    ev.Kick: Requests._on_kick,
    ev.Invite: Requests._on_invite,
    ev.GetRoomModes: Requests._on_get_room_modes,
}
