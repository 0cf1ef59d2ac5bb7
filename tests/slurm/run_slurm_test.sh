#!/usr/bin/env bash
# The real SLURM test (README, "Running on a SLURM cluster"; `make slurm-test`).
#
# 1. Installs slurm-wlm and munge from the distribution with apt-get when they are missing.
# 2. Starts a private single-node cluster on localhost: munged, slurmctld and slurmd, with a fake
#    GPU, two partitions (cpu, gpu), its own ports and munge socket, and every state, log and
#    pid file under a temporary folder; apart from the packages, nothing system-wide is used.
# 3. Runs the tiny demo pipeline (tiny_config.yaml) through the SLURM executor with the real
#    profile, profiles/slurm, plus the timing overlay profile/, in a temporary copy of the workflow.
# 4. Checks SLURM's own records of the jobs (`scontrol show job`) and the plugin's sbatch calls
#    (check_runs.py jobs): every job completed; the GPU rules' jobs got a GPU in the gpu
#    partition, every other job none, in the cpu partition; memory and time limit are the
#    rules' (as Snakemake listed each job), CPUs per GPU the profile's; the profile's group jobs
#    ran.
# 5. Runs a few hundred trivial jobs (benchmarks/bench_scheduler.py: the Snakefile's hooks,
#    `make demo`'s flags; in grouped chains, one SLURM job per chain) through the same profiles
#    and checks that the Snakemake process stayed bounded (check_runs.py master: few live
#    threads, little CPU per job, a prompt exit; defaceaudit.workflow.scheduler_patch).
# 6. Runs the same pipeline locally (--cores 2) in a second copy and compares the outputs
#    (check_runs.py compare: byte-identical, or numerically equal; sidecars but for timings).
# 7. Stops only the daemons it started (by the pids it recorded), on any exit.
#
# Skips with exit 0 when not root, or when SLURM or munge is missing and apt-get too. Needs the
# repository's .venv (`make venv`) and, once per machine, the package index (the demo fetches
# its real heads). SLURM_TEST_TIMEOUT (seconds, default 2400) bounds each pipeline run;
# SLURM_TEST_KEEP=1 keeps the temporary folder (it is always kept on failure);
# SLURM_TEST_SCHEDULER_JOBS (default 300, a multiple of 15; 0 skips step 5) sets the trivial jobs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=$repo/.venv/bin
run_timeout=${SLURM_TEST_TIMEOUT:-2400}
workflow_files=(Snakefile rules workflow_scripts envs config.yaml)
gpu_rules=(train_stage1 train_stage2 sample_refaced)
started=$(date +%s)

