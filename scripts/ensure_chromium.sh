#!/usr/bin/env bash
# Make a headless Chromium available for the report's browser test.
#
# Looks for chromium / chromium-browser / google-chrome on PATH; if none is found and we run
# as root on a machine with apt-get, installs Debian's `chromium` package (no recommends).
# Always exits 0: a missing browser only makes the browser test skip, with a message saying
# how to install it. Set KIZASHI_CHROMIUM_TIMEOUT (seconds, default 600) to bound the install,
# or KIZASHI_SKIP_CHROMIUM_INSTALL=1 to never install.
set -u

find_browser() {
    local name
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if path=$(find_browser); then
    echo "ensure_chromium: found $path"
    exit 0
fi

if [ "${KIZASHI_SKIP_CHROMIUM_INSTALL:-0}" = "1" ]; then
    echo "ensure_chromium: no browser found, install skipped (KIZASHI_SKIP_CHROMIUM_INSTALL=1); the browser test will skip"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "ensure_chromium: no browser found and not root; install it with 'sudo apt-get install -y --no-install-recommends chromium' (the browser test will skip)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: no browser found and no apt-get on this machine; install Chromium by hand (the browser test will skip)"
    exit 0
fi

limit="${KIZASHI_CHROMIUM_TIMEOUT:-600}"
echo "ensure_chromium: installing Debian's chromium (timeout ${limit}s) ..."
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
if ! timeout "$limit" apt-get install -y --no-install-recommends chromium >/tmp/ensure_chromium.log 2>&1; then
    echo "ensure_chromium: install from the current package lists failed, running apt-get update and retrying"
    if ! timeout "$limit" apt-get update >>/tmp/ensure_chromium.log 2>&1 \
        || ! timeout "$limit" apt-get install -y --no-install-recommends chromium >>/tmp/ensure_chromium.log 2>&1; then
        echo "ensure_chromium: could not install chromium (see /tmp/ensure_chromium.log); the browser test will skip"
        tail -n 5 /tmp/ensure_chromium.log | sed 's/^/ensure_chromium:   /'
        exit 0
    fi
fi
end=$(date +%s)
if path=$(find_browser); then
    echo "ensure_chromium: installed $path in $((end - start))s"
else
    echo "ensure_chromium: apt-get succeeded but no chromium on PATH; the browser test will skip"
fi
exit 0
