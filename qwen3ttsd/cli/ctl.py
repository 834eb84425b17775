"""``qwen3tts-ctl``: admin CLI for the daemon.

    qwen3tts-ctl status [--wake]          daemon state (never starts an idle daemon without --wake)
    qwen3tts-ctl voices                   built-in speakers and saved clone voices
    qwen3tts-ctl voices design NAME PROMPT [--script T] [--language L] [--seed N]   a voice from words
    qwen3tts-ctl voice-add NAME FILE [--text T] [--consent C] [--replace]   |   voice-rm NAME
    qwen3tts-ctl load [MODEL] | unload [MODEL] [--exit] | keepalive SECONDS | shutdown
    qwen3tts-ctl cache [--clear prompts]
    qwen3tts-ctl say TEXT [-o out.mp3] [--voice V] [--format F] [--subtitles out.srt|.vtt]
    qwen3tts-ctl bench [-n 5] [--text T]  time-to-first-audio and real-time factor
    qwen3tts-ctl models pull NAME | list | remove NAME | info NAME   checkpoints in models_dir
    qwen3tts-ctl install-service [--root DIR] [--dry-run] [--gpus 0,1]   systemd units for this installation
    qwen3tts-ctl make-tiny-model DIR [--variant ..] [--size ..]   random-weight checkpoint

Torch-free except ``make-tiny-model``; the hub client is imported by ``models pull`` only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import time
from pathlib import Path

from .. import config, formats, probe
from ..client import Client
from ..errors import TTSError
from ..messages import Caption, Chunk, SynthesizeResult
from . import models
from .common import UsageError


def _socket(args: argparse.Namespace, admin: bool) -> str:
    """The daemon's sockets as the daemon's own settings say (--runtime-dir > environment >
    /etc/qwen3ttsd/qwen3ttsd.toml > /run/qwen3ttsd)."""
    try:
        cfg = config.load(config.DaemonConfig, "daemon", {"runtime_dir": args.runtime_dir})
    except (ValueError, OSError) as e:
        raise TTSError("bad_request", f"bad configuration: {e}") from None
    return cfg.admin_socket if admin else cfg.tts_socket


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_status(a) -> int:
    """Answered without connecting unless the daemon runs (or ``--wake``): a connection is what
    starts a socket-activated daemon. Where the state comes from is ``probe``'s, as for the
    bridge's ``/health``: systemd for the installed service, else the processes in /proc
    that hold the admin socket (the bridge as activator holds it too, but is no daemon)."""
    admin = _socket(a, True)
    state = probe.service_state(admin)
    sd = probe.systemd_state()
    if sd is not None and sd.get("LoadState") != "loaded":
        sd = None  # the service is not installed here (make run, containers)
    if not a.wake and state["running"] is not True:
        what = ("not running (socket-activated; starts on the next request)" if state["running"] is False
                else "unknown: this user cannot tell without connecting, which would start it (--wake asks it)")
        _print({"daemon": what, **state, **({"systemd": sd} if sd else {})})
        return 0
    with Client(admin) as c:
        st = c.call("admin.status", {})
    if sd:
        st["systemd"] = sd
    _print(st)
    return 0


def cmd_voices(a) -> int:
    with Client(_socket(a, False)) as c:
        if a.action == "design":
            params = {k: getattr(a, k) for k in ("script_hint", "language", "seed") if getattr(a, k) is not None}
            print(f"designing {a.name!r} (loads the VoiceDesign and Base models; may take a while)...",
                  file=sys.stderr)
            _print(c.design_voice(a.name, a.prompt, **params).to_wire())
        else:
            _print(c.call("voices.list", {}))
    return 0


def voice_consent(given: str) -> str:
    """The record of the speaker's consent: ``--consent``, else asked for at a terminal; a
    clone of someone's voice is never saved without one (the daemon refuses it too)."""
    consent = (given or "").strip()
    if not consent and sys.stdin.isatty():
        consent = input("Record of the speaker's consent to be cloned (who agreed, when): ").strip()
    if not consent:
        raise UsageError("--consent is required: a record that the speaker agreed to be cloned")
    return consent


def cmd_voice_add(a) -> int:
    consent = voice_consent(a.consent)
    with open(a.file, "rb") as f:
        data = f.read()
    with Client(_socket(a, False)) as c:
        _print(c.call("voices.add", {"name": a.name, "audio": data, "ref_text": a.text or "",
                                     "consent": consent, "replace": a.replace}))
    return 0


