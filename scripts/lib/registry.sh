# shellcheck shell=bash
# A throwaway docker-registry on loopback, for the benchmarks that push
# images and pull them back. Sourced, not run.
#
# start_registry DIR: serves a registry stored under DIR on a random port
# and returns once it answers; sets PORT, REG_PID (the caller kills it) and REGISTRY_DIR.
start_registry() {
  local dir=$1
  REGISTRY_DIR=$dir
  PORT=$((20000 + RANDOM % 10000))
  rm -rf "$dir" && mkdir -p "$dir"
  cat > "$dir/config.yml" <<EOF
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $dir/data } }
http: { addr: 127.0.0.1:$PORT }
EOF
  docker-registry serve "$dir/config.yml" > "$dir/log" 2>&1 &
  REG_PID=$!
  local _
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/v2/" > /dev/null && return 0
    sleep 0.1
  done
  echo "docker-registry did not answer on 127.0.0.1:$PORT (log: $dir/log)" >&2
  return 1
}

# blob_bytes: the blob bytes the registry sent since the last call (from
# its access log). The line count reached is kept in a file beside the log,
# as each call runs in a subshell.
blob_bytes() {
  local log=$REGISTRY_DIR/log mark=$REGISTRY_DIR/mark from total
  from=$(cat "$mark" 2> /dev/null || echo 0)
  total=$(awk -v from="$from" 'NR > from && $7 ~ /\/blobs\/sha256:/ && $6 == "\"GET" { s += $10 } END { print s + 0 }' "$log")
  wc -l < "$log" > "$mark"
  echo "$total"
}
