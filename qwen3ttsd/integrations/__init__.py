"""Voice-agent framework integrations over the phone WebSocket (``/v1/audio/speech/stream``).

Each submodule imports its framework and is installed with its own extra:
``qwen3ttsd[pipecat]`` (``integrations.pipecat``) and ``qwen3ttsd[livekit]``
(``integrations.livekit``). Nothing else in the package imports them, so the bridge and the
daemon never load a framework. ``integrations.phone`` is the framework-free client side of the
protocol both share.
"""
