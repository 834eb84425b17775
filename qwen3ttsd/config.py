"""Daemon and bridge settings. Precedence: command line > environment > TOML > defaults.

Environment variables are ``QWEN3TTSD_<FIELD>`` (e.g. ``QWEN3TTSD_IDLE_TIMEOUT=60``); the
TOML file (``/etc/qwen3ttsd/qwen3ttsd.toml`` or ``QWEN3TTSD_CONFIG``) has ``[daemon]`` and
``[bridge]`` tables with the same field names. Torch-free.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from .formats import CHUNK_PROFILES

DEFAULT_CONFIG_FILE = "/etc/qwen3ttsd/qwen3ttsd.toml"
DEFAULT_STATE_DIR = "/var/lib/qwen3ttsd"  # saved voices (the bridge reads their index there)
WEIGHT_CACHE_DIR = "weight-cache"  # under state_dir: quantized weights kept between starts
DEFAULT_MODELS_DIR = "/var/lib/qwen3ttsd/models"  # the service's; `qwen3tts-ctl models` uses it when unset


@dataclass
class DaemonConfig:
    runtime_dir: str = "/run/qwen3ttsd"
    tts_socket: str = ""                   # default <runtime_dir>/tts.sock
    admin_socket: str = ""                 # default <runtime_dir>/admin.sock
    state_dir: str = DEFAULT_STATE_DIR     # saved voices
    model: str = ""                        # one checkpoint dir
    models_dir: str = ""                   # or a directory of checkpoint dirs
    default_model: str = ""
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "auto"                     # engine=sequential only (the batched engine uses SDPA)
    compile: bool = False                  # engine=sequential only, CUDA: torch.compile the talker
    preload: bool = False                  # load the default model before READY=1
    idle_timeout: float = 300.0            # s with no requests/connections before exit; <0 never
    max_keepalive: float = 3600.0          # cap for admin.keepalive
    conn_idle_timeout: float = 15.0        # close a connection idle this long (no pinning)
    max_connections: int = 1024            # open connections; more get 'busy' at once (fds stay free)
    queue_max: int = 64                    # queued requests beyond this get 'busy' (one
                                           # waiting on its call's previous request is not counted)
    realtime_reserve: int = 16             # of queue_max (at most half): slots only priority realtime (calls) may take
    queue_timeout: float = 120.0           # max wait before a request starts generating
    stall_timeout: float = 30.0            # client not reading audio -> client_stalled
    max_text_chars: int = 20_000
    max_loaded_models: int = 2
    admin_group: str = "qwen3tts-admin"
    first_chunk_frames: int = CHUNK_PROFILES["default"].first_chunk_frames
    chunk_frames: int = CHUNK_PROFILES["default"].chunk_frames
    drain_timeout: float = 25.0            # SIGTERM: let streams finish this long
    log_level: str = "info"
    engine: str = "batched"                # batched (continuous batching) | sequential | upstream
    upstream: str = ""                     # engine=upstream: comma-separated unix:///path/tts.sock and
                                           # http(s)://host:port[/prefix][?cap=N] (docs/scale-out.md)
    upstream_key: str = ""                 # engine=upstream: bearer key for the HTTP upstreams
    max_batch: int = 16                    # streams the batched engine steps together
    quant: str = "auto"                    # batched engine's talker/predictor linears: auto (int8 on
                                           # the CPU, none on a GPU) | int8 | int4 (int8, plus the
                                           # predictor's int4 copies for batches of <= 4 rows where they
                                           # are faster on this CPU; lower quality: engine/int4.py) | none
    codec_quant: str = "none"              # int8: batched engine, CPU: the codec's convs in int8/bf16
                                           # where the audio holds 33 dB SNR vs fp32 (engine/codec_quant.py)
    weights: str = "own"                   # own: the batched engine loads the checkpoint itself (no
                                           # transformers/qwen-tts import, Base clones included)
                                           # | qwen_tts: from_pretrained
    batch_decode: bool = True              # batched engine: one codec call per step for all due
                                           # streams; a seeded request's PCM may then differ by
                                           # 1 LSB with load (codes identical)
    overlap_decode: str = "auto"           # batched engine, CPU: codec decode on its own thread
                                           # while the next frame generates (1 | 0 | auto: from the
                                           # core count, engine/codec_lane.py)
    threads: int = 0                       # torch CPU threads; 0 = one per core
    prewarm: bool = True                   # batched engine, CPU: after a load, build the codec's
                                           # kernels for every batch shape while idle (engine/prewarm.py)
    weight_cache: bool = True              # batched engine, own weights, quant on the CPU: keep the
                                           # quantized weights in <state_dir>/weight-cache between
                                           # starts (engine/weight_cache.py)
    cuda_graphs: bool = True               # batched engine, CUDA: replay each batch bucket's decode
                                           # step from a CUDA graph; 0: the same static step, eagerly
                                           # (engine/cuda_graphs.py)

    def __post_init__(self) -> None:
        if not self.tts_socket:
            self.tts_socket = str(Path(self.runtime_dir) / "tts.sock")
        if not self.admin_socket:
            self.admin_socket = str(Path(self.runtime_dir) / "admin.sock")


@dataclass
class BridgeConfig:
    host: str = "127.0.0.1"
    port: int = 8880
    fd: int = -1                           # serve HTTP on an inherited listening fd
    runtime_dir: str = "/run/qwen3ttsd"
    tts_socket: str = ""
    admin_socket: str = ""
    state_dir: str = DEFAULT_STATE_DIR     # the daemon's: its voice index lists saved voices
    activate: bool = False                 # act as the daemon's activator (containers)
    daemon_command: str = ""               # what --activate spawns (default: qwen3ttsd)
    api_key: str = ""                      # optional bearer token for the HTTP API
    allowed_hosts: str = ""                # extra Host names (comma list; "*" = any), see bridge/guard.py
    allowed_origins: str = ""              # extra browser origins that may POST / open WebSockets
    max_upload_bytes: int = 10 * 1024 * 1024
    max_input_chars: int = 20_000
    first_byte_timeout: float = 600.0      # covers a cold model load
    log_level: str = "info"
    wyoming: str = ""                      # Wyoming TTS server: tcp://HOST:PORT or unix://PATH
    wyoming_zeroconf: str = ""             # announce it over mDNS: "1" or a service name
    # budgets (bridge/listeners.py): an idle or half-open connection must not cost the
    # always-on bridge forever, nor can many of them take all its fds
    max_connections: int = 512             # per listener (HTTP+WebSocket; Wyoming); more are closed at once
    header_timeout: float = 10.0           # HTTP: a request head must be complete within this
    wyoming_idle_timeout: float = 60.0     # Wyoming: closed after this long without a whole event
                                           # (while nothing is being spoken)

    def __post_init__(self) -> None:
        if not self.tts_socket:
            self.tts_socket = str(Path(self.runtime_dir) / "tts.sock")
        if not self.admin_socket:
            self.admin_socket = str(Path(self.runtime_dir) / "admin.sock")


def _coerce(value: str, typ: Any) -> Any:
    t = typ if isinstance(typ, type) else {"bool": bool, "int": int, "float": float, "str": str}.get(str(typ), str)
    if t is bool:
        return value.strip().lower() in ("1", "true", "yes", "on")
    return t(value)


C = TypeVar("C", "DaemonConfig", "BridgeConfig")
_SHARED = ("runtime_dir", "tts_socket", "admin_socket", "state_dir")


def load(cls: type[C], section: str, overrides: Mapping[str, Any] | None = None,
         env: Mapping[str, str] | None = None) -> C:
    """Build ``cls`` from defaults < TOML[section] < env < overrides.

    Daemon fields read ``QWEN3TTSD_<NAME>``; bridge fields read ``QWEN3TTS_BRIDGE_<NAME>``,
    and the socket locations also fall back to the daemon's variables so both agree.
    """
    if env is None:
        env = os.environ
    values: dict[str, Any] = {}
    path = env.get("QWEN3TTSD_CONFIG", DEFAULT_CONFIG_FILE)
    if path and Path(path).is_file():
        with open(path, "rb") as f:
            values.update(tomllib.load(f).get(section, {}))
    names = {f.name: f.type for f in fields(cls)}
    for name, typ in names.items():
        keys = [f"QWEN3TTSD_{name.upper()}"]
        if section == "bridge":
            keys = [f"QWEN3TTS_BRIDGE_{name.upper()}"] + (keys if name in _SHARED else [])
        for key in keys:
            if key in env:
                values[name] = _coerce(env[key], typ)
                break
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = v
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"unknown {section} settings: {sorted(unknown)}")
    return cls(**values)


__all__ = ["DaemonConfig", "BridgeConfig", "load"]
