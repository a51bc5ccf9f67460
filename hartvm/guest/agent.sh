#!/bin/sh
# The hartvm guest agent. It runs the host's commands; see hartvm/guest/agent.py
# for the protocol. Virtio-console ports, found by name:
#   org.hartvm.control  lines both ways: READY, then RUN <number> <one-line script> /
#                       [RUNNING <channel> or HELD], EXIT <status>, and
#                       SET 0 <one-line script> / SET-DONE
#   org.hartvm.signal   numbers of commands to kill (SIGKILL), one per line
#   org.hartvm.stdin    the command's stdin (the host closes its side for EOF)
#   org.hartvm.stdout, org.hartvm.stderr, and ...stdout1/stderr1 to 3: the
#                       output channels: each command writes to a free one
find_ports() {
    for dir in /sys/class/virtio-ports/*; do
        name=
        read -r name < "$dir/name" 2>/dev/null
        [ -c "/dev/${dir##*/}" ] || continue
        case "$name" in
        org.hartvm.control) control=/dev/${dir##*/};;
        org.hartvm.stdin) stdin=/dev/${dir##*/};;
        org.hartvm.signal) signal=/dev/${dir##*/};;
        org.hartvm.stdout | org.hartvm.stdout[1-9])
            eval "stdout${name#org.hartvm.stdout}=/dev/${dir##*/}";;
        org.hartvm.stderr | org.hartvm.stderr[1-9])
            eval "stderr${name#org.hartvm.stderr}=/dev/${dir##*/}";;
        esac
    done
    [ -n "$control" ] && [ -n "$stdin" ] && [ -n "$stdout" ] && [ -n "$stderr" ] &&
        [ -n "$signal" ]
}
# The agent's own directory (init.sh says where): busybox and udhcpc's script.
agent_dir=${HARTVM_DIR:-/lib/hartvm}
unset HARTVM_DIR
# The network card (vmm/network_card.py), after each plug into a passt: its
# new MAC address ($1), then a lease from passt's DHCP server, which
# udhcpc's script applies (and notes in /run/hartvm-lease), with $2 as the
# resolver. passt's leases never end and every passt gives the same one
# (network.py), so a clone keeps the lease its snapshot had and only says
# its new address: passt learns the guest's MAC from the guest's frames, and
# until then sends to the broadcast address, which the guest's TCP ignores.
# With arp_notify, the kernel sends a gratuitous ARP when the address changes
# (net/ipv4/devinet.c), with no process of ours.
network_up() {
    for interface in /sys/class/net/*; do
        interface=${interface##*/}
        [ "$interface" != lo ] && break
    done
    echo 1 > "/proc/sys/net/ipv4/conf/$interface/arp_notify"
    ip link set "$interface" address "$1" up || return
    if ! [ -s /run/hartvm-lease ]; then
        HARTVM_BUSYBOX=$agent_dir/busybox HARTVM_NAMESERVER=$2 udhcpc -i "$interface" \
            -f -q -n -t 5 -T 1 -s "$agent_dir/udhcpc"
    fi
}
tries=0
until find_ports; do
    tries=$((tries + 1))
    [ $tries -gt 500 ] && { echo "hartvm agent: no virtio-console ports" >&2; exit 1; }
    sleep 0.01
