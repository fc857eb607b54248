#!/bin/bash
# Project copy of shared/systemd-lab/boot-systemd.sh (see RECIPE.md there for every gotcha).
# boot-systemd.sh - boot a real systemd (PID 1 of an nspawn container) on a host
# whose PID 1 is NOT systemd, using the host's own root filesystem through a
# throw-away overlayfs (upper layer = tmpfs).  No debootstrap, no network needed
# (besides `apt-get install systemd-container` once).
#
#   boot-systemd.sh up                 boot, wait until `systemctl is-system-running` = running/degraded
#   boot-systemd.sh exec CMD [ARGS..]  run CMD inside the container (all namespaces), e.g. systemctl ...
#   boot-systemd.sh cp SRC DST         copy a host file into the container's filesystem
#   boot-systemd.sh leader             print host PID of the container's systemd
#   boot-systemd.sh down               poweroff + remove mounts/cgroups/state; idempotent
#
# Env knobs:
#   SDLAB_NAME      machine name / cgroup name        (default sdlab)
#   SDLAB_STATE     state dir on host                 (default /run/sdlab-$SDLAB_NAME)
#   SDLAB_BIND      space-separated nspawn --bind specs, e.g. "/src/checkout:/src /tmp/x:/x"
#   SDLAB_BIND_RO   same, read-only
#   SDLAB_MEM       memory limit for the whole container (v1 memory.limit_in_bytes), default 4G
#   SDLAB_UPPER_SIZE size of the tmpfs holding the overlay upper layer, default 4G
#   SDLAB_TIMEOUT   seconds to wait for boot, default 60
set -euo pipefail

NAME=${SDLAB_NAME:-mplab}
STATE=${SDLAB_STATE:-/run/sdlab-$NAME}
TIMEOUT=${SDLAB_TIMEOUT:-60}
SELF=$(readlink -f "$0")
# v1 hierarchies we put the container into (+ the named systemd one and cgroup2)
CG_HIER="memory pids cpu cpuacct blkio devices freezer cpuset systemd unified"

log() { echo "[boot-systemd] $*" >&2; }

leader_pid() {
    # host PID of the container's PID 1; nspawn puts it in <cg>/payload/init.scope
    # (name=systemd hierarchy in hybrid mode, cgroup2 in SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 mode)
    local f p
    for f in /sys/fs/cgroup/systemd/$NAME/payload/init.scope/cgroup.procs \
             /sys/fs/cgroup/unified/$NAME/payload/init.scope/cgroup.procs; do
        p=$(head -n1 "$f" 2>/dev/null || true)      # (cgroup files have st_size 0: don't use -s)
        [ -n "$p" ] && { echo "$p"; return 0; }
    done
    return 0
}

cg_setup() {
    local c d
    for c in $CG_HIER; do
        [ -d /sys/fs/cgroup/$c ] || continue
        d=/sys/fs/cgroup/$c/$NAME
        mkdir -p "$d"
        if [ "$c" = cpuset ]; then
            cat /sys/fs/cgroup/cpuset/cpuset.cpus > "$d/cpuset.cpus"
            cat /sys/fs/cgroup/cpuset/cpuset.mems > "$d/cpuset.mems"
        fi
    done
    [ -n "${SDLAB_MEM:-4G}" ] && echo "${SDLAB_MEM:-4G}" > /sys/fs/cgroup/memory/$NAME/memory.limit_in_bytes || true
}

cg_join() {   # move process $1 into our cgroups (out of the caller's)
    local c
    for c in $CG_HIER; do
        [ -d /sys/fs/cgroup/$c/$NAME ] && echo "$1" > /sys/fs/cgroup/$c/$NAME/cgroup.procs
    done
}

cg_teardown() {
    local c
    for c in $CG_HIER; do
        [ -d /sys/fs/cgroup/$c/$NAME ] || continue
        # depth-first rmdir of the (now empty) cgroup tree
        find /sys/fs/cgroup/$c/$NAME -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ -d /sys/fs/cgroup/$c/$NAME ] && log "WARNING: could not remove /sys/fs/cgroup/$c/$NAME (still busy?)"
    done
    return 0
}

