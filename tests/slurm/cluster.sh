# tests/slurm/cluster.sh - sourced by the Slurm integration tests (after
# tests/lib.sh): a real, private, one-node Slurm cluster in a scratch
# directory - its own munged (key, socket, pid and log files of its own),
# slurmctld and slurmd on free ports, all bound to 127.0.0.1 - so a system
# Slurm or munge on the machine is neither used nor disturbed.
#
#   slurm_start DIR   starts the daemons, exports SLURM_CONF, waits for the
#                     node to be idle; returns non-zero (logs printed) if not
#   slurm_stop        cancels every job, stops the daemons, waits for them,
#                     and ends anything left that our slurmd started; safe to
#                     call twice or after a partial start
#   slurm_job_state ID  prints the job's state (COMPLETED, FAILED, ...)
#   slurm_free_port   prints a TCP port free on this machine
#   slurm_leftovers   prints the pids of processes our daemons started that
#                     still run (none, after slurm_stop)
#
# The daemons run as the current user (SlurmUser = SlurmdUser = it), so this
# needs no root for itself; jobs then run as that user too.

slurm_dir=
slurm_conf= # stays set after slurm_stop, for slurm_leftovers
slurm_pids=() # munged, slurmctld, slurmd: in start order

# slurm_free_port: prints a TCP port no socket here uses, below the kernel's
# ephemeral range (where outgoing connections and wildcard binds such as
# ZeroMQ's tcp://127.0.0.1:* take their ports). A race with another program
# binding it first remains: slurm_start then tries other ports.
slurm_free_port() {
    local lo=10000 hi=32767 first used=" " addr p i
    read -r first _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null &&
        [ "$first" -gt $((lo + 1000)) ] && hi=$((first - 1))
    # the local ports of every TCP socket, in hex (one awk: bash's read would
    # take /proc's files a byte at a time)
    for addr in $(awk 'FNR > 1 { sub(/.*:/, "", $2); print $2 }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
        used+="$((16#$addr)) "
    done
    for i in $(seq 100); do
        p=$((lo + RANDOM % (hi - lo + 1)))
        [[ $used == *" $p "* ]] && continue
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        echo "$p"
        return 0
    done
    return 1
}

# slurm__wait_exit PID SECONDS: waits for a child; SIGKILL if it outlives SECONDS.
slurm__wait_exit() {
    local pid=$1 i
    for i in $(seq $(($2 * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

slurm__logs() {
    local f
    for f in "$slurm_dir"/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f"
        tail -n 30 "$f"
    done
}

slurm_start() {
    slurm_dir=$1
    mkdir -p "$slurm_dir/state" "$slurm_dir/spool" "$slurm_dir/tmpfs"
    # munged refuses a socket in a directory others cannot enter (go+x), and
    # checks every directory above it the same way: DIR's parent is taken to
    # be ours too (the test's scratch directory, mode 0700 from mktemp)
    chmod go+x "$slurm_dir" "$(dirname "$slurm_dir")" || return 1
    local user node i
    user=$(id -un)
    node=$(hostname -s)

    # --- munge: a fresh key and a daemon of our own ---------------------------
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile="$slurm_dir/munge.key" || return 1
    else
        dd if=/dev/urandom of="$slurm_dir/munge.key" bs=1024 count=1 2>/dev/null || return 1
    fi
    chmod 600 "$slurm_dir/munge.key"
    munged --foreground --key-file="$slurm_dir/munge.key" \
        --socket="$slurm_dir/munge.socket" --pid-file="$slurm_dir/munged.pid" \
        --seed-file="$slurm_dir/munged.seed" --log-file="$slurm_dir/munged.log" \
        >>"$slurm_dir/munged.log" 2>&1 &
    slurm_pids+=($!)
    for i in $(seq 50); do
        [ -S "$slurm_dir/munge.socket" ] && break
        kill -0 "${slurm_pids[0]}" 2>/dev/null || break
        sleep 0.1
    done
    [ -S "$slurm_dir/munge.socket" ] || { echo "munged did not start"; slurm__logs; return 1; }

    # --- slurmctld and slurmd, on ports chosen here ---------------------------
    local try
    for try in 1 2 3; do
        slurm__start_daemons "$node" "$user" && return 0
        # a port taken between choosing and binding: stop, choose again
        grep -q "Address already in use" "$slurm_dir/slurmctld.log" \
            "$slurm_dir/slurmd.log" 2>/dev/null || break
        echo "slurm_start: a port was taken, trying others"
        # the survivor would retry its registration for ~10 s: no state to save
        slurm__stop_daemons KILL
        mkdir -p "$slurm_dir/old.$try"
        mv "$slurm_dir"/slurm*.log "$slurm_dir/old.$try/" 2>/dev/null
    done
    echo "the Slurm node did not become idle"
    sinfo -N 2>&1
    slurm__logs
    return 1
}

# slurm__start_daemons NODE USER: writes slurm.conf, starts slurmctld and
# slurmd, and waits (up to 30 s) for the node to be idle.
slurm__start_daemons() {
    local node=$1 user=$2 ctld_port slurmd_port i p dead
    ctld_port=$(slurm_free_port) || return 1
    slurmd_port=$(slurm_free_port) || return 1
    while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(slurm_free_port) || return 1; done
    cat >"$slurm_dir/slurm.conf" <<EOF
# a private one-node cluster for the tests (tests/slurm/cluster.sh)
ClusterName=shardlm-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
# listen on 127.0.0.1 (the configured addresses), never on every interface
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
# cred_expire: a requeued job waits this long (+1 s) before it may start
# again (default 120 s)
AuthInfo=socket=$slurm_dir/munge.socket,cred_expire=5
CredType=cred/munge
StateSaveLocation=$slurm_dir/state
SlurmdSpoolDir=$slurm_dir/spool
SlurmctldPidFile=$slurm_dir/slurmctld.pid
SlurmdPidFile=$slurm_dir/slurmd.pid
SlurmctldLogFile=$slurm_dir/slurmctld.log
SlurmdLogFile=$slurm_dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
# also look at pending jobs every second, not every 60 s (a requeued job
# waits for that pass once it is eligible again)
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
# scratch files of jobs and plugins (mpi/pmix) here, not in /tmp
TmpFS=$slurm_dir/tmpfs
# sbatch --wait polls every 2 s while MinJobAge/2 is not above it (it would
# otherwise wait 2 s, then 8 s); a finished job's record outlives it by >= 4 s
MinJobAge=4
# cancelled tasks get SIGKILL 2 s after SIGTERM, not 30
KillWait=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=100 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=30 State=UP
EOF
    # Every Slurm command (and slurmd, and through it every job) reads this.
    slurm_conf=$slurm_dir/slurm.conf
    export SLURM_CONF=$slurm_conf

    # -D: in the foreground, so that they are our children and we can wait
    slurmctld -D -f "$SLURM_CONF" >>"$slurm_dir/slurmctld.log" 2>&1 &
    slurm_pids+=($!)
    slurmd -D -N "$node" -f "$SLURM_CONF" >>"$slurm_dir/slurmd.log" 2>&1 &
    slurm_pids+=($!)
    for i in $(seq 150); do
        dead=0
        for p in "${slurm_pids[@]:1}"; do kill -0 "$p" 2>/dev/null || dead=1; done
        [ $dead -eq 0 ] || return 1
        # sinfo spends 9 s retrying a controller that does not listen yet, and
        # waits as long on whatever else holds the port (a failed start)
        if (exec 3<>"/dev/tcp/127.0.0.1/$ctld_port") 2>/dev/null &&
            [ "$(timeout 3 sinfo -h -n "$node" -o %T 2>/dev/null)" = idle ]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# slurm__stop_daemons [SIGNAL]: slurmd and slurmctld, both at once (SIGTERM
# unless told), and waits for them.
slurm__stop_daemons() {
    local i
    for ((i = ${#slurm_pids[@]} - 1; i >= 1; i--)); do
        kill -"${1:-TERM}" "${slurm_pids[$i]}" 2>/dev/null
    done
    for ((i = ${#slurm_pids[@]} - 1; i >= 1; i--)); do
        slurm__wait_exit "${slurm_pids[$i]}" 10
    done
    slurm_pids=("${slurm_pids[0]}")
}

# slurm_leftovers: the pids, other than this shell's, of processes started
# with our SLURM_CONF in their environment: the daemons hand it to every job
# step (slurmstepd, srun, the tasks), which daemonize away from our tree.
slurm_leftovers() {
    local f pid procs
    [ -n "$slurm_conf" ] || return 0
    # listed here, before grep (which inherits SLURM_CONF) exists
    procs=(/proc/[0-9]*/environ)
    for f in $(grep -lsxzF "SLURM_CONF=$slurm_conf" "${procs[@]}"); do
        pid=${f#/proc/}
        pid=${pid%/environ}
        [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] || echo "$pid"
    done
    return 0
}

slurm_stop() {
    [ -n "$slurm_dir" ] || return 0
    local i p n=${#slurm_pids[@]}
    if [ "$n" -ge 3 ] && kill -0 "${slurm_pids[1]}" 2>/dev/null; then
        # cancel every job and let slurmd end their steps while it still can
        # (KillWait=2: SIGKILL follows SIGTERM after 2 s)
        p=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
        # shellcheck disable=SC2086 # one job id per word
        [ -z "$p" ] || scancel $p 2>/dev/null || true
        for i in $(seq 100); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
    # slurmd and slurmctld (which ends its slurmscriptd)
    [ "$n" -ge 1 ] && slurm__stop_daemons
    # whatever a job step left behind (slurmstepd outlives slurmd)
    for p in $(slurm_leftovers); do
        kill -KILL "$p" 2>/dev/null
    done
    if [ "$n" -ge 1 ]; then
        kill -TERM "${slurm_pids[0]}" 2>/dev/null
        slurm__wait_exit "${slurm_pids[0]}" 10
    fi
    slurm_pids=()
    slurm_dir=
}

# slurm_job_state ID: the job's state from slurmctld, e.g. COMPLETED.
slurm_job_state() {
    scontrol -o show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2
}
