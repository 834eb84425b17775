"""Typed wire messages: one dataclass per RPC request, notification and result.

Every parameter's type, default and bounds are declared here once, next to its name; the
daemon (``daemon/service.py``), the bridge's OpenAI and WebSocket front ends and the client
library validate with the same declarations, so a limit cannot differ between layers.
``docs/protocol.md`` is the contract; ``tests/test_messages.py`` checks the two agree.

``from_wire`` turns a msgpack/JSON params map into a message or raises ``TTSError``
(``bad_request`` with ``data.param`` naming the field; ``payload_too_large`` for overlong
strings). ``strict`` is for JSON front ends: integers must be JSON integers and booleans
JSON booleans, where the daemon also takes ``3.0`` for ``3`` (msgpack peers may send
floats). Unknown keys are ignored here (newer clients talk to older daemons); the OpenAI
front end refuses them itself. Torch- and numpy-free.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Generic, TypeVar

from .errors import TTSError
from .formats import CHUNK_PROFILES, MODEL_RATE, RATE_RANGE, SPEED_RANGE, AudioFormatError, canonical_format, check_rate
from .protocol import MAX_REQUEST_FRAME, N_CANCEL, N_CHUNK, N_PROGRESS, N_SEGMENT, N_START, N_TEXT

PRIORITIES = ("realtime", "normal")   # realtime (phone calls) is scheduled first
DEFAULT_SPEAKER = "vivian"            # CustomVoice speaker when a request names none
MAX_TEXT_CHARS = 20_000               # the daemon's default max_text_chars
MIN_TEMPERATURE = 0.05                # lower divides the logits into inf/NaN mid-generation
MAX_SEED = 2 ** 31 - 1
MIN_SCRIPT_CHARS, MAX_SCRIPT_CHARS = 10, 400   # a designed voice's script: a few seconds of speech
MAX_ENCODE_BYTES = MAX_REQUEST_FRAME - 64 * 1024   # audio.encode's PCM: 5.8 min at 24 kHz in one frame

M = TypeVar("M", bound="Message[Any]")
R = TypeVar("R", bound="Result")


def bad(message: str, param: str | None = None) -> TTSError:
    return TTSError("bad_request", message, data={"param": param} if param else None)


# --- field kinds ----------------------------------------------------------------------------


class Kind:
    """How one field is checked; ``doc`` is its type in docs/protocol.md."""

    doc: ClassVar[str] = ""

    def check(self, key: str, value: Any, strict: bool, limit: float | None) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Num(Kind):
    """A finite number within lo..hi; ``whole``: an integer (64-bit on the wire)."""

    lo: float
    hi: float
    whole: bool = False

    @property
    def doc(self) -> str:  # type: ignore[override]
        return "int" if self.whole else "float"

    def check(self, key: str, value: Any, strict: bool, limit: float | None) -> int | float:
        hi = self.hi if limit is None else limit
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (strict and self.whole and not isinstance(value, int)):
            raise bad(f"{key} must be {'an integer' if strict and self.whole else 'a number'}", key)
        # ints compare exactly (no float overflow); NaN fails every comparison: test it first
        if (isinstance(value, float) and not math.isfinite(value)) or not self.lo <= value <= hi:
            raise bad(f"{key} must be within {self.lo}..{hi}", key)
        if self.whole:
            if value != int(value):
                raise bad(f"{key} must be a whole number", key)
            return int(value)
        return float(value)


@dataclass(frozen=True)
class Str(Kind):
    max_len: int = 1000
    choices: tuple[str, ...] | None = None
    doc: ClassVar[str] = "str"

    def check(self, key: str, value: Any, strict: bool, limit: float | None) -> str:
        if not isinstance(value, str):
            raise bad(f"{key} must be a string", key)
        max_len = self.max_len if limit is None else int(limit)
        if len(value) > max_len:
            raise TTSError("payload_too_large", f"{key} is longer than {max_len} characters",
                           data={"param": key})
        if self.choices is not None and value not in self.choices:
            raise bad(f"{key} must be one of {list(self.choices)}", key)
        return value


@dataclass(frozen=True)
class Bool(Kind):
    doc: ClassVar[str] = "bool"

    def check(self, key: str, value: Any, strict: bool, limit: float | None) -> bool:
        if strict and not isinstance(value, bool):
            raise bad(f"{key} must be true or false", key)
        return bool(value)


@dataclass(frozen=True)
class Bin(Kind):
    """Raw bytes (msgpack bin): uploaded files travel as bytes, never as paths or URLs."""

    refusal: str = "must be bytes"
    doc: ClassVar[str] = "bin"

    def check(self, key: str, value: Any, strict: bool, limit: float | None) -> bytes:
        if not isinstance(value, (bytes, bytearray)):
            raise bad(f"{key} {self.refusal}", key)
        return bytes(value)


def wire(kind: Kind, default: Any = None, *, aliases: tuple[str, ...] = (), required: bool = False,
         doc_default: str | None = None) -> Any:
    """A message field: its kind, default, other wire names, and (where the default is
    decided elsewhere, e.g. by configuration) what the protocol document says about it."""
    meta = {"kind": kind, "aliases": aliases, "doc_default": doc_default}
    return field(metadata=meta) if required else field(default=default, metadata=meta)


# --- messages -------------------------------------------------------------------------------


@dataclass
class Message(Generic[R]):
    """Base: ``from_wire`` validates a params map, ``to_wire`` gives one back. ``R`` is the
    result class the daemon answers it with (``client.request(msg)`` returns an ``R``)."""

    method: ClassVar[str] = ""

    @classmethod
    def from_wire(cls: type[M], params: Mapping[str, Any], *, strict: bool = False,
                  limits: Mapping[str, float] | None = None) -> M:
        if not isinstance(params, Mapping):
            raise bad("params must be a map")
        values: dict[str, Any] = {}
        for f in fields(cls):
            kind: Kind = f.metadata["kind"]
            limit = (limits or {}).get(f.name)
            names = (f.name, *f.metadata["aliases"])
            found = [kind.check(n, params[n], strict, limit) for n in names if params.get(n) is not None]
            if len(names) > 1:  # "voice" or "speaker": the first one given a value
                found = [v for v in found if v] or []
            if found:
                values[f.name] = found[0]
            elif f.default is MISSING:
                raise bad(f"{f.name} is required", f.name)
        msg = cls(**values)
        msg.validate()
        return msg

    def validate(self) -> None:
        """Checks across fields (after each field passed its own)."""

    def to_wire(self) -> dict[str, Any]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def wire_names(cls) -> dict[str, str]:
        """Every accepted key -> the field it sets."""
        return {n: f.name for f in fields(cls) for n in (f.name, *f.metadata["aliases"])}

    @classmethod
    def kind_of(cls, name: str) -> Kind:
        field_name = cls.wire_names()[name]
        kind: Kind = next(f.metadata["kind"] for f in fields(cls) if f.name == field_name)
        return kind


@dataclass
class Hello(Message["HelloResult"]):
    method: ClassVar[str] = "rpc.hello"
    proto: int | None = wire(Num(0, 2 ** 32, whole=True))
    client: str | None = wire(Str(200))


@dataclass
class Synthesize(Message["SynthesizeResult"]):
    """``tts.synthesize``: the parameters table of docs/protocol.md."""

    method: ClassVar[str] = "tts.synthesize"
    text: str = wire(Str(MAX_TEXT_CHARS), required=True)
    voice: str | None = wire(Str(), aliases=("speaker",), doc_default=DEFAULT_SPEAKER)
    instruct: str | None = wire(Str(2000), aliases=("instructions",))
    model: str | None = wire(Str())
    language: str = wire(Str(), "auto")
    format: str = wire(Str(), "pcm16")
    sample_rate: int = wire(Num(*RATE_RANGE, whole=True), MODEL_RATE)
    speed: float = wire(Num(*SPEED_RANGE), 1.0)
    seed: int | None = wire(Num(0, MAX_SEED, whole=True))
    first_chunk_frames: int | None = wire(Num(1, 50, whole=True),
                                          doc_default=str(CHUNK_PROFILES["default"].first_chunk_frames))
    chunk_frames: int | None = wire(Num(1, 100, whole=True),
                                    doc_default=str(CHUNK_PROFILES["default"].chunk_frames))
    priority: str = wire(Str(choices=PRIORITIES), "normal")
    temperature: float | None = wire(Num(MIN_TEMPERATURE, 5.0))
    top_k: int | None = wire(Num(0, 4096, whole=True))
    top_p: float | None = wire(Num(0.0, 1.0))
    repetition_penalty: float | None = wire(Num(0.5, 5.0))
    max_frames: int | None = wire(Num(1, 8000, whole=True))
    normalize: bool = wire(Bool(), True)
    session: str | None = wire(Str(128))
    ref_audio: bytes | None = wire(Bin("must be the audio file's bytes; URLs and paths are refused"))
    ref_text: str | None = wire(Str(2000))
    text_stream: bool = wire(Bool(), False)
    text_lookahead: int | None = wire(Num(1, 64, whole=True), doc_default="4")

    def validate(self) -> None:
        if not self.text.strip() and not self.text_stream:
            raise bad("text is empty", "text")
        try:
            fmt = canonical_format(self.format)
        except AudioFormatError as e:
            raise bad(str(e), "format") from None
        try:
            check_rate(fmt, self.sample_rate)
        except AudioFormatError as e:
            raise bad(str(e), "sample_rate") from None

    @property
    def sampling(self) -> dict[str, Any]:
        """The engine's sampling and length fields (None: the model's own)."""
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty, "max_frames": self.max_frames}


@dataclass
class Warmup(Message["WarmupResult"]):
    """``tts.warmup``: routed like a synthesize request with the same fields."""

    method: ClassVar[str] = "tts.warmup"
    voice: str | None = wire(Str(), aliases=("speaker",))
    instruct: str | None = wire(Str(2000), aliases=("instructions",))
    model: str | None = wire(Str())
    language: str = wire(Str(), "auto")

    def as_synthesize(self) -> Synthesize:
        return Synthesize(text="warm up", voice=self.voice, instruct=self.instruct, model=self.model,
                          language=self.language)


@dataclass
class VoicesAdd(Message["VoiceInfo"]):
    method: ClassVar[str] = "voices.add"
    name: str = wire(Str(64), required=True)
    audio: bytes = wire(Bin("must be the reference file's bytes (no paths or URLs)"), required=True)
    ref_text: str | None = wire(Str(2000))
    consent: str = wire(Str(500), "")
    replace: bool = wire(Bool(), False)


@dataclass
class VoicesDesign(Message["VoiceInfo"]):
    """``voices.design``: a voice described in words, saved as a clone voice (``design.py``)."""

    method: ClassVar[str] = "voices.design"
    name: str = wire(Str(64), required=True)
    prompt: str = wire(Str(2000), required=True, aliases=("instructions",))
    script_hint: str | None = wire(Str(MAX_SCRIPT_CHARS))
    language: str = wire(Str(), "auto")
    seed: int | None = wire(Num(0, MAX_SEED, whole=True))

    def validate(self) -> None:
        if not self.prompt.strip():
            raise bad("prompt must describe the voice", "prompt")
        if self.script_hint is not None and len(self.script_hint.strip()) < MIN_SCRIPT_CHARS:
            raise bad(f"script_hint must have at least {MIN_SCRIPT_CHARS} characters", "script_hint")


@dataclass
class AudioEncode(Message["EncodeResult"]):
    """``audio.encode``: finished pcm16 audio (24 kHz mono, what the page played) as a whole
    file of ``format``; streamed back as ``tts.chunk`` notifications, then the result."""

    method: ClassVar[str] = "audio.encode"
    audio: bytes = wire(Bin("must be pcm16 bytes"), required=True)
    format: str = wire(Str(), "mp3")
    sample_rate: int = wire(Num(*RATE_RANGE, whole=True), MODEL_RATE)

    def validate(self) -> None:
        if len(self.audio) > MAX_ENCODE_BYTES:
            raise TTSError("payload_too_large", f"audio is larger than {MAX_ENCODE_BYTES} bytes",
                           data={"param": "audio"})
        try:
            check_rate(canonical_format(self.format), self.sample_rate)
        except AudioFormatError as e:
            raise bad(str(e), "format") from None


@dataclass
class VoicesRemove(Message["VoicesRemoveResult"]):
    method: ClassVar[str] = "voices.remove"
    name: str = wire(Str(64), "")


@dataclass
class AdminLoad(Message["AdminLoadResult"]):
    method: ClassVar[str] = "admin.load"
    model: str | None = wire(Str())


@dataclass
class AdminUnload(Message["AdminUnloadResult"]):
    method: ClassVar[str] = "admin.unload"
    model: str | None = wire(Str())
    exit: bool = wire(Bool(), False)


@dataclass
class AdminKeepalive(Message["AdminKeepaliveResult"]):
    """``seconds`` is capped by the daemon's ``max_keepalive`` (a ``limits`` override)."""

    method: ClassVar[str] = "admin.keepalive"
    seconds: float = wire(Num(0, math.inf), 0.0)


