"""IRC messages count in the metrics as native ones do (chatcore_messages_total): through
the per-message lane (plain PRIVMSG), the general path (tags, NOTICE, actions) and to a
user of this node."""
from __future__ import annotations

from tests.test_metrics import METRICS_FLAGS, scrape


def _messages(server) -> tuple[float, float]:
    page = scrape(server)
    return (page[("chatcore_messages_total", (("kind", "room"),))],
            page[("chatcore_messages_total", (("kind", "direct"),))])


def test_irc_messages_are_counted_like_native_ones(start_irc_server, irc_on):
    server = start_irc_server(*METRICS_FLAGS)
    alice, bob = irc_on(server, "alice"), irc_on(server, "bob")
    for client in (alice, bob):
        client.send("JOIN #lobby")
        client.expect("366")
    alice.expect("JOIN", "#lobby")          # bob's join, so both are in before we start
    assert _messages(server) == (0, 0)
    alice.send("PRIVMSG #lobby :plain, the lane's",             # room, lane
               "@+x=1 PRIVMSG #lobby :tagged, the general path",  # room, general
               "PRIVMSG #lobby :\x01ACTION waves\x01",            # room action
               "NOTICE #lobby :a notice is a message too",        # room
               "PRIVMSG bob :plain to bob",                       # direct (opens it)
               "PRIVMSG bob :again, in an open chat: the lane's",  # direct, lane
               "PRIVMSG bob,#lobby :to both",                     # direct + room, general
               "PRIVMSG nobody :refused: not counted",
               "PRIVMSG #lobby :\x01VERSION\x01",                 # CTCP: not a chat message
               "PING done")
    alice.expect("401", "nobody")
    alice.expect("PONG")
    for _ in range(7):
        bob.expect_any("PRIVMSG", "NOTICE")
    assert _messages(server) == (5, 3)
