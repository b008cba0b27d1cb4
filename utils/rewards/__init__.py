"""Checkable rewards: functions of a prompt and an answer (built-in or a user's own) and a remote reward server."""
