#!/usr/bin/env bash
# Stop the daemons cluster/start.sh started (by their pid files); packages and state stay installed.
set -uo pipefail
run=/run/stemlab-slurm
for pidfile in "$run/slurmd.pid" "$run/slurmctld.pid" "$run/slurmdbd.pid" /run/mysqld/mysqld.pid /run/munge/munged.pid; do
  [ -s "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
done
echo "SLURM cluster stopped"
