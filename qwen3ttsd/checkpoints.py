"""The checkpoints on this host: the official catalogue, what counts as installed, what a
checkpoint's config.json says (``ModelEntry``), and the notes users must see (no model,
random weights).

One module that the daemon's registry, ``qwen3tts-ctl models`` and the bridge's ``/health``
all read, so they agree on what is visible: a checkpoint is a non-hidden directory with a
``config.json``. Pulls are staged in hidden directories next to their target and renamed
into place once verified, so a half-downloaded model is never visible. Stdlib only (the
bridge imports this).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Short name -> repository (the same id on the Hugging Face Hub and on ModelScope).
OFFICIAL: dict[str, str] = {
    "1.7b-customvoice": "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice",
    "1.7b-base": "Qwen/Qwen3-TTS-12Hz-1.7B-Base",
    "1.7b-voicedesign": "Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign",
    "0.6b-customvoice": "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice",
    "0.6b-base": "Qwen/Qwen3-TTS-12Hz-0.6B-Base",
}
# What to pull for a model type nobody installed yet.
SUGGESTED: dict[str, str] = {"custom_voice": "1.7b-customvoice", "base": "1.7b-base",
                             "voice_design": "1.7b-voicedesign"}
DEFAULT_PULL = SUGGESTED["custom_voice"]

# Written into a pulled checkpoint: where it came from and the verified file hashes.
SOURCE_FILE = ".qwen3ttsd-source.json"
# config.json key that qwen3ttsd.testing.tinymodel sets on its random-weight checkpoints.
RANDOM_WEIGHTS_KEY = "qwen3ttsd_random_weights"
RANDOM_WEIGHTS_NOTE = "random weights: audio is noise"


def pull_hint(model_type: str | None = None) -> str:
    return f"run `qwen3tts-ctl models pull {SUGGESTED.get(model_type or '', DEFAULT_PULL)}`"


NO_MODEL_MESSAGE = f"no model installed: {pull_hint()}"


class UnknownModel(ValueError):
    pass


def resolve(name: str) -> str:
    """Repository id for a short name (``1.7b-customvoice``), an official repository's
    name with or without ``Qwen/``, or any ``owner/name`` repository id."""
    key = name.strip()
    if key.lower() in OFFICIAL:
        return OFFICIAL[key.lower()]
    for repo in OFFICIAL.values():
        if key.lower() in (repo.lower(), repo.split("/", 1)[1].lower()):
            return repo
    if key.count("/") == 1 and all(key.split("/")):
        return key
    raise UnknownModel(f"unknown model {name!r}; official models: {', '.join(OFFICIAL)} "
                       "(or any owner/name repository id)")


def dir_name(repo_id: str) -> str:
    """The checkpoint directory a repository is pulled into (the daemon's model name)."""
    return repo_id.rsplit("/", 1)[-1]


def is_checkpoint(path: Path) -> bool:
    return not path.name.startswith(".") and (path / "config.json").is_file()


def checkpoint_dirs(models_dir: str | Path) -> list[Path]:
    """Installed checkpoints in ``models_dir``: staging and other hidden directories are skipped."""
    root = Path(models_dir)
    if not str(models_dir) or not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if is_checkpoint(p)]


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class ModelEntry:
    """What a checkpoint's ``config.json`` says: the daemon's registry entry, and what
    ``qwen3tts-ctl models`` lists (read here so neither needs the other, nor torch)."""

    name: str
    path: str
    type: str
    size: str
    speakers: list[str]
    languages: list[str]

    @classmethod
    def read(cls, path: Path, name: str | None = None) -> "ModelEntry":
        cfg = json.loads((path / "config.json").read_text())
        talker = cfg.get("talker_config", {})
        langs = ["auto"] + sorted(k for k in talker.get("codec_language_id", {}) if "dialect" not in k)
        return cls(name=name or path.name, path=str(path), type=str(cfg.get("tts_model_type", "")),
                   size=str(cfg.get("tts_model_size", "")),
                   speakers=sorted(talker.get("spk_id", {}) or {}), languages=langs)

    def public(self, loaded: bool) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "size": self.size, "loaded": loaded,
                "speakers": self.speakers, "languages": self.languages}


def has_random_weights(checkpoint: str | Path) -> bool:
    return bool(read_json(Path(checkpoint) / "config.json").get(RANDOM_WEIGHTS_KEY))


def health_warnings(model: str, models_dir: str) -> list[str]:
    """What ``/health`` tells a user about the configured checkpoints. Only what can be seen
    from here: an unreadable or unconfigured ``models_dir`` says nothing."""
    dirs = ([Path(model)] if model and is_checkpoint(Path(model)) else []) + checkpoint_dirs(models_dir)
    warnings = [f"{d.name}: {RANDOM_WEIGHTS_NOTE}; for real voices {pull_hint()}"
                for d in dirs if has_random_weights(d)]
    if not dirs and not model and models_dir and os.access(models_dir, os.R_OK | os.X_OK):
        warnings.append(NO_MODEL_MESSAGE)
    return warnings


def configured_warnings() -> list[str]:
    """``health_warnings`` for the daemon's configuration as this process sees it."""
    from .config import DaemonConfig, load

    try:
        cfg = load(DaemonConfig, "daemon")
    except (ValueError, OSError):
        return []
    return health_warnings(cfg.model, cfg.models_dir)
