#!/usr/bin/env bash
# One gateway replica under docker compose (docker-compose.yml's gateway
# entrypoint), so `docker compose up --scale gateway=N` needs no edits.
#
# Every gateway has a login of its own at the broker, and the broker accepts
# that login only with its own random client id (nakhon/identity/roles.py):
# replicas of one container cannot share the login broker-init wrote, or they
# would take each other's session over and over. So each replica:
#
# 1. claims a slot: the lowest N whose lock file $GATEWAY_IDENTITIES/slot-N.lock
#    it can flock (held until the gateway exits; the lock dies with the
#    process, so a restarted or recreated replica claims a free slot again);
# 2. uses that slot's gateway, compose-N: its login, password and client id in
#    $GATEWAY_IDENTITIES/compose-N.env, made once with `nakhon gateways add`
#    and the admin password of broker-init's env file. The client id is
#    therefore stable per slot, and whichever replica holds slot N resumes
#    compose-N's persistent session and the messages queued in it;
# 3. runs the nakhon command it was given (docker-compose.yml's `command`,
#    `gateway`) with that file only: the admin password stays out of the
#    gateway's settings.
#
# All slots read through one shared subscription group ($GATEWAY_SHARE_GROUP,
# default nakhon), so N replicas split the messages instead of each reading
# all of them. Mosquitto 2.0 does not keep shared subscriptions across its
# own restart: messages published between a broker restart and the gateways'
# resubscription are lost (docs/deploy.md, "One city"). With
# GATEWAY_SHARE_GROUP empty the gateway subscribes to the filters themselves,
# which Mosquitto keeps; then only slot 1 may run (a second replica would
# read, and store, everything twice), and this script refuses the others.
set -euo pipefail

dir=${GATEWAY_IDENTITIES:-/var/lib/nakhon/gateways}
admin_env=${GATEWAY_ADMIN_ENV_FILE:-/run/nakhon/secrets.env}
group=${GATEWAY_SHARE_GROUP-nakhon}
max=${GATEWAY_MAX_REPLICAS:-32}
nakhon=${NAKHON_BIN:-nakhon}

# Any other command (`docker compose run --rm gateway devices add ...`, as
# the README shows, or `gateway --end-session`) runs as before, with no slot:
# with NAKHON_ENV_FILE if given (-e), else broker-init's env file.
if [[ $# -gt 1 || ${1:-gateway} != gateway ]]; then
    export NAKHON_ENV_FILE=${NAKHON_ENV_FILE:-$admin_env}
    exec "$nakhon" "$@"
fi

slot=0
for ((n = 1; n <= max; n++)); do
    exec 9>"$dir/slot-$n.lock"
    if flock --nonblock 9; then
        slot=$n
        break
    fi
    exec 9>&-
done
if ((slot == 0)); then
    echo "gateway: all $max slots in $dir are taken (GATEWAY_MAX_REPLICAS)" >&2
    exit 1
fi
if [[ -z $group ]] && ((slot > 1)); then
    echo "gateway: slot $slot refused: without a share group (GATEWAY_SHARE_GROUP) a second" \
        "gateway would read every message again; set one to run several" >&2
    exec 9>&-
    sleep "${GATEWAY_REFUSED_WAIT_S:-30}" # restart: unless-stopped would otherwise spin
    exit 1
fi

name="compose-$slot"
env_file="$dir/$name.env"
if [[ ! -s $env_file ]] || ! grep -qxF "NAKHON_MQTT_SHARE_GROUP=$group" "$env_file"; then
    # First start of this slot, or its group changed: (re)make its login. A
    # login whose file was lost is revoked first (it cannot be recovered).
    NAKHON_ENV_FILE=$admin_env "$nakhon" gateways revoke "$name" >/dev/null 2>&1 || true
    rm -f "$env_file.new"
    NAKHON_ENV_FILE=$admin_env "$nakhon" gateways add "$name" --share-group "$group" \
        --env-file "$env_file.new"
    mv "$env_file.new" "$env_file"
fi
echo "gateway: slot $slot, login gateway:$name, share group '${group}'" >&2
export NAKHON_ENV_FILE=$env_file NAKHON_GATEWAY_NAME=$name
exec "$nakhon" "${@:-gateway}"
