#!/usr/bin/env bash
# Debian packages the project needs: OSMesa for offscreen MuJoCo rendering, chromium for the
# dashboard's browser tests (Playwright drives Debian's chromium; it downloads no browser), and
# iptables, with which a worker keeps jobs that opt in to network away from Temporal and the
# controller (without it such jobs are refused). For the docker runtime's tests: docker.io
# (dockerd, which the tests start on a private socket of their own), busybox-static (the
# images they build locally: no registry is reachable from CI) and docker-compose (checks
# docker-compose.yml). iproute2: `network: "host"` runs get a network namespace of their own
# (`ip netns`, veth). prometheus and prometheus-alertmanager: the monitoring pipeline and its
# tests (promtool checks the shipped alert rules).
# Idempotent: installs only what is missing.
set -euo pipefail
packages=(
  libosmesa6 chromium iptables iproute2 docker.io busybox-static docker-compose
  prometheus prometheus-alertmanager
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "warning: no apt-get; install ${missing[*]} yourself (OSMesa for rendering, chromium for browser tests, iptables for opt-in network, docker.io busybox-static docker-compose for the docker tests)" >&2
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
