"""The IRC front end: IRC clients (irssi, WeeChat, bots) on the same hub as native clients.

``message`` parses and encodes lines, ``numerics`` names the replies, ``outlet`` turns hub
events into IRC lines (once per message for all IRC recipients), ``connection`` is one IRC
client from accept to close; ``dispatch`` hands each command to its module
(``registration``, ``channels``, ``messages``, ``users``, ``queries``), ``caps`` and
``text`` hold the IRCv3 and formatting rules. docs/irc.md tells users.
"""
