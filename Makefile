# miniecs — run as root on Debian 12. Every target does its own set-up.
PY      := .venv/bin/python
IMAGE   := images/build/tiny.qcow2
HOSTS   ?= 2
PYTEST_ARGS ?=

.PHONY: deps image demo demo-down test test-unit test-pg rig-up rig-down bench clean

deps:
	@sh scripts/install-deps.sh

$(IMAGE): images/build_tiny.py $(shell find images/tiny -type f) | deps
	$(PY) images/build_tiny.py --output $(IMAGE)

image: deps $(IMAGE)

demo: deps image
	$(PY) -m tests.rig.demo up

demo-down:
	$(PY) -m tests.rig.demo down

# pytest-xdist workers for unit + integration (0 = in one process) and for e2e (serial
# by default: TCG guests). --dist loadfile keeps a module and its module-scoped fixtures
# (an e2e rig) on one worker. Schemathesis's generated cases are not collected by xdist
# workers, so the fuzz module always runs in a pass of its own.
# docs/decisions.md "CI: time budget and the two databases".
TEST_WORKERS ?= 2
E2E_WORKERS  ?= 0
XDIST     = -n $(TEST_WORKERS) --dist loadfile
XDIST_E2E = -n $(E2E_WORKERS) --dist loadfile
SERIAL    = tests/integration/test_api_fuzz.py

# unit + integration (the [sqlite]/[postgresql]-parametrised tests on both databases),
# then the end-to-end suite on SQLite; both stages run, the target fails if either did.
test: deps image
	@pg="$$(sh scripts/start-postgres.sh)"; rc=0; \
	MINIECS_TEST_PG_URL="$$pg" MINIECS_TINY_IMAGE=$(IMAGE) \
	$(PY) -m pytest -ra $(XDIST) --ignore=$(SERIAL) $(PYTEST_ARGS) tests/unit tests/integration \
	    || rc=1; \
	MINIECS_TEST_PG_URL="$$pg" $(PY) -m pytest -ra $(PYTEST_ARGS) $(SERIAL) || rc=1; \
	MINIECS_TEST_PG_URL="$$pg" MINIECS_TINY_IMAGE=$(IMAGE) \
	$(PY) -m pytest -ra $(XDIST_E2E) $(PYTEST_ARGS) tests/e2e || rc=1; \
	exit $$rc

# the whole suite with PostgreSQL as the controller's database: unit + integration (the
# [sqlite]/[postgresql]-parametrised tests, which `make test` ran on both, deselected),
# then every end-to-end module
test-pg: deps image
	@pg="$$(sh scripts/start-postgres.sh)"; rc=0; \
	MINIECS_TEST_DB=postgres MINIECS_TEST_PG_URL="$$pg" MINIECS_TINY_IMAGE=$(IMAGE) \
	$(PY) -m pytest -ra $(XDIST) --ignore=$(SERIAL) -k "not sqlite and not postgresql" \
	    $(PYTEST_ARGS) tests/unit tests/integration || rc=1; \
	MINIECS_TEST_DB=postgres MINIECS_TEST_PG_URL="$$pg" $(PY) -m pytest -ra $(PYTEST_ARGS) \
	    $(SERIAL) || rc=1; \
	MINIECS_TEST_DB=postgres MINIECS_TEST_PG_URL="$$pg" MINIECS_TINY_IMAGE=$(IMAGE) \
	$(PY) -m pytest -ra $(XDIST_E2E) $(PYTEST_ARGS) tests/e2e || rc=1; \
	exit $$rc

test-unit: deps
	$(PY) -m pytest -q $(XDIST) -m "not integration and not e2e" tests/unit

rig-up: deps
	$(PY) -m tests.rig up --name dev --hosts $(HOSTS)

rig-down:
	$(PY) -m tests.rig down --name dev

bench: deps image
	$(PY) bench/provision.py
	$(PY) bench/network.py
	$(PY) bench/recovery.py
	$(PY) bench/control_plane.py

clean: demo-down
	rm -rf images/build

# A Debian 12 guest with real cloud-init and OpenSSH (debootstrap; a few minutes, cached).
DEBIAN_IMAGE := images/build/debian-12.qcow2
.PHONY: image-debian

$(DEBIAN_IMAGE): images/build_debian.py images/build_tiny.py | deps
	$(PY) images/build_debian.py --output $(DEBIAN_IMAGE)

image-debian: deps $(DEBIAN_IMAGE)
