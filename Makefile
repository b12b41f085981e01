# Every target creates or refreshes .venv (and node_modules where the CDK CLI is needed) by itself,
# so a fresh clone needs nothing but `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
EXTRAS ?= cdk,train,dev
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true
export PIP_NO_INPUT := 1

.PHONY: setup browser test demo local synth rehearse lint check bench deploy clean help

help:
	@echo "make demo    run the whole active-learning loop locally (moto as AWS, simulated workforce)"
	@echo "make test    run the test suite (moto-backed; no AWS account, no network)"
	@echo "make local IMAGES=DIR  your own frames on this machine, people labeling in Label Studio"
	@echo "make synth   synthesize the CDK app into cdk.out/ (offline, no credentials)"
	@echo "make rehearse  run the synthesized stack under its own IAM (embedded AWS) before a deploy"
	@echo "make lint    ruff, mypy, bandit, cfn-lint"
	@echo "make check   the quality gate CI runs (.ci/run): make lint, then make test"
	@echo "make bench   the benchmarks (JSON on stdout)"
	@echo "make deploy  cdk deploy --all (needs AWS credentials and a bootstrapped account)"

$(BIN)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) -e '.[$(EXTRAS)]' 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	@touch $@
	$(if $(and $(findstring train,$(EXTRAS)),$(or $(findstring dev,$(EXTRAS)),$(findstring demo,$(EXTRAS)))),@touch $(BIN)/.installed-demo)

# The demo needs the CDK library (its embedded AWS is created from the synthesized stack) but not the CDK
# CLI or the linters: a fresh clone's `make demo` installs less (a later `make test` adds the rest). A full
# install counts for the demo too.
$(BIN)/.installed-demo: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) -e '.[train,demo]' 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(BIN)/.installed node_modules/.installed

# The browser test drives Debian's Chromium with Playwright (Playwright's own browser download is not used).
# Installed with apt when missing (root, or sudo without a password); CHROMIUM= names another binary.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) && $(CHROMIUM) --version

test: setup browser
	ALP_CHROMIUM=$(CHROMIUM) $(BIN)/pytest

demo: $(BIN)/.installed-demo
	$(BIN)/alp demo $(DEMO_ARGS)

# Your own frames: `make local IMAGES=~/my-frames` (what the demo installs; then `.venv/bin/alp local ...`)
local: $(BIN)/.installed-demo
	@test -n "$(IMAGES)" || { echo "make local IMAGES=<a folder of frames>"; exit 2; }
	$(BIN)/alp local up --images "$(IMAGES)" $(LOCAL_ARGS)

synth: setup
	CDK_OUTDIR=cdk.out $(BIN)/python app.py
	@echo "templates in cdk.out/"

# Before the first `cdk deploy`: every step under its own role, IAM enforced (report in rehearsal-run/).
rehearse: setup
	$(BIN)/alp rehearse --work-dir rehearsal-run --json-out rehearsal-run/report.json

lint: setup synth
	$(BIN)/ruff check .
	$(BIN)/mypy app.py alp lambdas inference training stacks
	$(BIN)/bandit -q -c pyproject.toml -r alp lambdas inference training stacks
	$(BIN)/cfn-lint --ignore-checks W3005 -- cdk.out/*.template.json

# The one quality gate: a developer runs `make check`, CI runs .ci/run, which runs `make check`.
check: lint test

bench: $(BIN)/.installed
	$(BIN)/alp bench synth --json
	$(BIN)/alp bench infer --json
	$(BIN)/alp bench train --json --quick
	$(BIN)/alp bench active-learning --json --quick

deploy: setup
	PATH=$$PWD/$(BIN):$$PATH npx cdk deploy --all

clean:
	rm -rf cdk.out build rehearsal-run .pytest_cache .mypy_cache .ruff_cache
