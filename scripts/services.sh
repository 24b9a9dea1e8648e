#!/usr/bin/env bash
# Real services for the test suite (and for trying the team setup on one machine):
#   - a PostgreSQL server (Debian's postgresql) with a scratch database and user;
#   - a single-node SLURM cluster (Debian's slurmctld, slurmd, munge), one partition of this
#     machine's cores.
# Both listen on loopback only, live in a state folder of their own (never the system's
# cluster on 5432 nor /etc/slurm), and are installed with apt-get when missing and run as root.
#
#   scripts/services.sh start    # idempotent: starts what is not running, waits until it answers
#   scripts/services.sh status   # exit 0 when both answer
#   scripts/services.sh stop     # stops only the daemons this script started (its state folder)
#   scripts/services.sh env      # prints the env file's path
#
# The connection facts go to an env file (KEY=value lines) that tests/conftest.py reads:
#   VLM_PARETO_TEST_PG_URL, VLM_PARETO_TEST_SLURM_PARTITION, SLURM_CONF, and
#   VLM_PARETO_TEST_<PG|SLURM>_UNAVAILABLE=<reason> for a service that could not be started.
# It is written to $STATE/services.env and, for the default state folder, copied to
# <repo>/.services.env (git-ignored).
# Environment: VLM_PARETO_SERVICES_DIR (state folder; default /tmp/vlm-pareto-services-<hash
# of the repo path>), VLM_PARETO_SERVICES_NO_INSTALL=1 (never apt-get).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
HASH=$(printf %s "$ROOT" | cksum | cut -d' ' -f1)
DEFAULT_STATE=/tmp/vlm-pareto-services-$HASH
STATE=${VLM_PARETO_SERVICES_DIR:-$DEFAULT_STATE}
ENV_FILE="$STATE/services.env"
# the repo's copy of the env file belongs to the default state folder only
REPO_ENV=/dev/null
[ "$STATE" = "$DEFAULT_STATE" ] && REPO_ENV="$ROOT/.services.env"
PARTITION=vlmp
PG_DB=vlm
PG_USER=vlm
WAIT_S=${VLM_PARETO_SERVICES_WAIT_S:-60}

