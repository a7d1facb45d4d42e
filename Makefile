# multihv.cloud: set-up, lab and test entry points. Run as root on Debian.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON   ?= python3
VENV     ?= $(CURDIR)/.venv
LAB_DIR  ?= $(CURDIR)/.lab
BUILD    := $(CURDIR)/.build
VERSION  := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL  := $(BUILD)/multihv-cloud-$(VERSION).tar.gz
BIN      := $(VENV)/bin

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)/collections
export MULTIHV_LAB_DIR := $(LAB_DIR)
export ANSIBLE_FORCE_COLOR ?= 0
# The tests' PostgreSQL server (registry shared mode); outside the repo so that
# the postgres user can reach it wherever the clone lives.
PG_DIR   ?= /var/tmp/multihv-cloud-postgres
export MULTIHV_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:55432/multihv

# The lab and the demo are test equipment, not part of the built collection: tests/lab holds their
# playbooks and, in tests/lab/roles, the lab role (found there by ansible-playbook, next to the playbook).
LAB_PLAYBOOK  := $(CURDIR)/tests/lab/lab.yml
DEMO_PLAYBOOK := $(CURDIR)/tests/lab/demo.yml
# Extra role variables for the lab, e.g. LAB_VARS='-e lab_kvm_hosts=3 -e lab_vcsim_port=9989'.
LAB_VARS ?=
LAB := $(BIN)/ansible-playbook $(LAB_PLAYBOOK) -e lab_dir=$(LAB_DIR) $(LAB_VARS)
# `make test` runs the integration tests on WORKERS pytest-xdist workers, each on a lab and a PostgreSQL server of
# its own (tests/conftest.py hands them out), so that a test that disturbs a whole lab never disturbs another's:
# a sequential run keeps about a third of a core busy, most of its time waits on guests, leases and timeouts.
# Lab k (2, 3...) is $(LAB_DIR)k: KVM hosts from 16510 + 10 (k - 1), incoming migrations from 49152 - 400 (k - 1)
# (its 2 hosts and the TLS test's 2 below the previous lab's), vcsim on 8989 + 2 (k - 1) and the next port, bridge
# multihv-lab<k-1>, PostgreSQL on 55431 + k in $(PG_DIR)-k, and no Debian image build (the tests take the first lab's).
WORKERS ?= 3
EXTRA_LABS := $(wordlist 2,$(WORKERS),1 2 3 4 5 6 7 8 9)
lab_port = $(shell expr $(2) + $(3) \* \( $(1) - 1 \))
LAB_K = $(BIN)/ansible-playbook $(LAB_PLAYBOOK) -e lab_dir=$(LAB_DIR)$(1) -e lab_kvm_base_port=$(call lab_port,$(1),16510,10) \
	-e lab_kvm_migration_base_port=$(call lab_port,$(1),49152,-400) -e lab_vcsim_port=$(call lab_port,$(1),8989,2) \
	-e lab_vcsim_control_port=$(call lab_port,$(1),8990,2) -e lab_bridge=multihv-lab$(shell expr $(1) - 1) -e lab_debian_image=false
PG_PORT_K = $(call lab_port,$(1),55432,1)
INTEGRATION_WORKERS = env MULTIHV_LAB_DIRS="$(LAB_DIR) $(EXTRA_LABS:%=$(LAB_DIR)%)" \
	MULTIHV_TEST_POSTGRES_URLS="$(MULTIHV_TEST_POSTGRES_URL) $(foreach k,$(EXTRA_LABS),postgresql://postgres@127.0.0.1:$(call PG_PORT_K,$(k))/multihv)" \
	$(BIN)/pytest -n $(WORKERS) --dist worksteal
# lab-fail and lab-restore act on a running lab. They neither install nor rebuild anything (that would
# replace the installed collection under whoever is using it): the lab role needs ansible-playbook
# only, and the lab's description that lab-up wrote.
LAB_RUNNING := test -x $(BIN)/ansible-playbook -a -f $(LAB_DIR)/lab.json \
	|| { echo "the lab is not up ($(LAB_DIR)/lab.json missing, or no $(BIN)/ansible-playbook): run make lab-up first" >&2; exit 2; }

.PHONY: help deps install demo test unit integration molecule sanity changelog lab-up lab-down lab-fail lab-restore lab-clean lab-guest-image postgres-up postgres-down

help:
	@echo "make demo          install everything, start the local lab, run the main job"
	@echo "make test          run the whole suite (changelog lint, unit on each ansible-core, integration on the lab, Molecule, ansible-test sanity)"
	@echo "make lab-up | lab-down | lab-clean | lab-fail HOST=kvm2 | lab-restore HOST=kvm2"
	@echo "make lab-guest-image  build the lab's Debian 12 guest image (once per recipe) into \$$LAB_DIR/images"

# System packages (what bindep.txt says is missing), then the virtualenv.
deps: $(VENV)/.deps

$(VENV)/.deps: requirements.txt requirements-dev.txt bindep.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'bindep>=2.11,<3'
	missing="$$($(BIN)/bindep -b compile lab test || true)"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# Build the collection and install it where ANSIBLE_COLLECTIONS_PATH points.
install: deps
	$(BIN)/ansible-galaxy collection build --force --output-path $(BUILD) .
	$(BIN)/ansible-galaxy collection install --force -p $(BUILD)/collections $(TARBALL)

