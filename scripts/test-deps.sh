#!/usr/bin/env bash
# Installs whatever the tests need that this machine lacks. Idempotent and quiet when all
# is present. Debian packages, Python packages, cargo tools.
set -euo pipefail

APT_PACKAGES=(mosquitto mosquitto-clients openssl faketime chromium procps coreutils curl
    postgresql-15 util-linux passwd nats-server)
# npm for mqtt.js in the browser test (crates/cli/tests/browser); skip when npm is there
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)
PIP_PACKAGES=(paho-mqtt bce-python-sdk)

missing_apt=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_apt+=("$p")
done
if ((${#missing_apt[@]})); then
    echo "test-deps: installing Debian packages: ${missing_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_apt[@]}" >/dev/null
fi
# mosquitto's package starts a system broker on 1883; tests never use that port, but do not
# leave a daemon of ours running that the user did not ask for. The same for PostgreSQL's
# cluster on 5432, and nats-server's on 4222: the tests start their own servers (crates/series/tests/pg/mod.rs).
if command -v systemctl >/dev/null 2>&1; then
    systemctl stop mosquitto >/dev/null 2>&1 || true
    systemctl stop postgresql >/dev/null 2>&1 || true
    systemctl stop nats-server >/dev/null 2>&1 || true
fi
if command -v pg_ctlcluster >/dev/null 2>&1; then pg_ctlcluster 15 main stop >/dev/null 2>&1 || true; fi
# PostgreSQL refuses to run as root (the tests do): its test servers run as this user.
id midge-pg >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin midge-pg

for p in "${PIP_PACKAGES[@]}"; do
    # import names: paho-mqtt -> paho, bce-python-sdk -> baidubce
    python3 -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('${p//-/_}'.replace('paho_mqtt','paho').replace('bce_python_sdk','baidubce')) else 1)" 2>/dev/null \
        || { echo "test-deps: installing Python package $p"; python3 -m pip install -q "$p"; }
done

# mqtt.js for the headless-Chromium test (crates/cli/tests/security_browser.rs), pinned by
# the committed package-lock.json; node_modules is not committed.
BROWSER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/crates/cli/tests/browser"
if [ -f "$BROWSER_DIR/package-lock.json" ] && [ ! -f "$BROWSER_DIR/node_modules/mqtt/dist/mqtt.min.js" ]; then
    echo "test-deps: npm ci in crates/cli/tests/browser"
    (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --silent)
fi
