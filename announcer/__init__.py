"""announcer: tells callers about network outages before their call is queued."""

__version__ = "0.1.0"