prepare_root() {  # runs inside the private mount namespace
    local R=$STATE/root U=$STATE/ovl
    mkdir -p "$R" "$U"
    mount -t tmpfs -o size=${SDLAB_UPPER_SIZE:-4G},mode=0755 "$NAME-upper" "$U"
    mkdir -p "$U/upper" "$U/work"
    # lowerdir=/ : only the root filesystem itself (overlayfs does not descend into sub-mounts)
    mount -t overlay "$NAME-root" -o "lowerdir=/,upperdir=$U/upper,workdir=$U/work" "$R"
    # nspawn wants to rm -rf /run/systemd/nspawn/propagate/NAME on exit; give it a tmpfs
    mkdir -p /run/systemd/nspawn && mount -t tmpfs -o mode=0755 "$NAME-nspawn" /run/systemd/nspawn

    # --- customise the container's view (writes land in the tmpfs upper layer) ---
    systemd-id128 new > "$R/etc/machine-id"           # distinct from host -> own journal
    echo "$NAME" > "$R/etc/hostname"
    # don't start whatever the host has enabled (postgresql, timers, getty...)
    rm -f "$R"/etc/systemd/system/multi-user.target.wants/*.service \
          "$R"/etc/systemd/system/timers.target.wants/*.timer \
          "$R"/etc/systemd/system/getty.target.wants/*.service
    ln -sf /dev/null "$R/etc/systemd/system/console-getty.service"
    # PID-1 shim: nspawn mounts the v1 controller hierarchies READ-ONLY in a
    # non-userns container, so systemd inside cannot create memory/pids/cpu
    # cgroups and MemoryMax= etc. would silently do nothing.  Remount them rw
    # (they are cgroup-namespaced to /sys/fs/cgroup/<ctrl>/$NAME on the host),
    # then exec the real systemd as PID 1.
    mkdir -p "$R/usr/local/sbin"
    cat > "$R/usr/local/sbin/sdlab-init" <<'EOF'
#!/bin/sh
for d in /sys/fs/cgroup/*/; do
    [ -e "$d/tasks" ] || continue         # pure cgroup2 layout (no v1 hierarchies): nothing to do
    case "$d" in */systemd/|*/unified/) continue;; esac
    mount -o remount,bind,rw "$d" 2>/dev/null || echo "sdlab-init: cannot remount $d rw" >&2
done
exec /lib/systemd/systemd "$@"
EOF
    chmod 0755 "$R/usr/local/sbin/sdlab-init"
    # optional hook: extra files into the root before boot
    if [ -n "${SDLAB_PREPARE_HOOK:-}" ]; then ROOT="$R" bash -c "$SDLAB_PREPARE_HOOK"; fi
}

inner() {   # executed via `unshare --mount` ; becomes systemd-nspawn
    cg_join $$
    prepare_root
    local args=(-D "$STATE/root" -M "$NAME"
                --register=no      # no machined on the host (no host systemd / system bus)
                --keep-unit        # don't ask host systemd for a scope; use our own cgroup
                --kill-signal=SIGRTMIN+3   # SIGTERM to nspawn => clean poweroff of container
                --console=read-only
                --setenv=SDLAB=1)
    local b
    for b in ${SDLAB_BIND:-};    do args+=(--bind="$b"); done
    for b in ${SDLAB_BIND_RO:-}; do args+=(--bind-ro="$b"); done
    # not `-b`: we start our shim as PID 1 which execs /lib/systemd/systemd
    exec systemd-nspawn "${args[@]}" /usr/local/sbin/sdlab-init
}

