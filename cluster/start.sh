#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (installing its packages first): munged, MariaDB, slurmdbd,
# slurmctld, slurmd, each started directly (no systemd). Root. `cluster/stop.sh` stops them.
#   sudo cluster/start.sh && sinfo && python -m pytest -m slurm
# Settings found by trying (Slurm 22.05): proctrack/linuxproc + task/none (no cgroup plugin in a container);
# cred_expire=5 and 5 s scheduling intervals bring a requeued job back in ~8 s instead of ~37 s;
# EnforcePartLimits=ALL makes an impossible request fail at submission instead of pending forever.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/install.sh"

node="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
run=/run/stemlab-slurm  # pid files and logs
mkdir -p "$run" /var/spool/slurmctld /var/spool/slurmd /etc/slurm

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
  local seconds="$1" what="$2"; shift 2
  for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "cluster/start.sh: $what did not come up in ${seconds} s (logs in $run)" >&2
  exit 1
}

# munge: the key is made once; munged runs as the munge user
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
fi
wait_for 10 munged munge -n

# MariaDB for slurmdbd
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mysqladmin ping >/dev/null 2>&1; then
  # in the background, detached from this script's output (a pipe reading it would wait for the daemon)
  setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid --log-error="$run/mariadb.log" \
    </dev/null >>"$run/mariadb.log" 2>&1 &
fi
wait_for 30 MariaDB mysqladmin ping
mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$run/slurmdbd.pid
LogFile=$run/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 /etc/slurm/slurmdbd.conf

cat > /etc/slurm/slurm.conf <<CONF
ClusterName=stemlab
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
EnforcePartLimits=ALL
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd.pid
SlurmctldLogFile=$run/slurmctld.log
SlurmdLogFile=$run/slurmd.log
NodeName=$node CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

[ -s "$run/slurmdbd.pid" ] && kill -0 "$(cat "$run/slurmdbd.pid")" 2>/dev/null || slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i -Q add cluster stemlab >/dev/null 2>&1 || true  # already there after the first start
[ -s "$run/slurmctld.pid" ] && kill -0 "$(cat "$run/slurmctld.pid")" 2>/dev/null || slurmctld
wait_for 30 slurmctld scontrol ping
[ -s "$run/slurmd.pid" ] && kill -0 "$(cat "$run/slurmd.pid")" 2>/dev/null || slurmd
wait_for 30 "node $node" sh -c "sinfo -h -N -o %T | grep -Eq '^(idle|mixed|allocated)'"
wait_for 30 accounting sacct -n -X
echo "SLURM cluster up: node $node, $cpus CPUs, $mem_mb MB, partition debug (logs in $run)"