done
# Output channel 0 stays open on fds 4 and 5 while no command has left
# anything running (the usual case: no port is opened per command).
exec 3<>"$control" 4>"$stdout" 5>"$stderr" 6<"$signal"
channel0_open=1
# Kills come on a port of their own, read in the background while a command
# runs: "N" kills command number N, if it is the one running (its number and
# pid are in /run/hartvm-command), with all its descendants. Command N runs
# in the cgroup /sys/fs/cgroup/command<N % 2> (init.sh makes them): its
# cgroup.kill ends every process in it at once, so that nothing it forks
# escapes, and its pids.max stops a fork bomb. Two, taken in turn, so that a
# kill of command N that comes late never meets command N + 1. What a command
# leaves running in the background is moved to /sys/fs/cgroup/background
# when it exits (it runs on, and a later kill does not touch it). All with
# builtins: a process costs the guest millions of instructions.
cgroup_of() { cgroup=/sys/fs/cgroup/command$(($1 % 2)); }
# On an image's root, a command is run by its path (see IMAGE_RUNNER in
# agent.py): busybox's shell would run its own applet of that name instead.
# Found with builtins, as execvp(3) finds it: no process of its own.
run_program() {
    program=$1
    shift
    case $program in
    */*) ;;
    *)
        saved_ifs=$IFS
        IFS=:
        for dir in $PATH; do
            [ -f "${dir:-.}/$program" ] && [ -x "${dir:-.}/$program" ] &&
                program=${dir:-.}/$program && break
        done
        IFS=$saved_ifs
        ;;
    esac
    exec "$program" "$@"
}
# Without cgroups (another kernel), each generation of descendants, found
# through /proc, is stopped first (no new children behind our back), then all
# die.
kill_tree() {
    victims=$1 found=" $1 "
    while [ "$found" != " " ]; do
        kill -STOP $found 2>/dev/null
        next=" "
        for stat in /proc/[0-9]*/stat; do
            read -r pid _ _ ppid _ <"$stat" 2>/dev/null || continue
            case "$found" in *" $ppid "*) next="$next$pid ";; esac
        done
        victims="$victims$next" found=$next
    done
    kill -KILL $victims 2>/dev/null
}
kill_command() {
    cgroup_of "$1"
    if [ -e $cgroup/cgroup.kill ]; then
        echo 1 > $cgroup/cgroup.kill
    else
        kill_tree "$2"
    fi
}
# After a command: what it left running goes on in the background cgroup
# (a few rounds: a process may fork while it is being moved).
release_background() {
    cgroup_of "$number"
    [ -e $cgroup/cgroup.procs ] || return 0
    # A killed command's processes are dying: they stay where they are, and
    # the command ends when they are gone (until then they hold its ports, and
    # the next command could not open stdin: a port has one opener at a time).
    # (2>/dev/null first: a redirection that fails reports before those after it apply)
    if read -r killed 2>/dev/null </run/hartvm-killed && [ "$killed" = "$number" ]; then
        rounds=0
        while read -r populated < $cgroup/cgroup.events && [ "$populated" != "populated 0" ] &&
                [ $rounds -lt 1000 ]; do
            sleep 0.01
            rounds=$((rounds + 1))
        done
        return 0
    fi
    rounds=0
    while read -r pid < $cgroup/cgroup.procs && [ $rounds -lt 100 ]; do
        left_running=1
        while read -r pid; do
            echo "$pid" > /sys/fs/cgroup/background/cgroup.procs
        done < $cgroup/cgroup.procs 2>/dev/null
        rounds=$((rounds + 1))
    done
}
while read -r number <&6; do
    read -r current pid </run/hartvm-command 2>/dev/null &&
        [ "$number" = "$current" ] && echo "$number" >/run/hartvm-killed &&
        kill_command "$number" "$pid"
done &
cd /root
echo READY >&3
# A free output channel for the next command, once a command has left
# something running (which keeps the channel it wrote to): one whose ports
# nothing holds open (Linux lets a port be opened once at a time, so a held
# one cannot be opened). Sets channel, out and err; fails when all are held.
open_channel() {
    for channel in 0 1 2 3; do
        suffix=${channel#0}
        eval "out=\$stdout$suffix err=\$stderr$suffix"
        [ -n "$out" ] && [ -n "$err" ] || continue
        # true, not ":": a redirection that fails on a special builtin ends the shell.
        true 2>/dev/null >"$out" && true 2>/dev/null >"$err" && return 0
    done
    return 1
}
# The command notes its number and pid for a kill, then runs in the
# foreground, so that it keeps the default signal actions; it sees the ports
# as fds 0-2 only, never the agent's own. It redirects itself: redirections
# on the call would be the agent's own while it waits, and its "Killed"
# would land in the command's stderr.
run_command() (
    if [ -n "$channel0_open" ]; then
        exec 2>&5 >&4
    else
        exec 2>"$err" >"$out"
    fi
    exec <"$stdin"          # after stderr: an error opening stdin reaches it
    # Its pid, from builtins: /proc/self links to /proc/PID (reading
    # /proc/self/stat with `read` costs a million instructions).
    cd -P /proc/self && pid=${PWD#/proc/} && cd "$OLDPWD"
    # Its number first: a late kill of the previous command must not find
    # this one in the cgroup (a kill that comes before it joins misses, and
    # the host asks again).
    echo "$number $pid" >/run/hartvm-command
    cgroup_of "$number"
    [ -e $cgroup/cgroup.procs ] && echo 0 > $cgroup/cgroup.procs   # itself, then all it forks
    exec 3>&- 4>&- 5>&- 6<&-
    eval "$argument"
)
while read -r verb number argument <&3; do
    case "$verb" in
    RUN)
        left_running=
        if [ -z "$channel0_open" ]; then
            if open_channel; then
                echo "RUNNING $channel" >&3
            else
                echo HELD >&3
                out=/dev/null err=/dev/null
            fi
        fi
        run_command
        status=$?
        release_background
        # What it left running keeps channel 0: from now on each command opens one.
        [ -n "$left_running" ] && [ -n "$channel0_open" ] && exec 4>&- 5>&- &&
            channel0_open=
        echo "EXIT $status" >&3
        ;;
    SET)
        # A clone's identity (clock, hostname, where pids go on from), set in
        # the agent itself: the next command's own process comes after it.
        eval "$argument" >/dev/null 2>&1 </dev/null
        echo SET-DONE >&3
        ;;
    *)
        echo "ERROR unknown request" >&3
        ;;
    esac
done
