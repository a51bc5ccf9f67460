#!/bin/sh
# The hartvm guest agent. It runs the host's commands; see hartvm/guest/agent.py
# for the protocol. Four virtio-console ports, found by name:
#   org.hartvm.control  lines both ways: READY, then RUN <one-line script> / PID <pid>,
#                       EXIT <status>
#   org.hartvm.signal   pids to kill (SIGKILL), one per line
#   org.hartvm.stdin    the command's stdin (the host closes its side for EOF)
#   org.hartvm.stdout   the command's stdout
#   org.hartvm.stderr   the command's stderr
find_ports() {
    for dir in /sys/class/virtio-ports/*; do
        name=
        read -r name < "$dir/name" 2>/dev/null
        [ -c "/dev/${dir##*/}" ] || continue
        case "$name" in
        org.hartvm.control) control=/dev/${dir##*/};;
        org.hartvm.stdin) stdin=/dev/${dir##*/};;
        org.hartvm.stdout) stdout=/dev/${dir##*/};;
        org.hartvm.stderr) stderr=/dev/${dir##*/};;
        org.hartvm.signal) signal=/dev/${dir##*/};;
        esac
    done
    [ -n "$control" ] && [ -n "$stdin" ] && [ -n "$stdout" ] && [ -n "$stderr" ] &&
        [ -n "$signal" ]
}
tries=0
until find_ports; do
    tries=$((tries + 1))
    [ $tries -gt 500 ] && { echo "hartvm agent: no virtio-console ports" >&2; exit 1; }
    sleep 0.01
done
exec 3<>"$control" 4>"$stdout" 5>"$stderr" 6<"$signal"
# Kills come on a port of their own, read in the background while a command runs.
# A command is the leader of its own process group (setsid) once it runs: kill
# the group, or the process itself if it has not got that far yet.
while read -r victim <&6; do
    kill -KILL -"$victim" 2>/dev/null || kill -KILL "$victim" 2>/dev/null
done &
cd /root
echo READY >&3
while read -r verb argument <&3; do
    case "$verb" in
    RUN)
        # The command tells its pid (for KILL) and then runs in the foreground,
        # so that it keeps the default signal actions; it sees the ports as fds
        # 0-2 only, never the agent's own.
        (
            read -r pid _ </proc/self/stat
            echo "PID $pid" >&3
            exec 3>&- 6<&-
            eval "$argument"
        ) >&4 2>&5 <"$stdin" 4>&- 5>&-   # stderr first: an error opening stdin reaches it
        echo "EXIT $?" >&3
        ;;
    *)
        echo "ERROR unknown request" >&3
        ;;
    esac
done
