"""Channels: JOIN, PART, NAMES, LIST, TOPIC and the MODE queries clients make on joining
(324/329, the empty ban list 368), mapped onto the hub's rooms."""
from __future__ import annotations

from ..errors import ChatError, ErrorCode
from . import dispatch
from . import numerics as rpl
from .dispatch import in_turn, need, pages, register, room_of
from .message import MAX_LINE_BYTES
from .outlet import channel_of, source_of
from .text import strip_formatting

# The list mode a client may ask for (MODE #chan b) and the numeric that ends it; without
# room moderation there are no bans, so the list is empty.
_LIST_ENDS = {"b": (rpl.RPL_ENDOFBANLIST, "End of channel ban list")}


_JOIN_REFUSALS = {ErrorCode.BANNED: (rpl.ERR_BANNEDFROMCHAN, "+b"),
                  ErrorCode.INVITE_ONLY: (rpl.ERR_INVITEONLYCHAN, "+i"),
                  ErrorCode.BAD_ROOM_KEY: (rpl.ERR_BADCHANNELKEY, "+k"),
                  ErrorCode.ROOM_FULL: (rpl.ERR_CHANNELISFULL, "+l")}


def join(conn, params: list) -> None:
    """Each channel in turn: a cluster node opening a room learns its members and topic
    from Redis first, so JOIN's 332/333 and 353/366 come once the join is complete (the
    client's next lines wait for it, as for every answer the cluster gives)."""
    if not need(conn, "JOIN", params, 1):
        return
    session = conn.session
    if params[0] == "0":
        for room in list(session.rooms.values()):
            conn.hub.leave(session, room.name)
        return
    keys = params[1].split(",") if len(params) > 1 else []

    def join_one(item, resume) -> None:
        index, target = item
        room = room_of(target)
        if room is None:
            conn.reply(rpl.ERR_NOSUCHCHANNEL, target,
                       "No such channel (channel names start with #)")
            resume()
            return
        key = keys[index] if index < len(keys) else ""

        def joined(outcome) -> None:
            if conn.session is not session:
                return                              # gone while the cluster answered
            state, conn.joined_state = conn.joined_state, None
            if isinstance(outcome, ChatError):
                _join_refused(conn, target, outcome)
            elif outcome:
                # A JOIN of a channel one is on already is ignored, as IRC servers do.
                if state is not None and state.topic:
                    _topic_lines(conn, state.room, state.topic, state.topic_by,
                                 state.topic_at_ms // 1000)
                names_of(conn, target, resume)
                return
            resume()

        conn.joined_state = None
        try:
            conn.ask_hub(lambda done: conn.hub.join(session, room, key, done), joined)
        except ChatError as exc:
            conn.joined_state = None
            _join_refused(conn, target, exc)
            resume()

    in_turn(enumerate(params[0].split(",")), join_one)


def _join_refused(conn, target: str, exc: ChatError) -> None:
    if exc.code == ErrorCode.TOO_MANY_ROOMS:
        conn.reply(rpl.ERR_TOOMANYCHANNELS, target, "You have joined too many channels")
    elif exc.code in _JOIN_REFUSALS:       # the room's modes (irc/moderation)
        numeric, mode = _JOIN_REFUSALS[exc.code]
        conn.reply(numeric, target, f"Cannot join channel ({mode})")
    else:
        conn.reply(rpl.ERR_NOSUCHCHANNEL, target, f"Illegal channel name: {exc.message}")


def part(conn, params: list) -> None:
    if not need(conn, "PART", params, 1):
        return
    for target in params[0].split(","):
        room = room_of(target)
        if room is None or room.casefold() not in conn.hub.rooms:
            conn.reply(rpl.ERR_NOSUCHCHANNEL, target, "No such channel")
            continue
        try:
            conn.hub.leave(conn.session, room)
        except ChatError:
            conn.reply(rpl.ERR_NOTONCHANNEL, target, "You're not on that channel")


def names(conn, params: list) -> None:
    if not params or not params[0]:
        conn.reply(rpl.RPL_ENDOFNAMES, "*", "End of /NAMES list")
        return
    in_turn(params[0].split(","), lambda target, resume: names_of(conn, target, resume))


def each_member(conn, target: str, each, then, missing=None) -> None:
    """``each(room_name, member)`` for every member (UserInfo) of channel ``target``, on
    every node of a cluster (its member list in Redis, page by page: the client's next
    lines wait), then ``then(room_name)``. A channel this client may not look into (no
    such room, a secret one it is not in) gets ``missing()`` instead.

    A room with no member on this node is found in the cluster's shared state too, as
    native member lists find it (never by asking the other nodes); its modes and
    prefixes are its members' nodes' business (room moderation is per node)."""
    hub = conn.hub
    room = room_of(target)
    found = hub.rooms.get(room.casefold()) if room else None
    if found is None and room and hub.backplane.lists_rooms and _is_room_name(hub, room):
        _shared_room(conn, room, lambda name: _members(conn, name, each, then)
                     if name else missing())
    elif found is None or hub.room_hidden(conn.session, found.name):   # +s
        missing()
    else:
        _members(conn, found.name, each, then)


def _members(conn, room_name: str, each, then) -> None:
    pages(conn, lambda after, done: conn.hub.users_page(room_name, after, done=done),
          lambda member: each(room_name, member), lambda: then(room_name))


def _shared_room(conn, room: str, then) -> None:
    """``then(name)``: the room's name as the cluster spells it, or "" when no node has
    it (one key read from the shared room list)."""
    key = room.casefold()

    def got(page) -> None:
        then(next((info.name for info in getattr(page, "entries", ())
                   if info.name.casefold() == key), ""))

    conn.ask_hub(lambda done: conn.hub.rooms_page(pattern=key, limit=1, done=done), got)


def names_of(conn, target: str, then=None) -> None:
    """353 lines (as many as the names need) and 366 for one channel, its members on every
    node of a cluster (from Redis: the client's next lines wait); ``then()`` after 366."""
    long_form = "userhost-in-names" in conn.caps
    all_prefixes = "multi-prefix" in conn.caps
    modes = dispatch.channel_modes
    line: list[str] = []
    size = [0]

    def head(channel: str) -> int:
        return len(f":{conn.irc.server_name} 353 {conn.nick} = {channel} :") + 2

    def add(room_name: str, member) -> None:
        channel = channel_of(room_name)
        prefix = modes.prefixes(conn, room_name, member.name)
        if prefix and not all_prefixes:
            prefix = prefix[0]
        entry = prefix + (source_of(member.name) if long_form else member.name)
        if not line:
            size[0] = head(channel)
        elif size[0] + len(entry.encode()) + 1 > MAX_LINE_BYTES:
            conn.reply(rpl.RPL_NAMREPLY, "=", channel, " ".join(line))
            line.clear()
            size[0] = head(channel)
        line.append(entry)
        size[0] += len(entry.encode()) + 1

    def end(room_name: str | None) -> None:
        channel = channel_of(room_name) if room_name else target
        if line:
            conn.reply(rpl.RPL_NAMREPLY, "=", channel, " ".join(line))
        conn.reply(rpl.RPL_ENDOFNAMES, channel, "End of /NAMES list")
        if then is not None:
            then()

    each_member(conn, target, add, end, lambda: end(None))


def list_(conn, params: list) -> None:
    """321, 322 per room, 323: every room of the cluster, with its members on every node
    and its topic (from Redis in a cluster, a page of topics in one round trip for the
    rooms with no member here), secret ones left out."""
    hub = conn.hub
    rooms = hub.rooms
    session = conn.session
    conn.reply(rpl.RPL_LISTSTART, "Channel", "Users  Name")
    end = lambda: conn.reply(rpl.RPL_LISTEND, "End of /LIST")   # noqa: E731

    def page(entries, go_on) -> None:
        shown = [info for info in entries
                 if not (info.name.casefold() in rooms
                         and hub.room_hidden(session, rooms[info.name.casefold()].name))]

        def topics(found) -> None:
            if conn.session is not session:
                return
            for info, (text, _, _) in zip(shown, found):
                conn.reply(rpl.RPL_LIST, channel_of(info.name), str(info.members),
                           _list_topic(text))
            go_on()

        conn.ask_hub(lambda done: hub.room_topics([info.name for info in shown], done),
                     topics)

    if not params or not params[0]:
        pages(conn, lambda after, done: hub.rooms_page(after, done=done), None, end, page)
        return
    wanted = sorted({t[1:].casefold() for t in params[0].split(",")
                     if t.startswith("#") and _is_room_name(hub, t[1:])})

    def one(key, resume) -> None:
        def got(found) -> None:
            page([info for info in getattr(found, "entries", ())
                  if info.name.casefold() == key], resume)

        conn.ask_hub(lambda done: hub.rooms_page(pattern=key, limit=1, done=done), got)

    in_turn(wanted, one, end)


def _is_room_name(hub, name: str) -> bool:
    """Whether ``name`` may be a room's (so it is no glob pattern either)."""
    try:
        hub.check_room_name(name)
    except ChatError:
        return False
    return True


def _list_topic(topic: str) -> str:
    return topic.replace("\n", " ")


def topic(conn, params: list) -> None:
    if not need(conn, "TOPIC", params, 1):
        return
    target = params[0]
    room = room_of(target)
    hub = conn.hub
    found = hub.rooms.get(room.casefold()) if room is not None else None
    if found is None and room and hub.backplane.lists_rooms and _is_room_name(hub, room):
        _shared_room(conn, room, lambda name: _remote_topic(conn, target, name, params))
        return
    if found is None or hub.room_hidden(conn.session, found.name):
        conn.reply(rpl.ERR_NOSUCHCHANNEL, target, "No such channel")
        return
    if len(params) == 1:
        if found.topic:
            _topic_lines(conn, found.name, found.topic, found.topic_by,
                         found.topic_at_ms // 1000)
        else:
            conn.reply(rpl.RPL_NOTOPIC, channel_of(found.name), "No topic is set")
        return
    text = fit_bytes(strip_formatting(params[1]), conn.hub.limits.max_topic_bytes)
    try:
        conn.hub.set_topic(conn.session, found.name, text)
    except ChatError as exc:
        if exc.code == ErrorCode.NOT_IN_ROOM:
            conn.reply(rpl.ERR_NOTONCHANNEL, channel_of(found.name), "You're not on that channel")
        elif exc.code == ErrorCode.TEXT_INVALID:
            conn.reply(rpl.ERR_UNKNOWNERROR, "TOPIC", exc.message)
        elif exc.code == ErrorCode.NOT_OPERATOR:                # +t
            conn.reply(rpl.ERR_CHANOPRIVSNEEDED, channel_of(found.name),
                       "You're not channel operator")
        else:
            raise


def _remote_topic(conn, target: str, name: str, params: list) -> None:
    """TOPIC of a channel with no member on this node (``name``: as the cluster spells
    it; empty: no such channel): its kept topic from Redis; setting it needs membership."""
    if not name:
        conn.reply(rpl.ERR_NOSUCHCHANNEL, target, "No such channel")
    elif len(params) > 1:
        conn.reply(rpl.ERR_NOTONCHANNEL, channel_of(name), "You're not on that channel")
    else:
        def shown(found) -> None:
            text, by, at_ms = found[0]
            if text:
                _topic_lines(conn, name, text, by, at_ms // 1000)
            else:
                conn.reply(rpl.RPL_NOTOPIC, channel_of(name), "No topic is set")

        conn.ask_hub(lambda done: conn.hub.room_topics([name], done), shown)


def _topic_lines(conn, room: str, text: str, by: str, at_seconds: int) -> None:
    channel = channel_of(room)
    # Native topics may hold LF, which IRC lines cannot: shown as spaces.
    conn.reply(rpl.RPL_TOPIC, channel, text.replace("\n", " "))
    if by:
        conn.reply(rpl.RPL_TOPICWHOTIME, channel, source_of(by), str(at_seconds))


def fit_bytes(text: str, limit: int) -> str:
    """``text`` cut at a character boundary to at most ``limit`` bytes of UTF-8, as IRC
    servers cut topics and away messages longer than TOPICLEN and AWAYLEN."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def channel_mode(conn, target: str, params: list) -> None:
    """MODE on a channel: the query (324, 329), the ban list (empty), and refusals
    of changes (472 unknown letters, 482 the fixed ones)."""
    found = conn.hub.rooms.get(room_of(target).casefold())
    if found is None:
        conn.reply(rpl.ERR_NOSUCHCHANNEL, target, "No such channel")
        return
    channel = channel_of(found.name)
    if len(params) == 1:
        conn.reply(rpl.RPL_CHANNELMODEIS, channel,
                   *dispatch.channel_modes.mode_string(conn, found.name))
        conn.reply(rpl.RPL_CREATIONTIME, channel, str(found.modes.created_at_ms // 1000))
        return
    changes = params[1]
    letters = changes.lstrip("+-")
    if changes[:1] != "-" and len(params) == 2 and letters and all(
            c in _LIST_ENDS for c in letters):
        for letter in dict.fromkeys(letters):
            numeric, text = _LIST_ENDS[letter]
            conn.reply(numeric, channel, text)
        return
    unknown = [c for c in letters if c not in "n+-"]
    if unknown:
        conn.reply(rpl.ERR_UNKNOWNMODE, unknown[0], "is unknown mode char to me")
    else:
        conn.reply(rpl.ERR_CHANOPRIVSNEEDED, channel,
                   "You're not channel operator (nobody is: modes are fixed)")


register("JOIN", join)
register("PART", part)
register("NAMES", names)
register("LIST", list_)
register("TOPIC", topic)
