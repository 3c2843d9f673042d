#!/usr/bin/env bash
# Installs what one use of the project needs on a fresh machine: Debian packages (as root) and
# .venv, from the locked requirements. Idempotent and quick when everything is already there.
#
#   deploy/install.sh stack        `make up`: Redis (and Sentinel with REDIS_TOPOLOGY=sentinel), HAProxy;
#                                  the runtime, the stand-ins, supervisor
#   deploy/install.sh monitoring   `make up MONITORING=1`: the stack and Prometheus
#   deploy/install.sh test         `make test`, `make lint`: the stack, Sentinel, Chromium, promtool; dev packages
#   deploy/install.sh bench        `make bench`: the stack and wrk; dev packages
set -euo pipefail
cd "$(dirname "$0")/.."

use=${1:-stack}
packages=(redis-server haproxy)
requirements=requirements-local.txt
case "$use" in
  stack) ;;
  monitoring) packages+=(prometheus) ;;
  test) packages+=(chromium prometheus); requirements=requirements-dev.txt ;;
  bench) packages+=(wrk); requirements=requirements-dev.txt ;;
  *) echo "usage: deploy/install.sh stack|monitoring|test|bench" >&2; exit 2 ;;
esac
# `make test` runs the read side's suites under Sentinel too; `make up REDIS_TOPOLOGY=sentinel`.
if [ "$use" = test ] || [ "${REDIS_TOPOLOGY:-single}" = sentinel ]; then packages+=(redis-sentinel); fi

# Debian package -> the command it provides.
declare -A commands=([redis-server]=redis-server [redis-sentinel]=redis-sentinel [haproxy]=haproxy [chromium]=chromium [prometheus]=promtool [wrk]=wrk)
missing=()
for package in "${packages[@]}"; do
  command -v "${commands[$package]}" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Each locked set once per change of its file (the dev set includes the local one).
stamp=.venv/.installed-$(basename "$requirements" .txt)
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q --require-hashes -r "$requirements"
  echo "$want" > "$stamp"
fi