say() { printf '[slurm-test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
skip() {
    say "SKIPPED: $*"
    exit 0
}

if [ "$(id -u)" -ne 0 ]; then
    skip "needs root (it starts munged, slurmctld and slurmd); run it as root or in CI"
fi
if [ ! -x "$bin/snakemake" ]; then
    echo "no $bin/snakemake: run 'make venv' first" >&2
    exit 1
fi

# --- 1. packages -------------------------------------------------------------------------------
missing=()
for tool in slurmctld slurmd sbatch munged; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ] && ! command -v apt-get >/dev/null; then
    skip "needs apt-get to install slurm-wlm and munge (Debian or Ubuntu); missing: ${missing[*]}"
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing slurm-wlm and munge with apt-get (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt_install=(apt-get install -y -q --no-install-recommends slurm-wlm munge)
    if ! "${apt_install[@]}" >/dev/null; then
        apt-get update -q >/dev/null
        "${apt_install[@]}" >/dev/null
    fi
fi

# --- 2. a private cluster ----------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/defaceaudit-slurm.XXXXXX")
chmod 0755 "$tmp"
etc=$tmp/etc
mkdir -p "$etc" "$tmp/munge" "$tmp/state" "$tmp/spool" "$tmp/log"
pids=()  # daemons started here, in start order
names=()

cleanup() {
    local rc=$?
    set +e
    if [ "$rc" -ne 0 ]; then
        say "FAILED (exit $rc); logs follow"
        for log in "$tmp"/log/*.log; do
            [ -s "$log" ] || continue
            echo "----- last lines of $log"
            tail -n 30 "$log"
        done
        for log in "$tmp"/*.snakemake.log; do
            [ -s "$log" ] || continue
            echo "----- errors and last lines of $log (without the long job command lines)"
            grep -A 8 '^Error in rule' "$log" | grep -v 'base64//' | head -n 60
            grep -v 'base64//' "$log" | tail -n 15
        done
        # the SLURM logs of failed jobs (each job's own Snakemake output)
        grep -l -s 'Error in rule' -r "$tmp"/*/.snakemake/slurm_logs "$tmp"/*/*/.snakemake/slurm_logs |
            head -n 5 | while read -r log; do
            echo "----- $log"
            grep -v 'base64//' "$log" | tail -n 25
        done
    fi
    if [ -n "${pipeline:-}" ] && kill -0 "$pipeline" 2>/dev/null; then
        # Interrupted: timeout passes TERM on to Snakemake, which cancels its jobs and writes
        # the partial tables (onerror); KILL both after 90 s.
        kill "$pipeline" 2>/dev/null
        for _ in $(seq 1 90); do
            kill -0 "$pipeline" 2>/dev/null || break
            sleep 1
        done
        pkill -KILL -P "$pipeline" 2>/dev/null
        kill -KILL "$pipeline" 2>/dev/null
    fi
    if [ "${SLURM_CONF:-}" = "$etc/slurm.conf" ] && scontrol ping >/dev/null 2>&1; then
        # Jobs left by a failed or killed run, on this test's cluster only (SLURM_CONF).
        squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null
        sleep 2
    fi
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        stop_daemon "${pids[i]}" "${names[i]}"
    done
    if [ "$rc" -ne 0 ] || [ "${SLURM_TEST_KEEP:-0}" = 1 ]; then
        say "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_daemon() {  # pid name: TERM, then KILL after 10 s; only if the pid is still that daemon
    local pid=$1 name=$2 waited
    [ -r "/proc/$pid/cmdline" ] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$name" || return 0
    kill "$pid" 2>/dev/null
    for waited in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name ($pid) ignored TERM after ${waited}x0.5 s; killing it"
        kill -9 "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

start_daemon() {  # name command...: run in the foreground of a background job, remember its pid
    local name=$1
    shift
    "$@" >"$tmp/log/$name.out" 2>&1 &
    pids+=($!)
    names+=("$name")
    echo $! >"$tmp/$name.pid"
}

wait_for() {  # seconds description command...: poll every second until the command succeeds
    local seconds=$1 what=$2 t i
    shift 2
    for ((t = 0; t < seconds; t++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        for i in "${!pids[@]}"; do
            if ! kill -0 "${pids[i]}" 2>/dev/null; then
                say "${names[i]} exited while waiting for $what"
                return 1
            fi
        done
        sleep 1
    done
    say "timed out after ${seconds} s waiting for $what"
    return 1
}

free_ports() {  # two distinct free TCP ports (both bound at once while asking)
    "$bin/python" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))'
}

# munged with its own key and socket, so a system munged (if any) is neither used nor disturbed.
socket=$tmp/munge/munge.socket
head -c 1024 /dev/urandom >"$etc/munge.key"
chmod 0400 "$etc/munge.key"
start_daemon munged munged --foreground --force --socket="$socket" --key-file="$etc/munge.key" \
    --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/log/munged.log" \
    --seed-file="$tmp/munge/munged.seed"
wait_for 20 "munged" bash -c "munge -n -S '$socket' | unmunge -S '$socket'"

host=$(hostname -s)
read -r ctld_port slurmd_port < <(free_ports)
cat >"$etc/slurm.conf" <<EOF
# Written by tests/slurm/run_slurm_test.sh: one node, localhost only, everything under $tmp.
ClusterName=defaceaudit-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# No cgroups (none to delegate here): processes tracked by pid, tasks not confined.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No accounting database: sacct has nothing; the profile's squeue status command needs finished
# jobs to stay visible (MinJobAge), and they also let this test read every job's record at the end.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=7200
# Refuse a request no node can ever satisfy at submission, instead of leaving it PENDING forever.
EnforcePartLimits=ALL
ReturnToService=2
KillWait=5
# GPUs as generic resources: scontrol show job --details lists a job's allocated GPU (GRES=).
GresTypes=gpu
# The node claims what the jobs ask for (4 CPUs for a group job of 4 defacers, 16 GB at the first
# attempt, more on retries), whatever the machine has: config_overrides makes slurmd take these
# numbers.
# The tiny jobs use far less, and the test profile runs two at a time.
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 RealMemory=64000 Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES State=UP
PartitionName=gpu Nodes=ALL State=UP
EOF
# A fake GPU: File=/dev/null stands for the device (Count without File marks the node invalid).
echo "NodeName=$host Name=gpu File=/dev/null" >"$etc/gres.conf"
export SLURM_CONF=$etc/slurm.conf  # every SLURM command of this test and of its jobs uses it
# Inside each job, the plugin's jobstep runs the rule with a nested srun after removing every
# SLURM_* variable from its environment, SLURM_CONF included (jobstep plugin 0.6.1), so that
# srun would look for /etc/slurm/slurm.conf. Clusters keep their config there (or serve it
# configless); this test's config is private, so the jobs find an srun on PATH that restores it.
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$SLURM_CONF" "$(command -v srun)" >"$tmp/bin/srun"
chmod +x "$tmp/bin/srun"

start_daemon slurmctld slurmctld -D -c -f "$SLURM_CONF"
wait_for 30 "slurmctld" scontrol ping
start_daemon slurmd slurmd -D -f "$SLURM_CONF"
node_idle() { [ "$(sinfo -h -n "$host" -p cpu -o %t)" = idle ]; }
wait_for 60 "node $host idle in sinfo" node_idle
say "cluster up: $(sinfo -h -o '%P %D %t %G' | tr '\n' ';')"

# --- 3. the pipeline through SLURM -------------------------------------------------------------
pipeline=  # pid of the running `timeout ... snakemake`, if any
run_pipeline() {  # label workdir log command...: bounded by timeout -k, interruptible by signals
    local label=$1 dir=$2 log=$3 rc=0
    shift 3
    (cd "$dir" && exec timeout -k 30 "$run_timeout" "$@") >"$log" 2>&1 &
    pipeline=$!
    wait "$pipeline" || rc=$?
    pipeline=
    if [ "$rc" -ne 0 ]; then
        say "$label failed (exit $rc; 124 or 137: timed out); its log: $log"
        exit "$rc"
    fi
}

copy_workflow() {
    mkdir -p "$1/results"
    local name
    for name in "${workflow_files[@]}"; do
        cp -a "$repo/$name" "$1/"
    done
    cp "$here/tiny_config.yaml" "$1/"
}
export PATH=$tmp/bin:$bin:$PATH
copy_workflow "$tmp/slurm_run"
copy_workflow "$tmp/local_run"

say "pipeline through SLURM (profiles/slurm + tests/slurm/profile), at most ${run_timeout} s"
t0=$(date +%s)
# The profile's partitions set as a user would; no account (this cluster has none).
run_pipeline "the SLURM run" "$tmp/slurm_run" "$tmp/slurm.snakemake.log" \
    env -u DEFACEAUDIT_SLURM_ACCOUNT \
    DEFACEAUDIT_SLURM_PARTITION=cpu DEFACEAUDIT_SLURM_GPU_PARTITION=gpu "$bin/snakemake" \
    --profile "$repo/profiles/slurm" --profile "$here/profile" \
    --configfile tiny_config.yaml --verbose
slurm_s=$(($(date +%s) - t0))
say "SLURM run done in ${slurm_s} s"

# --- 4. SLURM's records ------------------------------------------------------------------------
scontrol show job --details --oneliner >"$tmp/slurm_jobs.txt"
"$bin/python" "$here/check_runs.py" jobs "$tmp/slurm_jobs.txt" "$tmp/slurm.snakemake.log" \
    --profile "$repo/profiles/slurm/profile.yaml" --require-gpu-rules "${gpu_rules[@]}" \
    --gpu-partition gpu --cpu-partition cpu

# --- 5. the Snakemake process at scale through SLURM -------------------------------------------
# Hundreds of trivial jobs in chains of 15, each chain one SLURM job (a group; one job per trivial
# job would cost a Snakemake start-up each, minutes on 2 cores), 8 SLURM jobs at a time.
# Plain Snakemake 9 starts one more self-renewing wake-up thread per finished job and runs every
# ready job through each scheduling pass; bounds: 32 live threads, 30 ms of CPU per job
# (start-up included, 2-3 s of the total here) and an exit within 60 s of the last job (one
# status check of the plugin, 8 s here, growing by 10 s while none ends).
scheduler_jobs=${SLURM_TEST_SCHEDULER_JOBS:-300}
if [ "$scheduler_jobs" -gt 0 ]; then
    say "$scheduler_jobs trivial jobs through SLURM (profiles/slurm + tests/slurm/profile, chains of 15)"
    t0=$(date +%s)
    run_pipeline "the scheduler run" "$tmp" "$tmp/scheduler.snakemake.log" \
        env -u DEFACEAUDIT_SLURM_ACCOUNT \
        DEFACEAUDIT_SLURM_PARTITION=cpu DEFACEAUDIT_SLURM_GPU_PARTITION=gpu \
        "$bin/python" "$repo/benchmarks/bench_scheduler.py" --jobs "$scheduler_jobs" --chain 15 \
        --json --timeout 300 --workdir "$tmp/scheduler_run" \
        --extra "--profile $repo/profiles/slurm --profile $here/profile --jobs 8"
    "$bin/python" "$here/check_runs.py" master "$tmp/scheduler.snakemake.log" \
        --jobs "$scheduler_jobs" --max-threads 32 --max-ms-per-job 30 --max-exit-delay 60
    say "scheduler run done in $(($(date +%s) - t0)) s"
fi

# --- 6. the same pipeline locally, and the comparison ------------------------------------------
say "the same pipeline locally (--cores 2), at most ${run_timeout} s"
t0=$(date +%s)
run_pipeline "the local run" "$tmp/local_run" "$tmp/local.snakemake.log" \
    "$bin/snakemake" --cores 2 --configfile tiny_config.yaml
local_s=$(($(date +%s) - t0))
say "local run done in ${local_s} s"
"$bin/python" "$here/check_runs.py" compare "$tmp/slurm_run" "$tmp/local_run"

say "PASSED in $(($(date +%s) - started)) s (SLURM run ${slurm_s} s, local run ${local_s} s)"
