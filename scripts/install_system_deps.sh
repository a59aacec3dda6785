#!/usr/bin/env bash
# Debian packages for monitoring and its tests: prometheus (+promtool) 2.42, prometheus-alertmanager
# (+amtool) 0.25, and chromium for the status-page screenshot test.
# Idempotent: installs only what is missing, and runs `apt-get update` only when it must install.
set -euo pipefail

declare -A PROVIDES=(
  [prometheus]="prometheus promtool"
  [prometheus-alertmanager]="prometheus-alertmanager amtool"
  [chromium]="chromium"
)

missing=()
for pkg in prometheus prometheus-alertmanager chromium; do
  for bin in ${PROVIDES[$pkg]}; do
    if ! command -v "$bin" >/dev/null 2>&1; then
      missing+=("$pkg")
      break
    fi
  done
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "system deps present: prometheus, promtool, prometheus-alertmanager, amtool, chromium"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "installing: ${missing[*]}"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
# Debian's packages enable services where an init system runs; the project starts its own instances
# on loopback, so stop the packaged ones if they came up (ports 9090/9093 stay free).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi
