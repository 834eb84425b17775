"""The admin command line, ``qwen3tts-ctl``: ``ctl`` (the commands, talking to the daemon
over its sockets), ``models`` and ``pull`` (checkpoints in models_dir), ``install_service``
(systemd units for this installation) and ``subtitles`` (captions as SRT/WebVTT).

A client of the daemon like any other: it imports neither ``qwen3ttsd.daemon`` nor
``qwen3ttsd.engine`` (tests/test_layering.py), so it starts light and without torch.
"""
