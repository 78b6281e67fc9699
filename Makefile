# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test dist-test image-test systemd-test lint typecheck pytest bench clean

$(BIN)/heartbeat: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/heartbeat
	$(BIN)/heartbeat demo

test: $(BIN)/heartbeat
	scripts/system-packages
	$(BIN)/ruff check heartbeat tests bench
	$(BIN)/ruff format --check heartbeat tests bench
	$(BIN)/mypy
	$(BIN)/pytest

# The sdist and the wheel, built and checked; the wheel installed into a fresh venv and run.
dist-test: $(BIN)/heartbeat
	scripts/dist-test $(BIN)/python

# The Containerfile built on a Debian base made with mmdebstrap, then run with podman:
# --version, demo, run against the emulator, --read-only, podman stop (scripts/image-test).
image-test: $(BIN)/heartbeat
	scripts/image-test $(BIN)/python

# The units under a real systemd (PID 1 in a podman container): tests/systemd_container.
# Needs root for podman; installs podman, runc, mmdebstrap where missing.
systemd-test: $(BIN)/heartbeat
	scripts/system-packages image
	$(BIN)/pytest tests/systemd_container

bench: $(BIN)/heartbeat
	scripts/system-packages bench
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/checkin_cpu.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist
