"""The always-on bridge: OpenAI-compatible HTTP + WebSocket in front of the daemon.

Never imports numpy, torch or soundfile (a test asserts it): it relays bytes.
"""