log() { echo "services: $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }

free_port() {  # first port from $1 on that nothing listens to on 127.0.0.1
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

saved_port() {  # a port chosen once per state folder, reused on every start
  local f="$STATE/$1.port"
  if [ ! -s "$f" ]; then free_port "$2" >"$f"; fi
  cat "$f"
}

APT_UPDATED=0
apt_install() {  # apt_install PKG... ; 0 on success
  if [ "${VLM_PARETO_SERVICES_NO_INSTALL:-0}" = 1 ] || ! is_root || ! command -v apt-get >/dev/null 2>&1; then
    return 1
  fi
  log "installing $* (apt-get)"
  # one `apt-get update` per hour is enough (scripts/test.sh may just have run one for chromium)
  if [ "$APT_UPDATED" = 0 ] && [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
  fi
  APT_UPDATED=1
  # policy-rc.d 101: the packages must not start their system-wide daemons; we start our own.
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$STATE/apt.log" 2>&1
  local rc=$?
  [ "$created" = 1 ] && rm -f "$policy"
  [ $rc = 0 ] || log "apt-get install $* failed (see $STATE/apt.log)"
  return $rc
}

# ---------------------------------------------------------------------------- PostgreSQL
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
PGDATA="$STATE/pg/data"
PGSOCK="$STATE/pg/sock"

as_pg() {  # run a PostgreSQL tool as the cluster's owner (initdb refuses root)
  if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_answers() {
  local bin; bin=$(pg_bin)
  [ -n "$bin" ] && [ -s "$STATE/pg.port" ] && "$bin/pg_isready" -q -h 127.0.0.1 -p "$(cat "$STATE/pg.port")" -t 2
}

pg_start() {
  local bin; bin=$(pg_bin)
  if [ -z "$bin" ]; then
    apt_install postgresql || { PG_REASON="PostgreSQL is not installed (apt-get install postgresql, as root)"; return 1; }
    bin=$(pg_bin)
  fi
  if is_root && ! getent passwd postgres >/dev/null; then
    PG_REASON="no 'postgres' system user to run the server as"; return 1
  fi
  if is_root && ! runuser -u postgres -- test -x "$STATE"; then
    PG_REASON="user postgres cannot reach the state folder $STATE (a parent folder is private); set VLM_PARETO_SERVICES_DIR elsewhere"
    return 1
  fi
  local port; port=$(saved_port pg 55432)
  mkdir -p "$STATE/pg"
  if is_root; then chown postgres: "$STATE/pg"; fi
  chmod 700 "$STATE/pg"
  if pg_answers; then log "PostgreSQL already running on 127.0.0.1:$port"; return 0; fi
  if [ ! -s "$STATE/pg.password" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/pg.password")
  fi
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    as_pg mkdir -p "$PGDATA" "$PGSOCK"
    # local socket: trust (the folder is 700, only its owner reaches it); TCP: passwords
    as_pg "$bin/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$STATE/pg/initdb.log" 2>&1 \
      || { PG_REASON="initdb failed (see $STATE/pg/initdb.log)"; return 1; }
    cat >>"$PGDATA/postgresql.conf" <<EOF
# vlm-pareto test server (scripts/services.sh): loopback only, small
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PGSOCK'
max_connections = 60
shared_buffers = 32MB
EOF
    touch "$STATE/pg/.fresh"
  fi
  as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$STATE/pg/server.log" -w -t "$WAIT_S" start >/dev/null 2>&1 \
    || { PG_REASON="the server did not start (see $STATE/pg/server.log)"; return 1; }
  local i
  for i in $(seq 1 "$WAIT_S"); do pg_answers && break; sleep 1; done
  pg_answers || { PG_REASON="the server does not answer on 127.0.0.1:$port"; return 1; }
  if [ -e "$STATE/pg/.fresh" ]; then
    local pw; pw=$(cat "$STATE/pg.password")
    as_pg "$bin/psql" -q -h "$PGSOCK" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$pw'" -c "CREATE DATABASE $PG_DB OWNER $PG_USER" \
      >"$STATE/pg/setup.log" 2>&1 || { PG_REASON="creating the scratch database failed (see $STATE/pg/setup.log)"; return 1; }
    rm -f "$STATE/pg/.fresh"
  fi
  echo started >"$STATE/pg.started"
  log "PostgreSQL on 127.0.0.1:$port (database $PG_DB)"
}

pg_stop() {
  local bin; bin=$(pg_bin)
  if [ -n "$bin" ] && [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >/dev/null 2>&1 && log "PostgreSQL stopped"
  fi
  rm -f "$STATE/pg.started"
}

# ---------------------------------------------------------------------------- SLURM + munge
MUNGE="$STATE/munge"
SLURM="$STATE/slurm"
export SLURM_CONF="$SLURM/slurm.conf"

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

slurm_answers() {
  [ -f "$SLURM_CONF" ] && timeout 10 sinfo -h -p "$PARTITION" -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)'
}

munge_start() {
  if ! command -v munged >/dev/null 2>&1; then apt_install munge || return 1; fi
  mkdir -p "$MUNGE"; chmod 700 "$MUNGE"
  if pid_alive "$MUNGE/munged.pid"; then return 0; fi
  if [ ! -s "$MUNGE/munge.key" ]; then
    (umask 077; if command -v mungekey >/dev/null 2>&1; then mungekey -c -f -k "$MUNGE/munge.key"; \
      else head -c 1024 /dev/urandom >"$MUNGE/munge.key"; fi) >/dev/null 2>&1
  fi
  munged --force --key-file="$MUNGE/munge.key" --socket="$MUNGE/munge.socket" \
    --pid-file="$MUNGE/munged.pid" --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" \
    >/dev/null 2>&1 || return 1
  local i
  for i in $(seq 1 20); do [ -S "$MUNGE/munge.socket" ] && return 0; sleep 0.25; done
  return 1
}

slurm_conf() {
  local host cpus mem ctld_port d_port user
  host=$(hostname -s)
  # this machine's cores and memory as slurmd sees them (a node larger than the machine is drained)
  cpus=$(slurmd -C 2>/dev/null | sed -n 's/.* CPUs=\([0-9]*\).*/\1/p'); cpus=${cpus:-$(nproc)}
  mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p'); mem=${mem:-1000}
  ctld_port=$(saved_port slurmctld 16817)
  d_port=$(saved_port slurmd $((ctld_port + 1)))
  user=$(id -un)
  mkdir -p "$SLURM/ctld" "$SLURM/d" "$SLURM/log"
  cat >"$SLURM_CONF" <<EOF
# vlm-pareto test cluster (scripts/services.sh): one node, one partition, loopback only
ClusterName=vlmpareto
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE/munge.socket
StateSaveLocation=$SLURM/ctld
SlurmdSpoolDir=$SLURM/d
SlurmctldPidFile=$SLURM/slurmctld.pid
SlurmdPidFile=$SLURM/slurmd.pid
SlurmctldLogFile=$SLURM/log/slurmctld.log
SlurmdLogFile=$SLURM/log/slurmd.log
PlugStackConfig=$SLURM/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=600
SlurmdTimeout=60
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$SLURM/plugstack.conf"
}

# This cluster has no accounting database (slurmdbd needs MySQL/MariaDB), so the real sacct
# answers "accounting storage is disabled". submitit polls `sacct -o JobID,State,NodeList
# --parsable2 -j ID...` to notice a job that ended without writing its result (scancel, OOM,
# node failure); without an answer it waits forever. This stand-in answers exactly that query
# from the controller's own job table (squeue --states=all; finished jobs stay there for
# MinJobAge). It goes first on PATH only through the env file (VLM_PARETO_TEST_SLURM_PATH).
sacct_standin() {
  mkdir -p "$SLURM/bin"
  cat >"$SLURM/bin/sacct" <<'SACCT'
#!/usr/bin/env bash
# sacct stand-in for the vlm-pareto test cluster (see scripts/services.sh): job states from
# the controller (squeue -t all), in sacct's --parsable2 layout for -o JobID,State,NodeList.
ids=(); fields=JobID,State,NodeList
while [ $# -gt 0 ]; do
  case "$1" in
    -j|--jobs) ids+=("$2"); shift 2 ;;
    -j*) ids+=("${1#-j}"); shift ;;
    --jobs=*) ids+=("${1#--jobs=}"); shift ;;
    -o|--format) fields=$2; shift 2 ;;
    --format=*) fields=${1#--format=}; shift ;;
    --parsable2|-P|-n|--noheader|-X|--allocations) shift ;;
    *) echo "sacct stand-in: unsupported argument $1" >&2; exit 1 ;;
  esac
done
[ "$fields" = JobID,State,NodeList ] || { echo "sacct stand-in: only -o JobID,State,NodeList" >&2; exit 1; }
echo "JobID|State|NodeList"
for id in "${ids[@]}"; do
  for j in ${id//,/ }; do squeue -h -t all -j "$j" -o '%i|%T|%N' 2>/dev/null; done
done
exit 0
SACCT
  chmod +x "$SLURM/bin/sacct"
}

slurm_start() {
  if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
    apt_install slurmctld slurmd slurm-client munge \
      || { SLURM_REASON="SLURM is not installed (apt-get install slurmctld slurmd munge, as root)"; return 1; }
  fi
  mkdir -p "$STATE"
  munge_start || { SLURM_REASON="munged did not start (see $MUNGE/munged.log)"; return 1; }
  sacct_standin
  if pid_alive "$SLURM/slurmctld.pid" && pid_alive "$SLURM/slurmd.pid" && slurm_answers; then
    log "SLURM already running (partition $PARTITION)"; return 0
  fi
  slurm_conf
  if ! pid_alive "$SLURM/slurmctld.pid"; then
    slurmctld -f "$SLURM_CONF" -i >"$SLURM/log/slurmctld.out" 2>&1 \
      || { SLURM_REASON="slurmctld did not start (see $SLURM/log/slurmctld.log)"; return 1; }
  fi
  if ! pid_alive "$SLURM/slurmd.pid"; then
    slurmd -f "$SLURM_CONF" -N "$(hostname -s)" >"$SLURM/log/slurmd.out" 2>&1 \
      || { SLURM_REASON="slurmd did not start (see $SLURM/log/slurmd.log)"; return 1; }
  fi
  local i
  for i in $(seq 1 "$WAIT_S"); do slurm_answers && break; sleep 1; done
  if ! slurm_answers; then
    # a node left DOWN/DRAINED by an earlier run of this state folder: resume it once
    scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1
    sleep 2
    slurm_answers || { SLURM_REASON="the cluster does not answer (sinfo; see $SLURM/log/)"; return 1; }
  fi
  echo started >"$STATE/slurm.started"
  log "SLURM partition $PARTITION: $(sinfo -h -p "$PARTITION" -o '%D node, %c cores, %T') (SLURM_CONF=$SLURM_CONF)"
}

slurm_stop() {
  local f
  for f in "$SLURM/slurmd.pid" "$SLURM/slurmctld.pid" "$MUNGE/munged.pid"; do
    if pid_alive "$f"; then
      local pid; pid=$(cat "$f")
      kill "$pid" 2>/dev/null
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
  done
  [ -e "$STATE/slurm.started" ] && log "SLURM stopped"
  rm -f "$STATE/slurm.started"
}

# ---------------------------------------------------------------------------- env file
write_env() {
  local tmp="$ENV_FILE.tmp"
  {
    echo "# written by scripts/services.sh $(date -u +%FT%TZ)"
    echo "VLM_PARETO_SERVICES_DIR=$STATE"
    if [ -z "${PG_REASON:-}" ]; then
      echo "VLM_PARETO_TEST_PG_URL=postgresql+psycopg://$PG_USER:$(cat "$STATE/pg.password")@127.0.0.1:$(cat "$STATE/pg.port")/$PG_DB"
    else
      echo "VLM_PARETO_TEST_PG_UNAVAILABLE=$PG_REASON"
    fi
    if [ -z "${SLURM_REASON:-}" ]; then
      echo "SLURM_CONF=$SLURM_CONF"
      echo "VLM_PARETO_TEST_SLURM_PARTITION=$PARTITION"
      echo "VLM_PARETO_TEST_SLURM_PATH=$SLURM/bin"
    else
      echo "VLM_PARETO_TEST_SLURM_UNAVAILABLE=$SLURM_REASON"
    fi
  } >"$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$ENV_FILE"
  [ "$REPO_ENV" = /dev/null ] || cp "$ENV_FILE" "$REPO_ENV" 2>/dev/null || true
}

cmd=${1:-status}
case "$cmd" in
  start)
    mkdir -p "$STATE"; chmod 755 "$STATE"
    t0=$(date +%s)
    PG_REASON=""; SLURM_REASON=""
    # everything missing in one apt-get run (each service re-checks and says what is missing)
    missing=()
    [ -z "$(pg_bin)" ] && missing+=(postgresql)
    for c in slurmctld slurmd; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
    command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    [ ${#missing[@]} -gt 0 ] && { apt_install "${missing[@]}" || log "apt-get could not install: ${missing[*]}"; }
    pg_start || log "PostgreSQL unavailable: $PG_REASON"
    slurm_start || log "SLURM unavailable: $SLURM_REASON"
    write_env
    log "ready in $(( $(date +%s) - t0 )) s; env file $ENV_FILE"
    ;;
  stop)
    pg_stop
    slurm_stop
    [ "$REPO_ENV" = /dev/null ] || rm -f "$REPO_ENV"
    [ -f "$ENV_FILE" ] && printf 'VLM_PARETO_TEST_PG_UNAVAILABLE=services stopped\nVLM_PARETO_TEST_SLURM_UNAVAILABLE=services stopped\n' >"$ENV_FILE"
    ;;
  status)
    rc=0
    if pg_answers; then echo "postgresql: up (127.0.0.1:$(cat "$STATE/pg.port"))"; else echo "postgresql: down"; rc=1; fi
    if slurm_answers; then echo "slurm: up (partition $PARTITION, SLURM_CONF=$SLURM_CONF)"; else echo "slurm: down"; rc=1; fi
    exit $rc
    ;;
  env)
    echo "$ENV_FILE"
    ;;
  *)
    echo "usage: scripts/services.sh start|stop|status|env" >&2
    exit 2
    ;;
esac
