"""The ``upstream`` engine: this daemon in front of other speech engines (issue 23).

With ``engine = "upstream"`` the daemon loads no model and imports no torch: each text
segment the scheduler admits is spoken by an upstream - another qwen3ttsd daemon over this
project's RPC (``unix:///path/tts.sock``: exact audio, seeds and call sessions kept) or an
OpenAI-speech server (``http(s)://...``: vLLM-Omni, Dynamo, sglang-omni, another qwen3ttsd
bridge; 24 kHz PCM). The upstream's audio enters the pipeline where a local engine's would
(:class:`..engine.backend.Audio` events, float32 24 kHz per segment), so everything in front
- formats, speed, SSML breaks, captions, calls with barge-in, Wyoming, priorities and the
queue - works unchanged.

* :mod:`.targets`  the configured URLs;
* :mod:`.shapes`   the HTTP request/response shapes (contract-tested against vLLM-Omni's docs);
* :mod:`.links`    one connection kind each: :class:`.links.RpcLink`, :class:`.links.HttpLink`;
* :mod:`.fleet`    discovery, routing, caps, retries, down/probe, counters;
* :mod:`.backend`  the :class:`..engine.backend.Backend` the scheduler steps.
"""