# The lab writes the inventory the demo builds its cloud from.
demo: lab-up
	$(BIN)/ansible-playbook -i $(LAB_DIR)/inventory.yml $(DEMO_PLAYBOOK)

lab-up: install
	$(LAB) -e lab_action=up

lab-down:
	if [ -x $(BIN)/ansible-playbook ]; then $(LAB) -e lab_action=down; fi

lab-fail:
	@test -n "$(HOST)" || { echo "usage: make lab-fail HOST=<kvm host or ESXi host>"; exit 2; }
	@$(LAB_RUNNING)
	$(LAB) -e lab_action=fail -e lab_host=$(HOST)

lab-restore:
	@test -n "$(HOST)" || { echo "usage: make lab-restore HOST=<kvm host or ESXi host>"; exit 2; }
	@$(LAB_RUNNING)
	$(LAB) -e lab_action=restore -e lab_host=$(HOST)

# The lab's Debian 12 guest (cloud-init, QEMU guest agent): built once per recipe into $(LAB_DIR)/images, or
# waited for when lab-up's background build is under way. Prints the image's path.
lab-guest-image: deps
	tests/lab/roles/lab/files/debian/build-image.sh $(LAB_DIR)/images

lab-clean: lab-down $(EXTRA_LABS:%=lab%-down)
	rm -rf $(LAB_DIR) $(EXTRA_LABS:%=$(LAB_DIR)%)
	for k in 0 $(EXTRA_LABS:%=%-1); do b=multihv-lab$$(($$k)); ! ip link show dev $$b >/dev/null 2>&1 || ip link delete $$b type bridge; done

# Lab k (2, 3...) of `make test` and its PostgreSQL server (see WORKERS): make lab2-up, make lab2-down...
lab%-up: install
	$(call LAB_K,$*) -e lab_action=up
	MULTIHV_TEST_PG_PORT=$(call PG_PORT_K,$*) tests/postgres.sh start $(PG_DIR)-$*

lab%-down:
	if [ -x $(BIN)/ansible-playbook ]; then $(call LAB_K,$*) -e lab_action=down; fi
	MULTIHV_TEST_PG_PORT=$(call PG_PORT_K,$*) tests/postgres.sh stop $(PG_DIR)-$*

postgres-up: deps
	tests/postgres.sh start $(PG_DIR)

postgres-down:
	tests/postgres.sh stop $(PG_DIR)

# The unit tests through ansible-test units, on each ansible-core version meta/runtime.yml admits (own virtualenvs).
unit: deps
	tests/units.sh

integration: install
	$(BIN)/pytest -q tests/integration

# A Molecule scenario per role (extensions/molecule/<role>): converge, idempotence, verify. Needs the lab
# (and PostgreSQL for the controller's) up.
molecule: install
	$(BIN)/molecule test --all

sanity: deps
	tests/sanity.sh

# antsibull-changelog lint, and a release made on a copy announces everything the collection ships.
changelog: deps
	$(BIN)/python tests/changelog.py

# The whole suite. Starts the labs and PostgreSQL servers, and stops them whatever happens. The unit tests run
# while the labs come up (mostly waiting on their hosts); their output follows the labs', and a failure stops the
# suite there. The integration tests run on WORKERS workers, one per lab (INTEGRATION_WORKERS); sanity, which needs no
# lab, runs beside Molecule (mostly one core each); its output follows the labs' going down.
# Each stage's duration is printed at the end (tests/stage.sh).
export MULTIHV_STAGES := $(BUILD)/stages.txt
STAGE := tests/stage.sh
test: install
	@rm -f $(MULTIHV_STAGES)
	status=0; sanity=; \
	{ $(STAGE) changelog $(BIN)/python tests/changelog.py \
	  && { tests/units.sh > $(BUILD)/units.log 2>&1 & units=$$!; \
	  $(STAGE) "labs up (unit tests alongside)" $(MAKE) --no-print-directory -j -Otarget lab-up $(EXTRA_LABS:%=lab%-up) postgres-up; up=$$?; \
	  waited=$$(date +%s); wait $$units; unit_status=$$?; cat $(BUILD)/units.log; \
	  printf '%-34s %5d s\n' "unit tests (after the labs were up)" $$(($$(date +%s) - waited)) >> $(MULTIHV_STAGES); \
	  [ $$unit_status -eq 0 ] && [ $$up -eq 0 ]; } \
	  && $(STAGE) "integration ($(WORKERS) workers)" $(INTEGRATION_WORKERS) -q --durations=20 tests/integration \
	  && { $(STAGE) "sanity (beside Molecule)" tests/sanity.sh > $(BUILD)/sanity.log 2>&1 & sanity=$$!; } \
	  && $(STAGE) molecule $(BIN)/molecule test --all; } || status=$$?; \
	$(STAGE) "labs down" $(MAKE) --no-print-directory -j -Otarget lab-down $(EXTRA_LABS:%=lab%-down) postgres-down || true; \
	if [ -n "$$sanity" ]; then wait $$sanity; sanity_status=$$?; cat $(BUILD)/sanity.log; [ $$sanity_status -eq 0 ] || status=$$sanity_status; fi; \
	echo "== make test: the stages' durations (make install before them)"; cat $(MULTIHV_STAGES); \
	[ $$status -eq 0 ]
