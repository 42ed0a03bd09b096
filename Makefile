# sipedge: top-level make targets. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0
PYTEST_ARGS ?=

.PHONY: run venv test test-deps test-unit test-int test-system bench lint clean compiled

# Start the proxy on the embedded default config (127.0.0.1:5060 UDP+TCP).
run: venv
	$(VENV)/bin/sipedge $(if $(CONFIG),--config $(CONFIG))

venv: $(VENV)/.installed

$(VENV)/.installed: app/pyproject.toml tests/requirements.txt
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  $(APT_GET) update && $(APT_GET) install --no-install-recommends python3 python3-venv; fi
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e 'app[fast,dns,appliance]'
	touch $@

# Everything the tests need: Debian packages, then the Python ones into the venv.
test-deps: venv
	@missing=$$(for p in $$(grep -v '^#' tests/apt-packages.txt); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "apt: installing $$missing"; \
	  $(APT_GET) update && $(APT_GET) install --no-install-recommends $$missing; fi
	$(VPY) -m pip install -q -r tests/requirements.txt
	@# chronyd serves NTP to the QEMU guests: unpacked from Debian's package, not installed (no
	@# clock daemon on the host, no change to its time); its libraries are in tests/apt-packages.txt
	@if [ ! -x .cache/chrony/usr/sbin/chronyd ]; then mkdir -p .cache/chrony/deb && \
	  (cd .cache/chrony/deb && { apt-get -q download chrony || { $(APT_GET) update && apt-get -q download chrony; }; }) && \
	  dpkg-deb -x .cache/chrony/deb/chrony_*.deb .cache/chrony; fi
	@# MicroPython under Node runs the panel tests (app/sipedge/panel is MicroPython code)
	@if command -v npm >/dev/null && [ ! -d .cache/micropython/node_modules/@micropython/micropython-webassembly-pyscript ]; then \
	  npm install --prefix .cache/micropython --no-save --no-audit --no-fund --no-package-lock \
	    @micropython/micropython-webassembly-pyscript@1.27.0; fi

test: test-deps
	$(VPY) -m pytest -c tests/pytest.ini tests $(PYTEST_ARGS)

test-unit: venv
	$(VPY) -m pytest -c tests/pytest.ini tests/unit $(PYTEST_ARGS)

test-int: test-deps
	$(VPY) -m pytest -c tests/pytest.ini tests/integration $(PYTEST_ARGS)

bench: test-deps
	$(VPY) bench/run.py $(BENCH_ARGS)

# Diameter: the DRA against freeDiameter relaying the same load, plus failover latency; and
# the 10-minute soak with random server restarts (bench/README.md). Not part of `make test`.
.PHONY: bench-diameter soak-diameter
bench-diameter: test-deps
	$(VPY) bench/run.py --mode diameter $(BENCH_ARGS)

soak-diameter: test-deps
	$(VPY) bench/run.py --mode diameter --soak-only --soak-s 600 $(BENCH_ARGS)

# The compiled build (app/setup.py) for the venv's Python, cached under out/compiled/<key>;
# use it with PYTHONPATH=<the printed directory>.
compiled: test-deps
	$(VPY) tools/compile/build.py --cached

clean:
	rm -rf $(VENV) out

-include firmware/firmware.mk
