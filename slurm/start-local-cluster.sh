#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine, with accounting (slurmdbd on a local MariaDB):
# munged, mariadbd, slurmdbd, slurmctld and slurmd, from the config files beside this script.
# Needs root and Debian's packages:
#   apt-get install slurmctld slurmd slurm-client slurmdbd munge mariadb-server
# Idempotent: a daemon already running is left alone. Ends when `sinfo` shows the node idle.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MB, less 1 GB for the system
running() { pgrep -x "$1" >/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "start-local-cluster: $what did not come up in ${limit} s" >&2; exit 1
}

# munge: every Slurm message is signed with this host's key.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key; chown munge: /etc/munge/munge.key; }
# --force: a munged killed before (as at the end of a CI run) leaves its socket behind
running munged || runuser -u munge -- /usr/sbin/munged --force
wait_for 10 munged munge -n

# MariaDB, on 127.0.0.1 only, holding slurmdbd's database.
install -d -o mysql -g mysql -m 0755 /run/mysqld
running mariadbd || (runuser -u mysql -- /usr/sbin/mariadbd --bind-address=127.0.0.1 --skip-name-resolve \
  >/var/log/mariadb-slurm.log 2>&1 &)
wait_for 30 MariaDB mariadb -e 'SELECT 1'
dbpass=slurm-local-test  # reachable from this machine only
mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$dbpass';
            CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# Slurm's configuration and directories.
install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
sed -e "s/@HOST@/$host/g" -e "s/@CPUS@/$cpus/" -e "s/@MEMORY@/$memory/" -e "s/@MEMPERCPU@/$((memory / cpus))/" "$here/slurm.conf.in" >/etc/slurm/slurm.conf
sed -e "s/@DBPASS@/$dbpass/" "$here/slurmdbd.conf.in" >/etc/slurm/slurmdbd.conf
chown slurm: /etc/slurm/slurmdbd.conf && chmod 600 /etc/slurm/slurmdbd.conf

running slurmdbd || /usr/sbin/slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i -n list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local >/dev/null
running slurmctld || /usr/sbin/slurmctld
wait_for 30 slurmctld scontrol ping
running slurmd || /usr/sbin/slurmd
wait_for 30 "the node" sh -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
echo "start-local-cluster: node $host up with $cpus CPUs and ${memory} MB; sacct and sbatch ready"
