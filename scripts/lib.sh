# scripts/lib.sh — what the measuring scripts (bench, bench-parallel, bench-archive, chaos) share.
# Sourced, not run: `source scripts/lib.sh` from the repository's root, then `measure_setup`.
#
# After measure_setup: $dwh is the release binary, $work a scratch folder, DWH_REDIS_URL a
# private redis-server of its own (the shared one's databases belong to the tests), and every
# database made by use_db and topic named by use_topics is dropped on exit (BENCH_KEEP=1 keeps
# them).

CACHE="${DWH_CACHE:-$HOME/.cache/dwh}"
export CARGO_TARGET_DIR="${DWH_RELEASE_TARGET_DIR:-$CACHE/target-release}"
PG_ADMIN="${BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_BASE="${PG_ADMIN%/*}"

# measure_setup: toolchain, services, the release build, a scratch folder and a private Redis.
measure_setup() {
    scripts/toolchain
    scripts/services up >/dev/null
    echo "building dwh (release, target dir $CARGO_TARGET_DIR; a cold build takes ~20-35 min)" >&2
    source scripts/progress.sh
    mkdir -p "$CARGO_TARGET_DIR"
    with_progress build "$CARGO_TARGET_DIR/release-build.log" cargo build --release -p dwh --locked >&2 \
        || { tail -n 30 "$CARGO_TARGET_DIR/release-build.log" >&2; exit 1; }
    dwh="$CARGO_TARGET_DIR/release/dwh"
    work=$(mktemp -d)
    dbs=()
    topics=()
    redis_pid=""
    trap measure_cleanup EXIT
    local port=6390
    while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
        >"$work/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    export DWH_REDIS_URL="redis://127.0.0.1:$port/0"
}

measure_cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
    if [ "${BENCH_KEEP:-0}" != 1 ]; then
        for db in "${dbs[@]}"; do
            psql "$PG_ADMIN" -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
        done
        for topic in "${topics[@]}"; do
            scripts/kafka/node tool org.apache.kafka.tools.TopicCommand \
                --bootstrap-server "${DWH_KAFKA_BROKERS:-127.0.0.1:9092}" --delete --if-exists \
                --topic "$topic" >/dev/null 2>&1 || true
        done
        rm -rf "$work"
    else
        echo "kept: databases ${dbs[*]}, topics ${topics[*]}, logs in $work" >&2
    fi
}

# use_topics NAME: the pipeline's three topics and the tags topic named after NAME (deleted on
# exit).
use_topics() {
    export DWH_ORDERS_TOPIC="$1-orders" DWH_STG_TOPIC="$1-stg" DWH_DDS_TOPIC="$1-dds"
    export DWH_TAGS_TOPIC="$1-tags"
    topics+=("$1-.*")
}

# use_db NAME [MIGRATE ARGS…]: a fresh migrated database (dropped on exit); `dwh migrate` also
# creates the topics of use_topics if they do not exist.
use_db() {
    dbs+=("$1")
    export DWH_PG_URL="$PG_BASE/$1"
    "$dwh" migrate "${@:2}" >/dev/null
}

# bench_data N: generate N orders (users = N / 10, at least 20; seed $SEED, default 1) once into
# $CACHE/bench; sets $data (in/, history.jsonl, tick.jsonl with $TICK new orders) and $users.
bench_data() {
    local n=$1 seed="${SEED:-1}" tick="${TICK:-5}" start
    users=$((n / 10 < 20 ? 20 : n / 10))
    data="$CACHE/bench/data-$n-$users-$seed"
    [ -f "$data/.done" ] && return
    echo "generating $n orders, $users users (seed $seed) into $data" >&2
    mkdir -p "$data/in"
    start=$(date +%s.%N)
    python3 testdata/generate.py --orders "$n" --users "$users" --seed "$seed" \
        --out "$data/in" >"$data/summary.txt"
    echo "  generated in $(seconds_since "$start")s" >&2
    ln -sf in/orders.jsonl "$data/history.jsonl"
    # The tick: the last $tick valid orders of the stream as brand-new orders (fresh ids).
    python3 - "$data/in/orders.jsonl" "$tick" >"$data/tick.jsonl" <<'PY'
import json, sys
path, count = sys.argv[1], int(sys.argv[2])
picked = []
for line in open(path, encoding="utf-8"):
    try:
        m = json.loads(line)
        if m["object_type"] == "order" and type(m["object_id"]) is int and "user" in m["payload"]:
            picked = (picked + [m])[-count:]
    except (ValueError, TypeError, KeyError):
        pass
for i, m in enumerate(picked):
    m["object_id"] = 10**9 + i
    print(json.dumps(m, ensure_ascii=False))
PY
    touch "$data/.done"
}

# run_job NAME ARGS…: one `dwh ARGS…` under /usr/bin/time; sets wall, rss_kb, consumed. Its files
# are its NAME's ($work/out-NAME, …), so runs of different names may run at once; its log
# (stderr) is appended to $work/log-NAME.
run_job() {
    local name=$1 out="$work/out-$1" err="$work/err-$1" time="$work/time-$1"
    shift
    /usr/bin/time -f "%e %M" -o "$time" "$dwh" "$@" >"$out" 2>"$err" || {
        echo "dwh $* failed:" >&2
        cat "$err" "$out" >&2
        exit 1
    }
    cat "$err" >>"$work/log-$name" # each run's log lines, for scripts/phases
    read -r wall rss_kb <"$time"
    consumed=$(sed -nE 's/.* consumed=([0-9]+).*/\1/p' "$out")
    consumed=${consumed:-0}
    echo "  $name: $(cat "$out")  [wall ${wall}s, rss $((rss_kb / 1024)) MB]" >&2
}

seconds_since() { echo "$(date +%s.%N) $1" | awk '{ printf "%.2f", $1 - $2 }'; }
rate() { echo "$1 $2" | awk '{ printf "%.0f", ($2 > 0 ? $1 / $2 : 0) }'; }
mb() { echo "$1" | awk '{ printf "%.0f", $1 / 1024 }'; }

# machine: one line naming the machine the figures came from.
machine() {
    echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, \
$(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo) RAM; \
$(psql "$PG_ADMIN" -X -A -t -c 'SHOW server_version' | cut -d' ' -f1 | sed 's/^/PostgreSQL /'); \
Apache Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml) (one KRaft node)"
}

# append_result FILE TITLE TEXT: append TEXT under a dated heading with the commit and machine.
append_result() {
    local out=$1 title=$2 text=$3
    [ "$out" = "-" ] && return
    mkdir -p "$(dirname "$out")"
    [ -f "$out" ] || printf '# %s\n\nAppended by the script that measured them, newest last.\n' "$title" >"$out"
    {
        echo
        echo "## $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo
        echo "Machine: $(machine)."
        echo
        echo "$text"
    } >>"$out"
    echo "appended to $out" >&2
}