def cmd_voice_rm(a) -> int:
    with Client(_socket(a, False)) as c:
        _print(c.call("voices.remove", {"name": a.name}))
    return 0


def _admin(a, method: str, params: dict) -> int:
    with Client(_socket(a, True)) as c:
        _print(c.call(method, params))
    return 0


def _check_output_dirs(a) -> None:
    """Before anything is synthesized: a file that could not be written is a usage error."""
    for flag, path in (("-o", a.output), ("--subtitles", a.subtitles)):
        if path and not Path(path).parent.is_dir():
            raise UsageError(f"{flag}: directory {Path(path).parent} does not exist")


def output_format(output: str | None, fmt: str | None) -> str:
    """The format ``say`` asks the daemon for: ``--format``, else the output file's
    extension (``a.mp3`` -> mp3), else wav. A file is never written in a format its name
    contradicts, and an extension that names no format needs ``--format``."""
    try:
        asked = formats.canonical_format(fmt) if fmt else None
    except formats.AudioFormatError as e:
        raise UsageError(f"--format: {e}") from None
    ext = Path(output).suffix[1:] if output else ""
    if not ext:
        return asked or "wav"
    try:
        named = formats.canonical_format(ext)
    except formats.AudioFormatError:
        if asked:
            return asked  # out.bin --format pcm16: the caller said what it is
        raise UsageError(f"-o: cannot tell the audio format from '.{ext}'; name the file "
                         ".wav/.mp3/.flac/.opus/... or pass --format") from None
    if asked and asked != named:
        raise UsageError(f"-o: {Path(output or '').name} is {named} but --format asks for {asked}; "
                         "drop --format or rename the file")
    return named


def cmd_say(a) -> int:
    _check_output_dirs(a)
    fmt = output_format(a.output, a.format)
    params = {"text": a.text, "format": fmt}
    for k in ("voice", "language", "instructions", "model", "speed", "seed", "sample_rate", "max_frames"):
        v = getattr(a, k)
        if v is not None:
            params[k] = v
    out = open(a.output, "wb") if a.output else sys.stdout.buffer  # noqa: SIM115 - closed in finally
    total = 0
    captions: list[dict] = []
    final_header = b""
    try:
        with Client(_socket(a, False)) as c:
            for ev in c.synthesize(**params):
                if isinstance(ev, Chunk):
                    out.write(ev.audio)
                    out.flush()
                    total += len(ev.audio)
                elif isinstance(ev, Caption):
                    captions.append(ev.span)
                elif isinstance(ev, SynthesizeResult):
                    final_header = ev.final_header or b""
                    print(f"{ev.duration_s:.2f} s of audio, first audio after "
                          f"{ev.first_audio_s * 1000:.0f} ms, rtf {ev.rtf}", file=sys.stderr)
    finally:
        if a.output:
            out.close()
    if a.subtitles:
        from . import subtitles

        subtitles.write(a.subtitles, captions)
    if a.output and final_header and total >= len(final_header):
        # mp3: the stream's start replaced with the complete Info frame (exact duration)
        with open(a.output, "r+b") as f:
            f.write(final_header)
    if a.output and fmt == "wav" and total >= 44:
        # A file is seekable: replace the streaming header's unknown sizes with real ones.
        with open(a.output, "r+b") as f:
            f.seek(4)
            f.write(struct.pack("<I", total - 8))
            f.seek(40)
            f.write(struct.pack("<I", total - 44))
    return 0


