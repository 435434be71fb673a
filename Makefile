# botconsole: `make run` starts the whole console locally; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean-data venv browser deploy-tools security secrets-baseline

$(STAMP): requirements/base.txt requirements/dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@$(PY) -m launcher.run

# Two test processes (pytest-xdist), each starting its own PostgreSQL, Valkey, OpenBao and sandbox: most tests
# wait on servers and worker processes, so two at once share the 2 cores well. TEST_WORKERS=0 runs one process.
TEST_WORKERS ?= 2
test: $(STAMP) browser deploy-tools
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

# The browser tests (tests/e2e) drive Debian's Chromium through Playwright; `playwright install`
# is never used. As root the package is installed; otherwise the user is told to install it.
CHROMIUM := /usr/bin/chromium

browser:
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = "0" ]; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
		else \
			echo "$(CHROMIUM) is missing: the browser tests need Debian's chromium package." >&2; \
			echo "Install it with: sudo apt-get install chromium" >&2; \
			exit 1; \
		fi; \
	}

# tests/deploy check the production files with the tools that will run them: Debian's nginx
# (`nginx -t`) and systemd (`systemd-analyze verify`). Installed like chromium above.
NGINX := /usr/sbin/nginx
SYSTEMD_ANALYZE := /usr/bin/systemd-analyze

deploy-tools:
	@missing=""; \
	test -x $(NGINX) || missing="$$missing nginx"; \
	test -x $(SYSTEMD_ANALYZE) || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = "0" ]; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
		else \
			echo "Missing:$$missing: the deployment tests need Debian's nginx and systemd-analyze." >&2; \
			echo "Install them with: sudo apt-get install$$missing" >&2; \
			exit 1; \
		fi; \
	fi

# mypy's Django plugin imports the production settings; placeholders satisfy them
# without reaching any server.
LINT_ENV := SECRET_KEY=lint-only DATABASE_URL=postgres://lint@127.0.0.1:9/lint REDIS_URL=redis://127.0.0.1:9/0 \
	VAULT_ADDR=http://127.0.0.1:9 ALLOWED_HOSTS=localhost

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(LINT_ENV) $(PY) -m mypy .

# Static security checks (CI runs them after lint): bandit over the application code (config in
# pyproject.toml), a secret scan of every file git knows of against the reviewed .secrets.baseline,
# and pip-audit of the installed, pinned requirements against PyPI's vulnerability data.
security: $(STAMP)
	$(PY) -m bandit -c pyproject.toml -q -r apps botconsole launcher manage.py --severity-level medium
	$(PY) .ci/secret-scan
	$(PY) .ci/dependency-audit

# After reviewing what `make security` reported as possible secrets (none real), record them.
secrets-baseline: $(STAMP)
	git ls-files -z --cached --others --exclude-standard | \
		xargs -0 $(VENV)/bin/detect-secrets scan --exclude-files '^\.secrets\.baseline$$' --baseline .secrets.baseline

bench: $(STAMP)
	$(PY) -m pytest tests/perf -m bench -s $(PYTEST_ARGS)

clean-data:
	@printf "This deletes var/: every user, bot, audit entry and the local Vault with its keys. Type 'yes' to continue: "; \
	read answer; if [ "$$answer" = "yes" ]; then rm -rf var; echo "var/ removed"; else echo "nothing removed"; fi

# The database, an OpenBao raft snapshot and the audit checkpoint file, into var/backups/<UTC time>/
# (README: "Backup and restore"). Needs the servers running; BACKUP_ARGS="--dir /elsewhere" to change where.
.PHONY: backup
backup: $(STAMP)
	$(PY) manage.py backup $(BACKUP_ARGS)
