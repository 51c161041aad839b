#!/usr/bin/env bash
# Install a one-node SLURM cluster's Debian packages (Slurm 22.05 on bookworm): controller + node daemon,
# munge (authentication), slurmdbd + MariaDB (accounting: without it `sacct` fails and submitit cannot see a
# job killed from outside). Root; Debian's registry reachable. Does nothing when they are installed.
set -euo pipefail
packages=(slurm-wlm slurmdbd munge mariadb-server)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
