# qwen3ttsd - see README.md. Everything installs into ./.venv.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
MODEL   ?=
MODELS_DIR ?= $(CURDIR)/.models
TINY_MODEL := $(MODELS_DIR)/tiny-custom_voice
RUNDIR  ?= $(CURDIR)/.run
# saved voices and the int8 weight cache: the service's directory where this user may write it,
# else one in the checkout (without it every start would quantize the model again)
STATE_DIR ?= $(shell d=/var/lib/qwen3ttsd; if [ -w $$d ] || { [ ! -e $$d ] && [ -w $${d%/*} ]; }; \
               then echo $$d; else echo $(CURDIR)/.state; fi)
HOST    ?= 127.0.0.1
PORT    ?= 8880
PYTEST_ARGS ?=

.PHONY: install system-deps run tiny-model test test-fast lint bench bench-engine bench-bridge bench-text bench-text-stream bench-wyoming bench-concurrency bench-cold-start bench-clone bench-upstream bench-quant soak verify-units clean device-kit device-check

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python system-deps
	$(BIN)/pip install -q -e '.[daemon,test]'

# $(call apt_install,COMMAND,PACKAGE,WHAT IS MISSING WITHOUT IT): as root with apt, install it if absent.
apt_install = command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null) \
	      || echo "warning: could not install $(2) ($(3))"; \
	  else echo "warning: $(1) not found ($(3))"; fi; }

# ffmpeg encodes AAC and decodes reference uploads libsndfile cannot read (m4a, webm: the
# page's microphone recordings); chromium only for the web page's browser tests (Playwright).
system-deps:
	@$(call apt_install,ffmpeg,ffmpeg,AAC output and m4a/webm uploads disabled)
	@$(call apt_install,chromium,chromium,the browser tests of the web page fail)

# A random-weight model for trying the service without downloading weights.
tiny-model: $(TINY_MODEL)/config.json
$(TINY_MODEL)/config.json:
	$(BIN)/qwen3tts-ctl make-tiny-model $(TINY_MODEL) --variant custom_voice

# Runs the bridge as its own activator (no systemd needed): HTTP on $(HOST):$(PORT),
# the daemon starts on the first request and exits when idle.
#   make run MODEL=1.7b-customvoice   pulls it into $(MODELS_DIR) on first use, then serves it
#   make run MODEL=/path/to/checkpoint
#   make run                          the tiny random-weight model: audio is noise
run: install
	@if [ -z "$(MODEL)" ]; then \
	  grep -qs '"qwen3ttsd_random_weights"' "$(TINY_MODEL)/config.json" || rm -rf "$(TINY_MODEL)"; \
	  $(MAKE) --no-print-directory tiny-model || exit 1; model="$(TINY_MODEL)"; \
	  printf '\n*** MODEL not set: serving the tiny RANDOM-WEIGHT model, audio is noise. ***\n*** For real voices: make run MODEL=1.7b-customvoice (or 0.6b-customvoice, 1.7b-base, ...) ***\n\n' >&2; \
	elif [ -f "$(MODEL)/config.json" ]; then model="$(MODEL)"; \
	else model=$$($(BIN)/qwen3tts-ctl models pull "$(MODEL)" --if-missing --models-dir "$(MODELS_DIR)") || exit 1; fi; \
	QWEN3TTSD_MODEL="$$model" QWEN3TTSD_STATE_DIR="$(STATE_DIR)" exec $(BIN)/qwen3tts-bridge --activate --runtime-dir $(RUNDIR) \
	  --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# ruff (pycodestyle, pyflakes, isort, blind except) and mypy (strict on the torch-free core);
# settings in pyproject.toml
lint: $(BIN)/ruff
	$(BIN)/ruff check .
	$(BIN)/mypy

$(BIN)/ruff:
	$(MAKE) --no-print-directory install

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: bench-engine bench-bridge bench-concurrency bench-text bench-wyoming bench-cold-start

bench-engine: install
	$(BIN)/python bench/bench_engine.py

bench-bridge: install
	$(BIN)/python bench/bench_bridge.py

bench-text: install
	$(BIN)/python bench/bench_text.py

bench-text-stream: install
	$(BIN)/python bench/bench_text_stream.py

bench-wyoming: install
	$(BIN)/python bench/bench_wyoming.py

# The real daemon over its socket, 1..16 concurrent seeded streams, sequential vs batched engine.
bench-concurrency: install
	$(BIN)/python bench/bench_concurrency.py

bench-upstream: install
	nice $(BIN)/python bench/bench_upstream.py

# CPU weights side by side on the 0.6B architecture: where a frame's time goes (fp32 / int8 / int4,
# 1 and 2 threads, B=1 and 8), then each mode's predictor logits against fp32's (issue 25).
bench-quant: install
	$(BIN)/python bench/bench_frame_parts.py --size 0.6b --quants none,int8,int4 --threads 1,2 --reps 2
	$(BIN)/python bench/bench_int8_quality.py --size 0.6b

bench-cold-start: install
	$(BIN)/python bench/bench_cold_start.py --configs tiny@qwen_tts,tiny,0.6b+int8@qwen_tts,0.6b+int8

bench-clone: install
	nice $(BIN)/python bench/bench_clone.py

# Mixed, partly hostile load on the bridge + daemon (loopback, tiny model) for 2 minutes;
# then checks the daemon idles out and no temp files are left (issue 21).
soak: install
	nice $(BIN)/python bench/soak.py --minutes 2

# A GPU machine without registry access (issue 24): `make device-kit` here downloads the
# wheels it needs into .device-kit/ (all our deps but torch, for the device's Python 3.12);
# `make device-check` there installs them over the machine's CUDA torch and runs the gpu
# tests and GPU benchmarks (bench/device_check.sh; under 8 minutes on an H100).
device-kit: $(BIN)/python   # the venv of `make install` (its installed deps are the kit's list)
	$(BIN)/python bench/device_kit.py

device-check:
	bench/device_check.sh

verify-units:
	$(BIN)/python -m pytest -q tests/test_systemd_units.py

clean:
	rm -rf $(VENV) .models .run .state .pytest_cache build *.egg-info