@dataclass
class AdminSet(Message["AdminSetResult"]):
    method: ClassVar[str] = "admin.set"
    idle_timeout: float | None = wire(Num(-1, 7 * 86400))
    queue_timeout: float | None = wire(Num(1, 86400))


@dataclass
class AdminShutdown(Message["AdminShutdownResult"]):
    method: ClassVar[str] = "admin.shutdown"
    drain: bool = wire(Bool(), True)


@dataclass
class AdminCacheClear(Message["AdminCacheClearResult"]):
    method: ClassVar[str] = "admin.cache.clear"
    what: str = wire(Str(choices=("prompts", "model")), "prompts")
    model: str = wire(Str(), "")
    confirm: str | None = wire(Str())


@dataclass
class Models(Message["ModelsResult"]):
    method: ClassVar[str] = "tts.models"


@dataclass
class Languages(Message["LanguagesResult"]):
    method: ClassVar[str] = "tts.languages"


@dataclass
class VoicesList(Message["VoicesResult"]):
    method: ClassVar[str] = "voices.list"


@dataclass
class AdminStatus(Message["AdminStatusResult"]):
    method: ClassVar[str] = "admin.status"


@dataclass
class AdminCacheList(Message["AdminCacheListResult"]):
    method: ClassVar[str] = "admin.cache.list"


