# kdump-agent: `make demo` shows a real panic saved by the agent; `make test` runs everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BINARY := dist/kdump-agent
SOURCES := $(shell find agent/kdump_agent dracut-module build -type f -not -path '*/__pycache__/*' -not -path 'build/work/*' -not -path 'build/systemd/*')

# The harness package (tests/harness) and the agent, for the programs pytest does not start.
HARNESS_ENV := PYTHONPATH=$(CURDIR)/agent:$(CURDIR)/tests

.PHONY: all deps deps-build deps-guest deps-test venv binary lint check test test-unit test-e2e \
	demo bench bench-quick clean install deb

all: binary

# Debian packages by what needs them (tools/install-deps.sh): the binary only its build
# tools; a QEMU panic (`make demo`) the guest's; `make test` and `make bench` the rest too.
deps: deps-build deps-guest deps-test
deps-build: .stamp-deps-build
deps-guest: .stamp-deps-guest
deps-test: .stamp-deps-test
.stamp-deps-%: tools/install-deps.sh
	sh tools/install-deps.sh $*
	touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

binary: $(BINARY)
$(BINARY): $(SOURCES) | deps-build venv
	$(VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath dist \
		--workpath build/work build/kdump-agent.spec
	@ls -l $(BINARY)

lint: venv
	$(VENV)/bin/ruff check agent tests bench
	$(VENV)/bin/mypy --strict agent/kdump_agent
	$(VENV)/bin/mypy --strict tests/harness

test: deps venv binary lint
	$(PY) -m pytest tests

# The inner loop: lint and the unit tests, no root, QEMU or network needed (well under a minute).
check: lint
	$(PY) -m pytest -q tests/unit

test-unit: venv
	$(PY) -m pytest tests/unit

test-e2e: deps venv binary
	$(PY) -m pytest tests/e2e

demo: deps-guest venv binary
	$(HARNESS_ENV) $(PY) tests/e2e/demo.py

bench: deps-guest deps-test venv binary $(VENV)/.stamp-bench
	$(HARNESS_ENV) $(PY) bench/run.py

# The memory floors at 1 GiB only (baseline, local, SSH), in minutes: bench/run.py quick.
bench-quick: deps-guest deps-test venv binary $(VENV)/.stamp-bench
	$(HARNESS_ENV) $(PY) bench/run.py quick

$(VENV)/.stamp-bench: requirements-bench.txt | venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

clean:
	rm -rf dist build/work .pytest_cache

# ---- install, deb ----------------------------------------------------------------------
# `make install [DESTDIR=...] [PREFIX=/usr]`: the binary, its dracut module (for a system
# dracut too), the systemd units, the man pages, /etc/kdump.conf unless one exists (an
# admin's config is never overwritten) and /var/crash (0700, like the dump directories)
# unless it exists.
PREFIX ?= /usr
SBINDIR ?= $(PREFIX)/sbin
UNITDIR ?= $(PREFIX)/lib/systemd/system
DRACUTMODDIR ?= $(PREFIX)/lib/dracut/modules.d
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
CRASHDIR ?= /var/crash
UNITS := build/systemd/kdump-agent.service build/systemd/kdump-agent-vmcore.service
DRACUT_FILES := $(wildcard dracut-module/55kdump-agent/*.sh)

install: $(BINARY)
	install -d -m 0755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(DRACUTMODDIR)/55kdump-agent $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SYSCONFDIR)/kdump/pre.d $(DESTDIR)$(SYSCONFDIR)/kdump/post.d \
		$(DESTDIR)$(SYSCONFDIR)/kdump/emergency.d
	install -m 0755 $(BINARY) $(DESTDIR)$(SBINDIR)/kdump-agent
	install -m 0755 $(DRACUT_FILES) $(DESTDIR)$(DRACUTMODDIR)/55kdump-agent/
	for unit in $(UNITS); do \
		sed 's|/usr/sbin/kdump-agent|$(SBINDIR)/kdump-agent|g' $$unit \
			> $(DESTDIR)$(UNITDIR)/$${unit##*/} && chmod 0644 $(DESTDIR)$(UNITDIR)/$${unit##*/} || exit 1; \
	done
	gzip -9nc docs/man/kdump-agent.8 > $(DESTDIR)$(MANDIR)/man8/kdump-agent.8.gz
	gzip -9nc docs/man/kdump.conf.5 > $(DESTDIR)$(MANDIR)/man5/kdump.conf.5.gz
	chmod 0644 $(DESTDIR)$(MANDIR)/man8/kdump-agent.8.gz $(DESTDIR)$(MANDIR)/man5/kdump.conf.5.gz
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/kdump.conf ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/kdump.conf (the shipped default is etc/kdump.conf)"; \
	else \
		echo "install -m 0644 etc/kdump.conf $(DESTDIR)$(SYSCONFDIR)/kdump.conf"; \
		install -m 0644 etc/kdump.conf $(DESTDIR)$(SYSCONFDIR)/kdump.conf; \
	fi
	@if [ ! -e $(DESTDIR)$(CRASHDIR) ] && [ ! -L $(DESTDIR)$(CRASHDIR) ]; then \
		echo "install -d -m 0700 $(DESTDIR)$(CRASHDIR)"; \
		install -d -m 0700 $(DESTDIR)$(CRASHDIR); \
	fi

# `make deb`: dist/kdump-agent_<version>_<arch>.deb from a staging tree made by `make install`.
# /etc/kdump.conf is a conffile (dpkg keeps an admin's edits); /var/crash is left to the
# postinst, so an existing one keeps its mode. DEB_DIR and DEB_STAGING move the output.
# The one version source (pyproject.toml reads it too, as a dynamic version).
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' agent/kdump_agent/__init__.py)
DEB_ARCH = $(shell dpkg --print-architecture)
# The binary is built against this machine's glibc (PyInstaller bundles libpython, not libc).
LIBC_VERSION = $(shell dpkg-query -W -f='$${source:Upstream-Version}' libc6)
DEB_DIR ?= dist
DEB_STAGING ?= build/work/deb
DEB = $(DEB_DIR)/kdump-agent_$(VERSION)_$(DEB_ARCH).deb

deb: $(BINARY)
	@case "$(abspath $(DEB_STAGING))" in ""|/) echo "make deb: DEB_STAGING must name a scratch directory" >&2; exit 1;; esac
	rm -rf $(DEB_STAGING)
	$(MAKE) --no-print-directory -o $(BINARY) install DESTDIR=$(abspath $(DEB_STAGING)) PREFIX=/usr
	cd $(DEB_STAGING) && rmdir -p --ignore-fail-on-non-empty $(patsubst /%,%,$(CRASHDIR))
	chmod -R u+rwX,go+rX,go-w $(DEB_STAGING)
	install -d -m 0755 $(DEB_STAGING)/DEBIAN $(DEB_DIR)
	sed -e 's/@VERSION@/$(VERSION)/' -e 's/@ARCH@/$(DEB_ARCH)/' -e 's/@LIBC_VERSION@/$(LIBC_VERSION)/' \
		-e "s/@INSTALLED_SIZE@/$$(du -sk --apparent-size $(DEB_STAGING) | cut -f1)/" \
		packaging/debian/control > $(DEB_STAGING)/DEBIAN/control
	install -m 0644 packaging/debian/conffiles $(DEB_STAGING)/DEBIAN/conffiles
	install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm \
		$(DEB_STAGING)/DEBIAN/
	dpkg-deb --root-owner-group --build $(DEB_STAGING) $(DEB)
