"""``python -m qwen3ttsd.cli``: the same as ``qwen3tts-ctl``."""

from .ctl import main

raise SystemExit(main())
