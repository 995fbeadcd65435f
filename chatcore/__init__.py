"""chatcore: a real-time TCP chat server and client on one selectors reactor."""

__version__ = "0.1.0"
