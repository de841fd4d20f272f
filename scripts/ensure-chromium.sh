#!/usr/bin/env bash
# Makes sure Debian's `chromium` and `chromium-driver` are installed, for the dashboard's
# browser test (api/tests/dashboard/browser.rs). Installs them with apt-get when missing;
# when that is impossible it exits non-zero saying why, and the test then fails rather than
# being skipped.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: chromium/chromedriver are missing and there is no apt-get;" \
        "install Chromium and its chromedriver, or set CHROMIUM and CHROMEDRIVER" >&2
    exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "ensure-chromium: not root and no sudo: cannot apt-get install chromium chromium-driver" >&2
        exit 1
    fi
    sudo=(sudo)
fi
echo "ensure-chromium: apt-get install chromium chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
command -v chromium >/dev/null && command -v chromedriver >/dev/null || {
    echo "ensure-chromium: apt-get finished but chromium or chromedriver is still not on PATH" >&2
    exit 1
}
