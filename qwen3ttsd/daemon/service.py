"""RPC methods of the daemon: one coroutine per method, dispatched by name.

Streaming method: ``tts.synthesize`` (:mod:`.synthesis`) sends ``tts.progress`` /
``tts.start`` / ``tts.chunk`` / ``tts.caption`` notifications, then exactly one response.
Everything else is request -> response. Admin methods (:mod:`.admin`) exist only on the
admin socket, and only for callers that passed the SO_PEERCRED check. This module holds
the dispatch and the info and voice methods; the state they share is :mod:`.state`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .. import __version__, messages as M, protocol as P
from ..audio import AudioFormatError
from ..audio.reference import process_reference
from ..errors import TTSError
from .admin import Admin
from .design import Design
from .encode import Encoding
from .server import Connection
from .state import DaemonState
from .synthesis import Synthesis

log = logging.getLogger("qwen3ttsd.service")

CAPABILITIES = ["stream", "cancel", "clone", "voice_design", "formats", "speed", "resample",
                "seed", "priority"]

Method = Callable[[Connection, int, dict[str, Any]], Awaitable["M.Result | None"]]


class Service:
    def __init__(self, state: DaemonState) -> None:
        self.state = state
        self.cfg = state.cfg
        self.registry = state.registry
        synthesis, admin = Synthesis(state), Admin(state)
        self.methods: dict[str, Method] = {
            "rpc.hello": self.hello,
            "tts.synthesize": synthesis.synthesize,
            "tts.models": self.list_models,
            "tts.languages": self.list_languages,
            "tts.warmup": synthesis.warmup,
            "voices.list": self.list_voices,
            "voices.add": self.add_voice,
            "voices.remove": self.remove_voice,
            "voices.design": Design(state).design,
            "audio.encode": Encoding(state).encode,
            "admin.status": admin.status,
            "admin.load": admin.load,
            "admin.unload": admin.unload,
            "admin.keepalive": admin.keepalive,
            "admin.set": admin.set,
            "admin.shutdown": admin.shutdown,
            "admin.cache.list": admin.cache_list,
            "admin.cache.clear": admin.cache_clear,
        }

    async def handle(self, conn: Connection, msgid: int, method: str, params: dict[str, Any]) -> None:
        fn = self.methods.get(method)
        if fn is None:
            raise TTSError("no_such_method", f"unknown method {method[:64]!r}")
        if method.startswith("admin.") and conn.kind != "admin":
            raise TTSError("forbidden", f"{method} is only available on the admin socket")
        if conn.kind == "admin" and not conn.admin and method != "rpc.hello":
            raise TTSError("forbidden", f"uid {conn.uid} is not allowed to use the admin socket "
                           f"(needs root, the daemon's user or group {self.cfg.admin_group!r})")
        result = await fn(conn, msgid, params)
        if result is not None:  # None: a stream that sent its own response
            await conn.send(P.response(msgid, None, result.to_wire()))

    # --- info --------------------------------------------------------------------------

    async def hello(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.HelloResult:
        M.Hello.from_wire(params)  # checked against its declared bounds, like every request
        return M.HelloResult(proto=P.PROTOCOL_VERSION, server="qwen3ttsd", version=__version__,
                             capabilities=CAPABILITIES, max_frame=P.MAX_REQUEST_FRAME,
                             admin=conn.admin, socket=conn.kind)

    async def list_models(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.ModelsResult:
        return M.ModelsResult(self.registry.list())

    async def list_languages(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.LanguagesResult:
        langs: set[str] = set()
        for e in self.registry.entries.values():
            langs.update(e.languages)
        return M.LanguagesResult(sorted(langs))

    async def list_voices(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.VoicesResult:
        entries = self.registry.entries.values()
        speakers = sorted({s for e in entries if e.type == "custom_voice" for s in e.speakers})
        return M.VoicesResult(speakers, [M.VoiceInfo.from_wire(v) for v in self.state.voices.list()],
                              voice_design=any(e.type == "voice_design" for e in entries))

    # --- voices ------------------------------------------------------------------------

    async def add_voice(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.VoiceInfo:
        msg = M.VoicesAdd.from_wire(params)
        if not msg.name:
            raise TTSError("bad_request", "name is required", data={"param": "name"})
        if not msg.consent.strip():  # the same rule as over HTTP: no clone without a record of consent
            raise TTSError("bad_request", "consent is required: a record that the speaker agreed to be cloned",
                           data={"param": "consent"})
        if msg.name.lower() in self.state.all_speakers():
            raise TTSError("bad_request", f"{msg.name!r} is a built-in speaker name")
        if not msg.replace and self.state.voices.exists(msg.name):  # early; the store checks again
            raise TTSError("conflict", f"voice {msg.name!r} already exists: remove it first, or add it "
                           "with replace", data={"param": "name"})
        try:
            wav = await asyncio.to_thread(process_reference, msg.audio)
        except AudioFormatError as e:
            raise TTSError("bad_request", f"reference audio rejected: {e}") from e
        meta = {"consent": msg.consent, "added_by_uid": conn.uid}
        info = await asyncio.to_thread(self.state.voices.add, msg.name, wav, msg.ref_text, meta, msg.replace)
        self._forget_voice(msg.name)
        return M.VoiceInfo.from_wire(info)

    async def remove_voice(self, conn: Connection, msgid: int, params: dict[str, Any]) -> M.VoicesRemoveResult:
        name = M.VoicesRemove.from_wire(params).name
        if not self.state.voices.remove(name):
            raise TTSError("not_found", f"voice {name!r} does not exist")
        self._forget_voice(name)
        return M.VoicesRemoveResult(name)

    def _forget_voice(self, name: str) -> None:
        for lm in list(self.registry.loaded.values()):
            lm.model.drop_voice(name)
