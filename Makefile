# pymate-relay: `make run` serves on 127.0.0.1:2222 with keys in ./keys; `make test` runs the gates
# (make lint) and the tests.
# The venv is made by the newest of python3.13, python3.12, python3.11 that runs (scripts/find-python);
# choose with e.g. `make install PYTHON=python3.11 VENV=.venv-311`. An existing venv keeps its Python.
PYTHON ?=
VENV   ?= .venv
BIN    := $(VENV)/bin
KEYS   ?= keys
HOST   ?= 127.0.0.1
PORT   ?= 2222
# Every package of the dependency tree, pinned with the hashes of all its files (make lock).
LOCK   := requirements.lock
# A throwaway venv for the lock tool, never the project's.
LOCK_TOOLS := build/lock-tools
UV_VERSION := 0.13.8
BENCHES := $(sort $(wildcard bench/*.py))

.PHONY: install run lint test bench lock clean install-system
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK) scripts/install-system-packages scripts/find-python package.json package-lock.json
	./scripts/install-system-packages
	test -x $(BIN)/python || { py="$$(scripts/find-python $(PYTHON))" && "$$py" -m venv $(VENV); }
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	# xterm.js for the web viewer's page, exactly as package-lock.json pins it (no install scripts)
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(BIN)/pymate-relay keygen -k $(KEYS) -h $(HOST) -p $(PORT)
	$(BIN)/pymate-relay -k $(KEYS) -b $(HOST) -p $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest -q

bench: install
	set -e; for b in $(BENCHES); do echo "== $$b"; $(BIN)/python $$b; done

# Regenerates $(LOCK) from pyproject.toml (dependencies, the test and bench extras) and the build backend,
# resolved once for every supported Python (3.11 up) and platform, with every file's hash.
lock:
	test -x $(LOCK_TOOLS)/bin/uv || { py="$$(scripts/find-python)" && "$$py" -m venv $(LOCK_TOOLS) \
	  && $(LOCK_TOOLS)/bin/pip install -q uv==$(UV_VERSION); }
	printf 'setuptools>=68\n' | $(LOCK_TOOLS)/bin/uv pip compile --quiet --universal --python-version 3.11 \
	  --generate-hashes --extra test --extra bench --custom-compile-command 'make lock' -o $(LOCK).tmp pyproject.toml -
	{ echo '# Regenerate with `make lock` (uv $(UV_VERSION) pip compile --universal --generate-hashes, in $(LOCK_TOOLS)).'; \
	  echo '# Every file of every pinned release is hashed: CPython 3.11-3.13 wheels (msgpack, mypy, cffi per'; \
	  echo '# version; cryptography abi3) and sdists. `make install` installs it with pip --require-hashes.'; \
	  cat $(LOCK).tmp; } > $(LOCK)
	rm -f $(LOCK).tmp

# The relay as a system service (as root; idempotent): a venv built from $(LOCK) at $(PREFIX), the
# system user, the units in $(UNITDIR). Then: systemctl enable --now pymate-relay.socket pymate-relay.
PREFIX  ?= /opt/pymate-relay
UNITDIR ?= /etc/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
UNITS   := pymate-relay.service pymate-relay.socket pymate-relay-keygen.service
install-system:
	./scripts/install-system-packages
	test -x $(PREFIX)/bin/python || { py="$$(scripts/find-python $(PYTHON))" && "$$py" -m venv $(PREFIX); }
	$(PREFIX)/bin/pip install -q --require-hashes -r $(LOCK)
	$(PREFIX)/bin/pip install -q --no-deps --no-build-isolation --force-reinstall .
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error  # xterm.js, as package-lock.json pins it
	install -d -m 0755 $(PREFIX)/share/pymate-relay && cp -r node_modules $(PREFIX)/share/pymate-relay/
	install -m 0644 README.md $(PREFIX)/README.md
	install -D -m 0644 systemd/pymate-relay.sysusers $(SYSUSERSDIR)/pymate-relay.conf
	if command -v systemd-sysusers >/dev/null; then systemd-sysusers $(SYSUSERSDIR)/pymate-relay.conf; \
	else id -u pymate-relay >/dev/null 2>&1 || useradd --system --home-dir /var/lib/pymate-relay \
	  --no-create-home --shell /usr/sbin/nologin --user-group pymate-relay; fi
	install -d -m 0755 $(UNITDIR)
	for u in $(UNITS); do install -m 0644 systemd/$$u $(UNITDIR)/$$u; done
	if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

clean:
	rm -rf $(VENV) build *.egg-info
