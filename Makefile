# marketprism — the two set-up commands are `make demo` and `make test` (see README).
# Everything runs on Debian's own python3 (3.11) and Debian's packages for the runtime
# dependencies, in a venv that sees them (--system-site-packages): the same versions the
# .deb depends on. Only what Debian 12 lacks (orjson, nats-py, picows) and test tools come
# from PyPI.

PYTHON      ?= /usr/bin/python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip --disable-pip-version-check --quiet
export DEBIAN_FRONTEND := noninteractive

APT_RUNTIME := python3 python3-venv python3-dev python3-setuptools python3-wheel gcc libcap-dev \
               python3-cffi python3-zmq python3-psutil python3-prometheus-client python3-prctl \
               python3-sdnotify python3-aiohttp python3-multidict
# The tests boot a real systemd (systemd-nspawn), check exposition with promtool, scrape a
# real node_exporter, and build and lint the .deb (APT_DEB, below).
APT_TEST    = systemd-container prometheus prometheus-node-exporter nats-server $(APT_DEB)
# picows: the collectors' WebSocket client (C framing; supervisor/exchanges/ws.py says why).
# The versions packaging/build-deb.sh bundles into the .deb (exported to it), so that tests
# and benchmarks run what the package ships: picows 1.10+ reads through aiofastnet's own
# transports instead of asyncio's.
ORJSON      := orjson==3.13.0
NATS        := nats-py==2.16.0
PICOWS      := picows==1.9.0
export ORJSON NATS PICOWS
PIP_RUNTIME := $(ORJSON) $(NATS) $(PICOWS)
PIP_TEST    := pytest hypothesis ruff
PIP_BENCH   := faster-fifo
# Building and checking the .deb (`make deb`; tests/test_deb.py needs them too): the
# Build-Depends of packaging/debian/control not already in APT_RUNTIME, and lintian.
APT_DEB     := debhelper dh-python pybuild-plugin-pyproject python3-all-dev python3-docutils \
               python3-pytest python3-hypothesis lintian

.PHONY: all demo test lint bench clean distclean deps deb

all: $(VENV)/.installed

.stamp-apt: Makefile
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $(APT_RUNTIME) $(APT_TEST) >/dev/null
	touch $@

$(VENV)/.created: .stamp-apt
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PIP) install $(PIP_RUNTIME) $(PIP_TEST)
	touch $@

# --no-build-isolation: build against Debian's cffi 1.15, the backend the .deb runs with.
$(VENV)/.installed: $(VENV)/.created setup.py pyproject.toml $(wildcard native/*)
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@

deps: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m supervisor.demo

test: $(VENV)/.installed
	$(PY) -m ruff check shm supervisor tests bench native soak
	$(PY) -m pytest -q

# Every bench/ script, one after the other, into bench/RESULTS.md (QUICK=1: each script's
# --quick, a few minutes in all). py-spy profiles the collector and the analyzer.
bench: $(VENV)/.installed
	$(PIP) install $(PIP_BENCH) py-spy
	$(PY) bench/run_all.py $(if $(QUICK),--quick)

# The whole system under systemd (the test lab, our real units) at high rate, under seeded
# random faults, for SOAK_MINUTES (10) plus a few minutes of boot, settle and drain; not
# part of `make test`. Knobs: SOAK_MINUTES, SOAK_SEED (random if unset, printed), SOAK_RATE
# (2000 msgs/s per connection). Writes build/soak/soak-<stamp>.json and .log; exit 1 when an
# invariant fails. A real run: soak/RESULTS.md.
.PHONY: soak
soak: $(VENV)/.installed
	$(PY) -m soak

lint: $(VENV)/.installed
	$(PY) -m ruff check shm supervisor tests bench native soak

clean:
	rm -rf build dist *.egg-info shm/_native*.so shm/_native.c .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) .stamp-apt

# build/deb/marketprism_<version>_<arch>.deb, built out of tree (packaging/build-deb.sh says why)
# and checked with lintian. The venv's pip fetches the orjson wheel the package bundles.
deb: $(VENV)/.created
	[ "$$(dpkg-query -W -f='$${db:Status-Abbrev}\n' $(APT_DEB) 2>/dev/null | grep -c '^ii')" \
	  = "$(words $(APT_DEB))" ] || \
		apt-get install -y -qq --no-install-recommends $(APT_DEB) >/dev/null
	packaging/build-deb.sh --out build/deb
	lintian --pedantic --fail-on error,warning build/deb/marketprism_*.deb
