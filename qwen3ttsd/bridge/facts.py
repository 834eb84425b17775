"""What the bridge knows about the daemon, without waking it.

The daemon starts on the first connection to its sockets and every connection postpones
its idle exit, so the always-on parts of the bridge (Wyoming ``describe``, the page's
status panel) must not ask it anything on their own. Instead they read this cache, which
is refreshed only when the daemon is running anyway: right after a synthesis, when the
activator reports a live daemon process, or when a user explicitly asks (the page's
refresh button). Which clone voices are saved comes from the voice index the daemon
keeps in its state directory (:mod:`qwen3ttsd.voice_index`), so a voice added a moment ago
is listed even though the daemon has since exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ..client import AsyncClient
from ..config import BridgeConfig
from ..errors import TTSError
from ..messages import AdminStatus, AdminStatusResult, Languages, ModelInfo, Models, VoiceInfo, VoicesList, VoicesResult
from ..voice_index import read_index
from .metrics import Metrics

if TYPE_CHECKING:
    from ..activator import Activator

log = logging.getLogger("qwen3tts.bridge.facts")

STATUS_MAX_AGE_S = 5.0   # after a synthesis, facts older than this are refreshed (never per request)
# Qwen3-TTS CustomVoice's built-in speakers: what we list before the daemon ever reported.
BUILTIN_SPEAKERS = ("vivian", "serena", "uncle_fu", "dylan", "eric", "ryan", "aiden", "ono_anna", "sohee")
LANGUAGES = ("chinese", "english", "japanese", "korean", "german", "french", "russian", "portuguese",
             "spanish", "italian")


class DaemonFacts:
    """Last known models, voices, languages and admin status of the daemon."""

    def __init__(self, cfg: BridgeConfig, activator: Activator | None = None, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.activator = activator
        self.metrics = metrics
        self.models: list[ModelInfo] | None = None
        self.voices: VoicesResult | None = None
        self.languages: list[str] | None = None
        self.status: AdminStatusResult | None = None
        self.status_error: str | None = None
        self.at: float | None = None          # wall-clock time of the last successful refresh
        self._task: asyncio.Task[None] | None = None

    # --- knowledge ---------------------------------------------------------------------

    def running(self) -> bool | None:
        """True/False when an activator (``--activate``) knows; None under systemd."""
        if self.activator is None:
            return None
        return self.activator.info()["pid"] is not None

    def speakers(self) -> list[str]:
        if self.voices is not None:  # what the configured models really have (maybe none)
            return list(self.voices.speakers)
        return list(BUILTIN_SPEAKERS)

    def clones(self) -> list[VoiceInfo]:
        """The saved voices: the daemon's index says which (it is rewritten on every change),
        the last ``voices.list`` adds their details; without an index, that list alone."""
        known = {c.name: c for c in (self.voices.clones if self.voices is not None else [])}
        index = read_index(self.cfg.state_dir)
        if index is None:
            return list(known.values())
        return [known.get(e.id) or VoiceInfo(name=e.id, created=e.created) for e in index]

    def language_names(self) -> list[str]:
        return list(self.languages or LANGUAGES)

    def model_for(self, kind: str, speaker: str | None = None) -> str | None:
        """The checkpoint name of the first model of ``kind`` (that has ``speaker``)."""
        for m in self.models or []:
            if m.type == kind and (speaker is None or speaker in m.speakers):
                return m.name
        return None

    # --- refreshing ----------------------------------------------------------------------

    async def refresh(self, timeout: float = 5.0) -> None:
        """Ask the daemon now (this connects, so it starts a stopped daemon: callers decide)."""
        async with asyncio.timeout(timeout):
            async with AsyncClient(self.cfg.tts_socket, connect_timeout=timeout) as c:
                models, voices, langs = await asyncio.gather(
                    c.request(Models()), c.request(VoicesList()), c.request(Languages()))
            self.models, self.voices = models.models, voices
            self.languages = [lang for lang in langs.languages if lang != "auto"]
            self.at = time.time()
            try:
                async with AsyncClient(self.cfg.admin_socket, connect_timeout=timeout) as c:
                    self.status, self.status_error = await c.request(AdminStatus()), None
            except TTSError as e:  # the bridge may not be an admin (systemd): models/voices suffice
                self.status, self.status_error = None, e.message

    def refresh_soon(self, max_age: float = 0.0) -> None:
        """Refresh in the background (after a synthesis: the daemon is up anyway), unless the
        facts are younger than ``max_age`` seconds."""
        if self._task is not None and not self._task.done():
            return
        if max_age and self.at is not None and time.time() - self.at < max_age:
            return
        self._task = asyncio.get_running_loop().create_task(self._quiet_refresh())

    async def _quiet_refresh(self) -> None:
        with contextlib.suppress(Exception):
            await self.refresh()

    async def refresh_if_running(self, max_age: float = 5.0, timeout: float = 2.0) -> None:
        """Refresh a stale cache, but only when the activator says a daemon process runs."""
        if self.running() is not True:
            return
        if self.at is not None and time.time() - self.at < max_age:
            return
        try:
            await self.refresh(timeout)
        except (TTSError, TimeoutError, OSError) as e:
            log.debug("daemon facts refresh failed: %s", e)

    # --- reporting ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The status panel's view: never connects to the daemon."""
        running = self.running()
        out: dict[str, Any] = {
            "running": running,
            "activator": self.activator.info() if self.activator is not None else None,
            "socket_present": os.path.exists(self.cfg.tts_socket),
            "active_streams": self.metrics.active if self.metrics is not None else None,
            "checked_at": self.at,
            "age_s": round(time.time() - self.at, 1) if self.at else None,
            "models": None if self.models is None else [m.to_wire() for m in self.models],
            "speakers": self.speakers(),
            "clones": [c.to_wire() for c in self.clones()],
            "languages": self.language_names(),
            "details": None,
            "details_error": self.status_error,
        }
        st = self.status
        if st and self.at:
            details: dict[str, Any] = {
                "state": st.state, "pid": st.pid, "version": st.version, "rss_bytes": st.rss_bytes,
                "vram_bytes": st.vram_bytes, "active_streams": st.active_streams, "queue_len": st.queue_len,
                "idle_timeout": st.idle_timeout, "uptime_s": st.uptime_s, "loaded": sorted(st.loaded)}
            left = st.idle_exit_in_s
            if left is not None:  # extrapolated from when we asked; a later request postpones it
                details["idle_exit_at"] = self.at + float(left)
            out["details"] = details
        return out
