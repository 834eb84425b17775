# qwen3ttsd - see README.md. Everything installs into ./.venv.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
MODEL   ?= $(CURDIR)/.models/tiny-custom_voice
RUNDIR  ?= $(CURDIR)/.run
HOST    ?= 127.0.0.1
PORT    ?= 8880
PYTEST_ARGS ?=

.PHONY: install system-deps run tiny-model test test-fast bench bench-engine bench-bridge bench-concurrency verify-units clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python system-deps
	$(BIN)/pip install -q -e '.[daemon,test]'

# ffmpeg is only needed for mp3/aac/opus encoders that libsndfile lacks (pydub drives it).
system-deps:
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null) \
	      || echo "warning: could not install ffmpeg (mp3/aac/opus disabled)"; \
	  else echo "warning: ffmpeg not found (mp3/aac/opus disabled)"; fi; }

# A random-weight model for trying the service without downloading weights.
tiny-model: $(MODEL)/config.json
$(MODEL)/config.json:
	$(BIN)/qwen3tts-ctl make-tiny-model $(MODEL) --variant custom_voice

# Runs the bridge as its own activator (no systemd needed): HTTP on $(HOST):$(PORT),
# the daemon starts on the first request and exits when idle.
run: install tiny-model
	QWEN3TTSD_MODEL=$(MODEL) $(BIN)/qwen3tts-bridge --activate --runtime-dir $(RUNDIR) \
	  --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: bench-engine bench-bridge bench-concurrency

bench-engine: install
	$(BIN)/python bench/bench_engine.py

bench-bridge: install
	$(BIN)/python bench/bench_bridge.py

# The real daemon over its socket, 1..16 concurrent seeded streams, sequential vs batched engine.
bench-concurrency: install
	$(BIN)/python bench/bench_concurrency.py

verify-units:
	$(BIN)/python -m pytest -q tests/test_systemd_units.py

clean:
	rm -rf $(VENV) .models .run .pytest_cache build *.egg-info
