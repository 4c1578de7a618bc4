# tcflow: `make help` lists the targets. Everything runs as root.
PY := .venv/bin/python
.DEFAULT_GOAL := help

.PHONY: help setup install uninstall demo test test-unit test-bpf test-netns fuzz bench soak lint image image-proof clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

setup: ## install Debian packages, build .venv, install the tcflow command (idempotent, quick when done)
	@bash scripts/setup.sh

install: ## (re)install the command only: /opt/tcflow, /usr/local/sbin/tcflow, bash completion, man page
	@bash scripts/install.sh

uninstall: ## remove what `make install` put outside this clone (pins stay: `tcflow detach --all` first)
	@bash scripts/install.sh uninstall

demo: setup ## attach to veths in throwaway namespaces, generate traffic, print the counters
	@$(PY) -m tcflow demo

test: setup ## every test tier (unit, bpf, netns, plugin) and examples/ci, as root; leaves the tree as it was
	@$(PY) -m pytest -q -p no:cacheprovider tests examples/ci

test-unit: ## unit tier only; needs no root once `sudo make setup` has built .venv
	@test -x $(PY) || { echo "make test-unit: run 'sudo make setup' first: it builds .venv" >&2; exit 1; }
	@$(PY) -m pytest -q -p no:cacheprovider tests/unit

test-bpf: setup ## BPF_PROG_TEST_RUN tier (root)
	@$(PY) -m pytest -q -p no:cacheprovider tests/bpf

test-netns: setup ## network-namespace tier: veth pairs, real traffic (root)
	@$(PY) -m pytest -q -p no:cacheprovider tests/netns

fuzz: setup ## differential fuzz: 100,000 hostile frames per program vs the reference
	@TCFLOW_FUZZ_COUNT=100000 $(PY) -m pytest -q -p no:cacheprovider tests/bpf -k hostile

bench: setup ## benchmarks (about 25 minutes): bench/results/*.json and report.md
	@$(PY) -m bench.run

soak: setup ## one hour of container churn under serve --containers --flows --pin: bench/results/soak.json
	@$(PY) -m bench.soak --minutes 60

lint: setup ## ruff (package, bench, tests) and mypy (package, bench)
	@$(PY) -m pip install -q ruff mypy && $(PY) -m ruff check tcflow bench tests examples scripts && $(PY) -m mypy tcflow bench

image: ## build the DaemonSet's image tcflow:VERSION with this machine's docker (base made locally; see scripts/image.sh)
	@bash scripts/image.sh

image-proof: setup ## run the image as the DaemonSet does (--cap-drop ALL plus its six, read-only root) beside two containers
	@$(PY) scripts/image_proof.py

clean: ## remove the venv, caches and test artifacts
	rm -rf .venv *.egg-info .pytest_cache test-artifacts
