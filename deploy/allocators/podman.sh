#!/usr/bin/env bash
# ALLOCATOR_COMMAND that does what the original Go OpenChampPS did: start one game
# server container per match with podman, on a free host port in 7000–8000.
#   ALLOCATOR=command ALLOCATOR_COMMAND=/path/to/podman.sh
# Reads the match on stdin ({"match_id","queue","players","token"}), prints
# {"server_id":"<container id>","host":"<GAME_HOST>","port":<port>}.
# Env: GAME_HOST (the address players connect to; default: this host's first
# address), GAME_IMAGE (default openchamp-game-server), PORT_MIN/PORT_MAX.
set -euo pipefail
match=$(cat)
field() { printf '%s' "$match" | python3 -c "import json,sys; v=json.load(sys.stdin).get('$1', ''); print(v if isinstance(v, str) else json.dumps(v))"; }
# The game server seats only this match's players and confirms/ends it with its token.
players=$(field players) match_id=$(field match_id) token=$(field token)
host=${GAME_HOST:-$(hostname -I | awk '{print $1}')}
image=${GAME_IMAGE:-openchamp-game-server}
for port in $(seq "${PORT_MIN:-7000}" "${PORT_MAX:-8000}"); do
  # A port nothing listens on (the original probed with a listen, too).
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    id=$(podman run -d -p "$port:7000" -e "PLAYERS_JSON=$players" -e "MATCH_ID=$match_id" \
      -e "MATCH_TOKEN=$token" "$image")
    printf '{"server_id":"%s","host":"%s","port":%d}\n' "$id" "$host" "$port"
    exit 0
  fi
done
echo "podman.sh: no free port in ${PORT_MIN:-7000}-${PORT_MAX:-8000}" >&2
exit 1
