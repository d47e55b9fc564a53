"""Notifications to people: email, Telegram, Slack, Matrix (apprise) and JSON webhooks.

``rules`` decides which events are worth a message and groups them,
``messages`` words them, ``deliver`` sends them, ``service`` runs it all on
the event stream; ``urls`` checks destinations and keeps their secrets out
of the log.
"""
