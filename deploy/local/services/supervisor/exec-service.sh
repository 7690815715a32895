#!/usr/bin/env bash
# Run by the stack's supervisord for each start of a service (the `command` of
# its [program:...], written by deploy/local/services/supervisor.sh):
#
#   exec-service.sh RUN_DIR NAME COMMAND [ARG...]
#
# counts the start in RUN_DIR/NAME.starts (what `make status` shows as
# restarts), names the process in RUN_DIR/NAME.pid, then becomes COMMAND
# (exec: the same pid, so supervisord signals the service itself).
set -euo pipefail
run_dir="$1" name="$2"
shift 2
starts=0
[[ -f "$run_dir/$name.starts" ]] && read -r starts < "$run_dir/$name.starts" || true
[[ "$starts" =~ ^[0-9]+$ ]] || starts=0
starts=$((starts + 1))
echo "$starts" > "$run_dir/$name.starts.tmp"
mv -f "$run_dir/$name.starts.tmp" "$run_dir/$name.starts"
echo "$$" > "$run_dir/$name.pid"
printf '%s [supervisord] start %d of %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$starts" "$name"
exec "$@"
