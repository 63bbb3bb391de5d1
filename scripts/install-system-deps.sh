#!/usr/bin/env bash
# Debian packages the project needs: OSMesa for offscreen MuJoCo rendering, chromium for the
# dashboard's browser tests (Playwright drives Debian's chromium; it downloads no browser), and
# iptables, with which a worker keeps jobs that opt in to network away from Temporal and the
# controller (without it such jobs are refused).
# Idempotent: installs only what is missing.
set -euo pipefail
packages=(libosmesa6 chromium iptables prometheus prometheus-alertmanager)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "warning: no apt-get; install ${missing[*]} yourself (OSMesa for rendering, chromium for browser tests, iptables for opt-in network)" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
