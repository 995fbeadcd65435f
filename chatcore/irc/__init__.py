"""The IRC front end: IRC clients (irssi, WeeChat, bots) on the same hub as native clients.

``message`` parses and encodes lines, ``numerics`` names the replies, ``outlet`` turns hub
events into IRC lines (once per message for all IRC recipients), ``connection`` is one IRC
client from accept to close, ``commands`` answers what it sends. docs/irc.md tells users.
"""