def cmd_bench(a) -> int:
    ttfa: list[float] = []
    rtf: list[float] = []
    for i in range(a.n):
        t0 = time.monotonic()
        first = None
        with Client(_socket(a, False)) as c:
            for ev in c.synthesize(text=a.text, voice=a.voice, format="pcm16", seed=i):
                if isinstance(ev, Chunk) and first is None and ev.audio:
                    first = time.monotonic() - t0
                elif isinstance(ev, SynthesizeResult):
                    rtf.append(ev.rtf or 0.0)
        if first is None:
            raise TTSError("internal", "the stream ended without audio")
        ttfa.append(first)
        print(f"run {i + 1}: first audio {first * 1000:.0f} ms, rtf {rtf[-1]}", file=sys.stderr)
    print(f"first audio: median {statistics.median(ttfa) * 1000:.0f} ms (cold run 1: {ttfa[0] * 1000:.0f} ms); "
          f"rtf median {statistics.median(rtf):.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qwen3tts-ctl", description="Qwen3-TTS daemon admin CLI")
    ap.add_argument("--runtime-dir", help="directory of tts.sock/admin.sock (default /run/qwen3ttsd)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("status")
    p.add_argument("--wake", action="store_true", help="start the daemon if it is not running")
    p = sub.add_parser("voices", help="list voices, or `voices design NAME PROMPT` to design one")
    vsub = p.add_subparsers(dest="action")
    p = vsub.add_parser("design", help="a voice described in words, saved as a clone voice "
                        "(needs a VoiceDesign and a Base checkpoint)")
    p.add_argument("name")
    p.add_argument("prompt", help="the voice, described: 'a warm, low voice, speaking slowly'")
    p.add_argument("--script", dest="script_hint", help="what the voice says for its reference clip")
    p.add_argument("--language", help="the script's language (default: the script's or prompt's, else English)")
    p.add_argument("--seed", type=int)
    p = sub.add_parser("voice-add")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--text", help="transcript of the reference (enables in-context cloning)")
    p.add_argument("--consent", default="", help="record of the speaker's consent (asked for when not given)")
    p.add_argument("--replace", action="store_true", help="replace a saved voice of the same name")
    p = sub.add_parser("voice-rm")
    p.add_argument("name")
    p = sub.add_parser("load")
    p.add_argument("model", nargs="?")
    p = sub.add_parser("unload")
    p.add_argument("model", nargs="?")
    p.add_argument("--exit", action="store_true", help="exit the daemon (frees all VRAM)")
    p = sub.add_parser("keepalive")
    p.add_argument("seconds", type=float)
    sub.add_parser("shutdown")
    p = sub.add_parser("cache")
    p.add_argument("--clear", choices=["prompts"])
    p = sub.add_parser("say")
    p.add_argument("text")
    p.add_argument("-o", "--output")
    p.add_argument("--voice")
    p.add_argument("--language")
    p.add_argument("--instructions")
    p.add_argument("--model")
    p.add_argument("--format", help="audio format (default: the -o file's extension, else wav)")
    p.add_argument("--speed", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--sample-rate", dest="sample_rate", type=int)
    p.add_argument("--max-frames", dest="max_frames", type=int)
    p.add_argument("--subtitles", help="also write captions: .srt or .vtt")
    p = sub.add_parser("bench")
    p.add_argument("-n", type=int, default=5)
    p.add_argument("--text", default="The quick brown fox jumps over the lazy dog.")
    p.add_argument("--voice", default="ryan")
    models.add_parser(sub)
    p = sub.add_parser("install-service", help="install and enable the systemd units for this installation")
    p.add_argument("--root", help="write the files under this directory (packaging); run nothing")
    p.add_argument("--dry-run", action="store_true", help="print what would be written and run")
    p.add_argument("--bin-dir", help="directory of qwen3ttsd/qwen3tts-bridge for ExecStart "
                   "(default: this installation's)")
    p.add_argument("--gpus", help="one daemon per GPU (e.g. 0,1): template units qwen3ttsd@N plus the "
                   "front daemon as engine=upstream over their sockets (docs/scale-out.md)")
    sub.add_parser("make-tiny-model", add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "make-tiny-model":
        from ..testing.tinymodel import main as tiny_main

        return tiny_main(argv[1:])
    a = ap.parse_args(argv)
    try:
        if a.cmd == "status":
            return cmd_status(a)
        if a.cmd == "voices":
            return cmd_voices(a)
        if a.cmd == "voice-add":
            return cmd_voice_add(a)
        if a.cmd == "voice-rm":
            return cmd_voice_rm(a)
        if a.cmd == "load":
            return _admin(a, "admin.load", {"model": a.model} if a.model else {})
        if a.cmd == "unload":
            return _admin(a, "admin.unload", {"model": a.model, "exit": a.exit})
        if a.cmd == "keepalive":
            return _admin(a, "admin.keepalive", {"seconds": a.seconds})
        if a.cmd == "shutdown":
            return _admin(a, "admin.shutdown", {"drain": True})
        if a.cmd == "cache":
            if a.clear:
                return _admin(a, "admin.cache.clear", {"what": a.clear})
            return _admin(a, "admin.cache.list", {})
        if a.cmd == "say":
            return cmd_say(a)
        if a.cmd == "bench":
            return cmd_bench(a)
        if a.cmd == "models":
            return models.run(a, _socket(a, True))
        if a.cmd == "install-service":
            from .install_service import InstallError, install

            try:
                return install(a.root, a.dry_run, a.bin_dir, gpus=a.gpus)
            except InstallError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
    except TTSError as e:
        print(f"error ({e.code}): {e.message}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or directory the command needed: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