# --- notifications (daemon -> client while a synthesize request streams; $/cancel back) -----


@dataclass
class Progress:
    """``tts.progress [msgid, {stage: queued|loading|generating, ...}]``."""

    method: ClassVar[str] = N_PROGRESS
    kind: ClassVar[str] = "progress"
    msgid: int
    info: dict[str, Any]

    @property
    def stage(self) -> str | None:
        return self.info.get("stage")

    def to_wire(self) -> list[Any]:
        return [self.msgid, self.info]

    @classmethod
    def from_wire(cls, params: list[Any]) -> Progress | None:
        if len(params) >= 2 and isinstance(params[1], dict):
            return cls(params[0], params[1])
        return None


@dataclass
class Start:
    """``tts.start [msgid, {sample_rate, channels, format, mime, model, segments}]``."""

    method: ClassVar[str] = N_START
    kind: ClassVar[str] = "start"
    msgid: int
    sample_rate: int
    format: str
    mime: str
    model: str = ""
    segments: int = 1
    channels: int = 1

    def to_wire(self) -> list[Any]:
        return [self.msgid, {"sample_rate": self.sample_rate, "channels": self.channels, "format": self.format,
                             "mime": self.mime, "model": self.model, "segments": self.segments}]

    @classmethod
    def from_wire(cls, params: list[Any]) -> Start | None:
        d = params[1] if len(params) >= 2 and isinstance(params[1], dict) else None
        if d is None:
            return None
        return cls(params[0], int(d.get("sample_rate") or MODEL_RATE), str(d.get("format", "")),
                   str(d.get("mime", "")), str(d.get("model", "")), int(d.get("segments") or 1),
                   int(d.get("channels") or 1))