up() {
    command -v systemd-nspawn >/dev/null || {
        log "installing systemd-container"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd-container >&2; }
    if [ -n "$(leader_pid)" ]; then log "already up (leader $(leader_pid))"; return 0; fi
    mkdir -p "$STATE"
    cg_setup
    local t0=$SECONDS
    setsid unshare --mount --propagation private -- "$SELF" __inner \
        > "$STATE/console.log" 2>&1 < /dev/null &
    echo $! > "$STATE/nspawn.pid"
    local L="" st=""
    while [ $((SECONDS - t0)) -lt "$TIMEOUT" ]; do
        if ! kill -0 "$(cat "$STATE/nspawn.pid")" 2>/dev/null; then
            log "nspawn died; console log:"; cat "$STATE/console.log" >&2; down; return 1
        fi
        L=$(leader_pid)
        if [ -n "$L" ]; then
            st=$(nsenter -t "$L" -a systemctl is-system-running 2>/dev/null || true)
            case "$st" in running|degraded) break;; esac
        fi
        sleep 0.3
    done
    case "$st" in
        running|degraded) log "up in $((SECONDS - t0))s: leader=$L state=$st";;
        *) log "timeout waiting for boot (state='$st')"; tail -n 30 "$STATE/console.log" >&2; down; return 1;;
    esac
    echo "$L" > "$STATE/leader"
    [ "$st" = degraded ] && nsenter -t "$L" -a systemctl --failed --no-legend >&2 || true
    return 0
}

ex() {
    local L; L=$(leader_pid); [ -n "$L" ] || { log "not running"; return 1; }
    # -a = mount,uts,ipc,net,pid,cgroup,(user,time) namespaces of the container init,
    # plus its root/cwd.  The process stays in the caller's cgroup (not a unit!);
    # for long-running things use `exec systemd-run ...`.
    exec nsenter -t "$L" -a -- "$@"
}

copy_in() {
    local L; L=$(leader_pid); [ -n "$L" ] || { log "not running"; return 1; }
    mkdir -p "/proc/$L/root/$(dirname "$2")"
    cp -a "$1" "/proc/$L/root/$2"
}

down() {
    local P="" L t0=$SECONDS
    [ -f "$STATE/nspawn.pid" ] && P=$(cat "$STATE/nspawn.pid")
    L=$(leader_pid)
    if [ -n "$P" ] && kill -0 "$P" 2>/dev/null; then
        # clean shutdown: nspawn forwards SIGTERM as SIGRTMIN+3 -> systemd poweroff
        kill -TERM "$P" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$P" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$P" 2>/dev/null; then
            log "nspawn still alive after 20s, SIGKILL to our cgroup members"
            [ -n "$L" ] && kill -KILL "$L" 2>/dev/null || true
            kill -KILL "$P" 2>/dev/null || true
        fi
    fi
    # anything still in our cgroup tree was started by us -> kill it (by PID, our cgroup only)
    local pids i
    for i in $(seq 1 25); do
        pids=$(cat $(find /sys/fs/cgroup/systemd/$NAME /sys/fs/cgroup/unified/$NAME /sys/fs/cgroup/memory/$NAME \
                     -name cgroup.procs 2>/dev/null) /dev/null 2>/dev/null | sort -u | tr '\n' ' ' || true)
        [ -z "${pids// /}" ] && break
        log "killing leftovers (our cgroup only): $pids"; kill -KILL $pids 2>/dev/null || true; sleep 0.2
    done
    cg_teardown
    # mounts lived in the private mount namespace of the (now dead) nspawn -> already gone
    rm -rf "$STATE"
    rmdir /run/systemd/nspawn/locks /run/systemd/nspawn/propagate /run/systemd/nspawn 2>/dev/null || true  # empty mountpoint dirs only
    log "down in $((SECONDS - t0))s"
}

case "${1:-}" in
    up) up;;
    down|teardown) down;;
    exec) shift; ex "$@";;
    cp) shift; copy_in "$@";;
    leader) leader_pid;;
    __inner) inner;;
    *) echo "usage: $0 up|down|exec CMD..|cp SRC DST|leader" >&2; exit 2;;
esac
