# iMT privacy platform. Two commands do all set-up on a fresh machine:
#   make run    start the whole platform (Kafka, PostgreSQL, SMTP sink, nginx, services)
#   make test   run every test suite against the real stack, then print the promise table
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
APT_GET     ?= apt-get
UV_VERSION  ?= 0.13.9
export UV_SYSTEM_CERTS := 1
export UV_NO_PROGRESS := 1
export PYTHONPATH := $(CURDIR)
UV  := $(PYTHON_BOOT) -m uv
PIP_INSTALL_UV = $(PYTHON_BOOT) -m pip install --quiet $(1) "uv==$(UV_VERSION)"
PY  := .venv/bin/python
STACK := $(PY) deploy/local/stack.py
# A command run where the stack is: IMT_KAFKA_PORT, IMT_PG_PORT and the like translated
# into the settings the services read, as the service processes get them.
ON_STACK := $(PY) deploy/local/on_stack.py

.PHONY: help setup run stop test test-unit test-integration check format bench promises docs backup restore audit-verify on-stack clean

help:
	@echo "make run       start everything (infrastructure included); Ctrl-C stops it all"
	@echo "make test      all tests against the real stack, then the promise table"
	@echo "make check     ruff (format + lint) and mypy"
	@echo "make bench     benchmarks; results in bench/results/latest.jsonl"
	@echo "make promises  which promise is proved by which test (after make test)"
	@echo "make docs      regenerate what is generated from the code: docs/ (events, topics,"
	@echo "              configuration, OpenAPI, problems), web pages, compose and gateway files"
	@echo "make backup    snapshot every service database; expire old snapshots"
	@echo "make restore   restore a snapshot (SNAPSHOT=id) and replay the deletion ledger"
	@echo "make audit-verify  check the audit log's hash chain, and against Kafka's copy"
	@echo "make on-stack ARGS='-m shared.bus.replay ...'  a runbook command, where the stack is"
	@echo "make stop      stop whatever 'make run' or the tests left running"

# The venv follows the lock; re-synced only when the lock or pyproject changes.
# uv is installed once if missing: where the interpreter is pyenv's or a venv's, as is;
# else for this user; a Debian python3 refuses both (PEP 668, externally managed), so
# last for this user past that guard (~/.local: Debian's own packages stay untouched).
# The last attempt's error is kept: when every one fails, it says what failed (PyPI, a
# proxy, TLS, or no pip at all).
.venv/.synced: uv.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || { \
		err=$$(mktemp); trap 'rm -f "$$err"' EXIT; \
		$(call PIP_INSTALL_UV) 2>/dev/null \
		|| $(call PIP_INSTALL_UV,--user) 2>/dev/null \
		|| $(call PIP_INSTALL_UV,--user --break-system-packages) 2>"$$err" \
		|| { [ "$$(id -u)" = 0 ] && command -v $(APT_GET) >/dev/null \
			&& $(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install \
				-y -qq --no-install-recommends python3-pip >/dev/null \
			&& $(call PIP_INSTALL_UV,--user --break-system-packages) 2>"$$err"; } \
		|| { if $(PYTHON_BOOT) -m pip --version >/dev/null 2>&1; then \
				echo "cannot install uv: '$(PYTHON_BOOT) -m pip install uv==$(UV_VERSION)'" \
					"failed (PyPI, a proxy or TLS?); its error:" >&2; \
				cat "$$err" >&2; \
				echo "fix that, or install uv yourself (https://docs.astral.sh/uv/)" >&2; \
			else \
				echo "cannot install uv: $(PYTHON_BOOT) has no pip; install pip" \
					"(apt-get install python3-pip) or uv (https://docs.astral.sh/uv/)" >&2; \
			fi; exit 1; }; }
	$(UV) sync --frozen --quiet
	@touch $@

setup: .venv/.synced

run: setup
	$(PY) deploy/local/run.py

stop: setup
	$(PY) deploy/local/run.py --stop

# The slow first start (apt, Maven) happens here, outside any test's time limit: the
# Debian packages the run starts (PostgreSQL, nginx, Prometheus, Chromium; Java and
# Maven are the machine's), then the infrastructure the first tests use. The test run reuses what is up (and stops it
# after when IMT_TEST_STOP_STACK=1, as in CI): whatever happened, a start that failed
# half-way or a collection error too, which leave pytest no teardown to run; make then
# fails as pytest did.
test: setup
	@rm -rf .reports
	$(STACK) install
	status=0; ran=0; $(STACK) up --only kafka,postgres,smtp && ran=1 \
		&& $(PY) -m pytest --durations=15 || status=$$?; \
	$(PY) -m tests.support.infra stop-if-asked; \
	if [ $$ran = 1 ] && [ $$status -le 1 ]; then \
		echo; $(PY) tools/promises.py || [ $$status -ne 0 ] || status=1; fi; \
	exit $$status

test-unit: setup
	$(PY) -m pytest tests/unit

test-integration: setup
	$(PY) -m pytest tests/integration tests/e2e

check: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy shared services deploy tools bench tests

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: setup
	$(PY) -m bench

promises: setup
	@$(PY) tools/promises.py

docs: setup
	$(PY) tools/docs.py

# Snapshot every service database (pg_dump) into the backup folder, then drop snapshots
# past retention: deletion requests wait in backups_pending until theirs expire.
backup: setup
	$(ON_STACK) $(PY) -m services.deletion.backups take
	$(ON_STACK) $(PY) -m services.deletion.backups expire

# Restore a snapshot (SNAPSHOT=<id>, default the newest) and replay the deletion ledger.
restore: setup
	$(ON_STACK) $(PY) -m services.deletion.backups restore $(or $(SNAPSHOT),latest)

# The operator audit log's hash chain, recomputed, and checked against the links Kafka
# holds (accounts.audit): exit 1 and the first broken link when either fails.
audit-verify: setup
	$(ON_STACK) $(PY) -m services.accounts.audit_chain

# A runbook's command (docs/operations.md), run with the venv's Python where the stack is:
#   make on-stack ARGS="-m shared.bus.replay deletion.commands.dlq --dry-run"
on-stack: setup
	$(if $(strip $(ARGS)),,$(error usage: make on-stack ARGS="-m <module> [argument...]"))
	$(ON_STACK) $(PY) $(ARGS)

clean: stop
	$(STACK) down --wipe
	rm -rf .reports .venv
