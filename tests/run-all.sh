#!/usr/bin/env bash
# The full test command: installs what sovkit's tests need on a fresh Debian
# machine (as root: sshd and iproute2 for the network-namespace test hosts,
# Chromium for the report rendering test, docker-registry for the OCI store tests, SoftHSM2 for the PKCS#11 key
# tests, systemd's systemd-analyze for the shipped unit files), installs sovkit with its test
# extras, then runs lint, strict typing and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pair in /usr/sbin/sshd:openssh-server /usr/bin/ssh:openssh-client /usr/sbin/ip:iproute2 \
              /usr/bin/chromium:chromium /usr/bin/unshare:util-linux \
              /usr/bin/docker-registry:docker-registry /usr/bin/softhsm2-util:softhsm2 \
              /usr/bin/systemd-analyze:systemd /usr/lib/postgresql:postgresql; do
    [ -e "${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
ruff check sovkit tests bench inventories
mypy
lint-imports
python3 -m pytest
