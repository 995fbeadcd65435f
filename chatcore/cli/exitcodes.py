"""Exit statuses of chatcore-client, for scripts (docs/client.md, "Exit status")."""

OK = 0                  # everything sent was acknowledged
NOT_DELIVERED = 1       # the server refused a message or request (unknown user, bad room, ...)
USAGE = 2               # bad arguments or config (argparse's own status)
UNAVAILABLE = 3         # the server cannot be reached, or was lost and did not come back
NAME_REFUSED = 4        # the name is taken or invalid
INTERRUPTED = 130       # Ctrl-C in a script (128 + SIGINT)
