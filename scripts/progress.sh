# scripts/progress.sh — sourced by the set-up scripts: a long install says what it is doing.
#
# with_progress NAME LOG CMD…: run CMD with its output in LOG and, while it runs, print a line every
# 20 s with the time so far and the log's last line, so a first run is never silent for minutes.
with_progress() {
    local name="$1" log="$2" pid started=$SECONDS
    shift 2
    "$@" >"$log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null || break
        printf '%s:   … %d s; %s\n' "$name" "$((SECONDS - started))" "$(tail -n 1 "$log" | cut -c1-100)"
    done
    wait "$pid"
}