@dataclass
class Chunk:
    """``tts.chunk [msgid, seq, {audio: bin}]``: concatenated in seq order they are one file."""

    method: ClassVar[str] = N_CHUNK
    kind: ClassVar[str] = "chunk"
    msgid: int
    seq: int
    audio: bytes

    def to_wire(self) -> list[Any]:
        return [self.msgid, self.seq, {"audio": self.audio}]

    @classmethod
    def from_wire(cls, params: list[Any]) -> Chunk | None:
        if len(params) < 3 or not isinstance(params[1], int):
            return None
        d = params[2] if isinstance(params[2], dict) else {}
        audio = d.get("audio", b"")
        return cls(params[0], params[1], bytes(audio) if isinstance(audio, (bytes, bytearray)) else b"")


@dataclass
class Caption:
    """``tts.segment [msgid, {index, text, start, end}]``: where a segment sits in the
    delivered audio, in seconds (after speed change and SSML pauses); ``text`` as written."""

    method: ClassVar[str] = N_SEGMENT
    kind: ClassVar[str] = "segment"
    msgid: int
    index: int
    text: str
    start: float
    end: float

    @property
    def span(self) -> dict[str, Any]:
        """The caption as its wire map (what subtitle writers take)."""
        return {"index": self.index, "text": self.text, "start": self.start, "end": self.end}

    def to_wire(self) -> list[Any]:
        return [self.msgid, self.span]

    @classmethod
    def from_wire(cls, params: list[Any]) -> Caption | None:
        d = params[1] if len(params) >= 2 and isinstance(params[1], dict) else None
        try:
            return None if d is None else cls(params[0], int(d["index"]), str(d["text"]),
                                               float(d["start"]), float(d["end"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass
class Cancel:
    """``$/cancel [msgid]`` (client -> daemon): stop that request within a frame."""

    method: ClassVar[str] = N_CANCEL
    msgid: int

    def to_wire(self) -> list[Any]:
        return [self.msgid]

    @classmethod
    def from_wire(cls, params: Any) -> Cancel | None:
        if isinstance(params, list) and params and isinstance(params[0], int):
            return cls(params[0])
        return None


@dataclass
class TextAppend:
    """``$/text [msgid, {text, flush}]`` (client -> daemon): more of a ``text_stream``
    request's text; ``flush: true`` ends it (the text is complete)."""

    method: ClassVar[str] = N_TEXT
    msgid: int
    text: str = ""
    flush: bool = False

    def to_wire(self) -> list[Any]:
        return [self.msgid, {"text": self.text, "flush": self.flush}]

    @classmethod
    def from_wire(cls, params: Any) -> TextAppend | None:
        if not (isinstance(params, list) and len(params) >= 2 and isinstance(params[0], int)
                and isinstance(params[1], dict)):
            return None
        text, flush = params[1].get("text", ""), params[1].get("flush", False)
        if not isinstance(text, str) or not isinstance(flush, bool):
            return None
        return cls(params[0], text, flush)


Notification = Progress | Start | Chunk | Caption
NOTIFICATIONS: dict[str, type[Progress] | type[Start] | type[Chunk] | type[Caption]] = {
    N_PROGRESS: Progress, N_START: Start, N_CHUNK: Chunk, N_SEGMENT: Caption}


# --- results --------------------------------------------------------------------------------


def nested(cls: type[Result], default: Any = MISSING) -> Any:
    """A result field holding one ``cls`` map, or (with a list default) a list of them."""
    meta = {"nested": cls}
    if default is MISSING:
        return field(metadata=meta)
    return field(default_factory=list, metadata=meta) if default == [] else field(default=default, metadata=meta)


def optional(default: Any = None) -> Any:
    """A result field the daemon sends only in some answers: left off the wire when None."""
    return field(default=default, metadata={"omit_none": True})


@dataclass
class Result:
    """Base of results: every field goes on the wire. ``from_wire`` keeps keys this version
    does not know in ``extra`` (a newer daemon may add some) and ``to_wire`` gives them back.
    Results whose wire value is a list (``tts.models``, ``tts.languages``) name the field
    that holds it in ``LIST``."""

    LIST: ClassVar[str] = ""
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)

    @classmethod
    def wire_fields(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "extra"]

    def to_wire(self) -> Any:
        out = dict(self.extra)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "extra" or (v is None and f.metadata.get("omit_none")):
                continue
            if f.metadata.get("nested"):
                v = [x.to_wire() for x in v] if isinstance(v, list) else None if v is None else v.to_wire()
            out[f.name] = v
        return out[self.LIST] if self.LIST else out

    @classmethod
    def from_wire(cls: type[R], obj: Any) -> R:
        """The daemon's answer as this class; TTSError ``protocol_error`` if it is not one."""
        if cls.LIST and isinstance(obj, list):
            obj = {cls.LIST: obj}
        if not isinstance(obj, Mapping):
            raise TTSError("protocol_error", f"{cls.__name__}: expected a map, got {type(obj).__name__}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            if f.name not in obj:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise TTSError("protocol_error", f"{cls.__name__}: the daemon's answer has no {f.name!r}")
                continue
            v, sub = obj[f.name], f.metadata.get("nested")
            if sub is not None and v is not None:
                v = [sub.from_wire(x) for x in v] if isinstance(v, list) else sub.from_wire(v)
            values[f.name] = v
        names = set(cls.wire_fields())
        return cls(**values, extra={k: v for k, v in obj.items() if k not in names})


@dataclass
class SynthesizeResult(Result):
    """The one response that ends a synthesize stream."""

    kind: ClassVar[str] = "result"

    chunks: int
    bytes: int
    samples: int
    duration_s: float
    frames: int
    segments: int
    first_audio_s: float
    total_s: float
    rtf: float | None
    model: str
    format: str
    sample_rate: int
    language: str | None = None
    # mp3: LAME's final Info frame (frame count, end padding). A client that keeps the audio
    # as a file writes it over the file's start, so every decoder gets the exact duration.
    final_header: builtins.bytes | None = optional()  # (bytes: the field above)


@dataclass
class EncodeResult(Result):
    """The response that ends an ``audio.encode`` stream."""

    kind: ClassVar[str] = "result"

    format: str
    mime: str
    sample_rate: int
    bytes: int
    duration_s: float


@dataclass
class HelloResult(Result):
    proto: int
    server: str
    version: str
    capabilities: list[str]
    max_frame: int
    admin: bool
    socket: str


@dataclass
class WarmupResult(Result):
    model: str
    was_loaded: bool
    load_s: float


@dataclass
class VoiceInfo(Result):
    """A saved clone voice (``voices.add``'s answer, ``voices.list``'s ``clones``)."""

    name: str
    ref_text: str = ""
    created: float = 0.0
    duration_s: float | None = None
    consent: str = ""
    added_by_uid: int | None = optional()
    type: str | None = optional()        # how it was made: "prompt" (voices.design); else an audio sample
    prompt: str | None = optional()      # a designed voice's description


@dataclass
class VoicesResult(Result):
    """``voices.list``."""

    speakers: list[str] = field(default_factory=list)
    clones: list[VoiceInfo] = nested(VoiceInfo, [])
    voice_design: bool = False


@dataclass
class VoicesRemoveResult(Result):
    removed: str


@dataclass
class ModelInfo(Result):
    """One configured checkpoint (``tts.models``, ``admin.status``'s ``models``)."""

    name: str
    type: str
    size: str | None = None
    loaded: bool = False
    speakers: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)


@dataclass
class ModelsResult(Result):
    LIST: ClassVar[str] = "models"
    models: list[ModelInfo] = nested(ModelInfo, [])


@dataclass
class LanguagesResult(Result):
    LIST: ClassVar[str] = "languages"
    languages: list[str] = field(default_factory=list)


@dataclass
class AdminStatusResult(Result):
    """``admin.status``: ``loaded`` maps a model name to its engine's own info."""

    state: str
    pid: int | None = None
    version: str = ""
    models: list[ModelInfo] = nested(ModelInfo, [])
    loaded: dict[str, Any] = field(default_factory=dict)
    vram_bytes: int | None = None
    rss_bytes: int = 0
    max_rss_bytes: int = 0
    active_streams: int = 0
    queue_len: int = 0
    connections: int = 0
    served: int = 0
    idle_timeout: float | None = None
    idle_exit_in_s: float | None = None
    uptime_s: float = 0.0
    torch_imported: bool = False
    heavy_imports: list[str] = field(default_factory=list)  # of transformers, qwen_tts, librosa
    sockets: dict[str, Any] = field(default_factory=dict)
    python: str = ""
    upstreams: list[dict[str, Any]] = field(default_factory=list)  # engine=upstream: state, in flight, last error


@dataclass
class AdminLoadResult(Result):
    """``admin.load``: the model's name; its engine's info (device, dtype, ...) is in ``extra``."""

    name: str


@dataclass
class AdminUnloadResult(Result):
    unloaded: list[str] | None = optional()
    exiting: bool | None = optional()


@dataclass
class AdminKeepaliveResult(Result):
    keepalive_s: float
    idle_exit_in_s: float | None = None


@dataclass
class AdminSetResult(Result):
    idle_timeout: float | None = None
    queue_timeout: float | None = None


@dataclass
class AdminShutdownResult(Result):
    stopping: bool = True


@dataclass
class CachedModel(Result):
    name: str
    path: str = ""
    bytes: int = 0
    loaded: bool = False


@dataclass
class AdminCacheListResult(Result):
    models: list[CachedModel] = nested(CachedModel, [])
    prompts: int = 0
    voices: int = 0


@dataclass
class AdminCacheClearResult(Result):
    cleared_prompts: int | None = optional()
    removed: str | None = optional()


# Every RPC method -> the result class its answer is (the client's ``request`` reads it).
RESULTS: dict[str, type[Result]] = {
    "rpc.hello": HelloResult, "tts.synthesize": SynthesizeResult,
    "tts.models": ModelsResult, "tts.languages": LanguagesResult, "tts.warmup": WarmupResult,
    "voices.list": VoicesResult, "voices.add": VoiceInfo, "voices.design": VoiceInfo,
    "voices.remove": VoicesRemoveResult, "audio.encode": EncodeResult,
    "admin.status": AdminStatusResult, "admin.load": AdminLoadResult, "admin.unload": AdminUnloadResult,
    "admin.keepalive": AdminKeepaliveResult, "admin.set": AdminSetResult, "admin.shutdown": AdminShutdownResult,
    "admin.cache.list": AdminCacheListResult, "admin.cache.clear": AdminCacheClearResult,
}


REQUESTS: dict[str, type[Message[Any]]] = {m.method: m for m in (
    Hello, Synthesize, Warmup, AudioEncode, VoicesAdd, VoicesDesign, VoicesRemove, AdminLoad, AdminUnload,
    AdminKeepalive, AdminSet, AdminShutdown, AdminCacheClear, Models, Languages, VoicesList, AdminStatus,
    AdminCacheList)}
