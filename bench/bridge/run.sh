#!/usr/bin/env bash
# Bridge throughput: midge -> mosquitto vs mosquitto -> mosquitto, same topics, QoS 0 and 1.
#
# For each case a local broker bridges `bench/#` out (at the QoS measured) to a remote
# mosquitto; `midge bench sub` counts on the remote what `midge bench pub` publishes on the
# local broker. The figure is the subscriber's rate (messages received / time from the first
# to the last), i.e. end to end through the bridge.
#
#   bench/bridge/run.sh [MIDGE_BINARY] [MESSAGES] [ROUNDS]
# Prints one line per run and the medians and ratios as a Markdown table.
set -euo pipefail
MIDGE=$(realpath "${1:-target/release/midge}")
N=${2:-200000}
ROUNDS=${3:-3}
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

mosq() { # port [extra config] -> pid
  local port=$1 extra=${2:-} conf="$WORK/m-$1.conf"
  printf 'user root\nlistener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n%b\n' "$port" "$extra" > "$conf"
  "$MOSQUITTO" -c "$conf" > "$WORK/m-$port.log" 2>&1 & echo $!
}

midge_local() { # port remote qos -> pid
  local dir="$WORK/midge-$1"; mkdir -p "$dir"
  cat > "$dir/midge.toml" <<TOML
[security]
allow_anonymous = true
[[bridge]]
name = "bench"
addresses = ["127.0.0.1:$2"]
clientid = "bench-bridge"
restart_timeout = 1
topics = ["bench/# out $3"]
TOML
  (cd "$dir" && exec "$MIDGE" serve --port "$1" --no-http -c midge.toml > midge.log 2>&1) & echo $!
}

run_case() { # kind qos -> rate
  local kind=$1 qos=$2 r l rp lp
  r=$(free_port); l=$(free_port)
  rp=$(mosq "$r"); wait_port "$r"
  if [ "$kind" = midge ]; then
    lp=$(midge_local "$l" "$r" "$qos")
  else
    lp=$(mosq "$l" "connection bench\naddress 127.0.0.1:$r\nremote_clientid bench-bridge\ncleansession false\nrestart_timeout 1\ntopic bench/# out $qos")
  fi
  wait_port "$l"; sleep 2 # the bridge connects
  local t_sub t_pub
  t_sub=$(date +%s.%N)
  "$MIDGE" bench sub -p "$r" -q "$qos" -c "$N" -f 'bench/#' --json --quiet --drain-timeout 5 > "$WORK/sub.json" &
  local sp=$!
  sleep 1
  t_pub=$(date +%s.%N)
  "$MIDGE" bench pub -p "$l" -q "$qos" -c "$N" -P 4 -t 'bench/%i' ${RATE:+-r "$RATE"} --json --quiet > "$WORK/pub.json"
  # QoS 0 may lose messages on the way (a slow side drops them, as in mosquitto): the
  # subscriber is stopped 10 s after the publishers if it still waits for the rest (then no
  # figure: run QoS 0 at a rate the link keeps up with)
  for _ in $(seq 100); do kill -0 "$sp" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$sp" 2>/dev/null || true
  wait "$sp" || true
  stop "$lp"; stop "$rp"
  # recv_secs runs from the subscriber's start to its last message: take off the wait
  # before the publishers started
  python3 - "$WORK/sub.json" "$t_sub" "$t_pub" <<'PY'
import json,sys
lines=open(sys.argv[1]).read().strip().splitlines()
if not lines:
    print("0 lost"); sys.exit()
d=json.loads(lines[-1])
secs=d["recv_secs"]-(float(sys.argv[3])-float(sys.argv[2]))
print(f"{d['unique']/secs:.0f} {d['unique']}")
PY
}

declare -A RATES
for qos in ${QOS:-0 1}; do
  for kind in midge mosquitto; do
    for i in $(seq "$ROUNDS"); do
      out=$(run_case "$kind" "$qos")
      echo "qos=$qos $kind->mosquitto round=$i rate=${out% *} msg/s received=${out#* }/$N" >&2
      RATES[$kind-$qos]="${RATES[$kind-$qos]:-} ${out% *}"
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| QoS | midge → mosquitto (msg/s) | mosquitto → mosquitto (msg/s) | ratio |"
echo "|---|---|---|---|"
for qos in ${QOS:-0 1}; do
  m=$(echo "${RATES[midge-$qos]}" | median); q=$(echo "${RATES[mosquitto-$qos]}" | median)
  echo "| $qos | $m | $q | $(python3 -c "print(f'{$m/$q:.2f}' if $q else 'n/a')") |"
done
