# Shared by bench/run-bench, bench/run-profile and bench/run-probe-scale (sourced, not run).
# The caller sets BUILD, MODE (skip|cached|redis), SENDERS, DOMAIN before sourcing; this file
# owns the temporary directory and every process started through it (stopped by PID on exit).

TMP=$(mktemp -d /tmp/calloutd-bench.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BENCH_TOOL=${BENCH_TOOL:-bench}
CALLOUTD=$BUILD/calloutd
BARE=$BUILD/bench/bare_responder
LOAD=$BUILD/bench/policy_load
TARGET=$BUILD/bench/bench_smtp_target
SCRAPER=$BUILD/bench/metrics_scraper
METRICS_PORT=""
BACKENDS=no
[[ $MODE == cached || $MODE == redis ]] && BACKENDS=yes
if [[ $SENDERS != *[!0-9]* ]]; then SENDER_COUNT=$SENDERS; else SENDER_COUNT=$(grep -cv '^#' "$SENDERS"); fi

need_tools() {  # need_tools EXE...: exits 2 naming the first one missing
    local exe
    for exe in "$@"; do
        if [[ ! -x $exe ]]; then
            echo "$BENCH_TOOL: $exe is missing; build first (cmake --build $BUILD --target bench_tools)" >&2
            exit 2
        fi
    done
}

stop() {  # stop PID: SIGTERM, wait, forget
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local kept=() pid
    for pid in "${PIDS[@]}"; do [[ $pid == "$1" ]] || kept+=("$pid"); done
    PIDS=("${kept[@]}")
}

# Waits for "port=N" on the stdout file of a tool; prints N.
port_from_file() {
    local file=$1 i
    for ((i = 0; i < 200; i++)); do
        if grep -q '^port=' "$file" 2>/dev/null; then
            sed -n 's/^port=//p' "$file" | head -1
            return 0
        fi
        sleep 0.05
    done
    echo "$BENCH_TOOL: no port in $file" >&2
    return 1
}

# The TCP port PID listens on, from /proc (calloutd logs its port at notice, and the bench runs
# it at warning). Waits up to ${2:-5} seconds (valgrind starts slowly).
listen_port_of() {
    local pid=$1 tries=$((${2:-5} * 20)) i inodes port
    for ((i = 0; i < tries; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$BENCH_TOOL: process $pid exited" >&2
            return 1
        fi
        inodes=$(ls -l /proc/"$pid"/fd 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\]$/\1/p' | tr '\n' ' ')
        if [[ -n $inodes ]]; then
            # Every listening socket of the process but the metrics listener's.
            for port in $(awk -v inodes=" $inodes" 'NR > 1 && $4 == "0A" &&
                           index(inodes, " " $10 " ") { split($2, a, ":"); print a[2] }' /proc/net/tcp); do
                if (( 16#$port != ${METRICS_PORT:-0} )); then
                    echo $((16#$port))
                    return 0
                fi
            done
        fi
        sleep 0.05
    done
    echo "$BENCH_TOOL: process $pid does not listen" >&2
    return 1
}

field() {  # field LINE KEY
    sed -n "s/.*\<$2=\([^ ]*\).*/\1/p" <<<"$1"
}

SMTP_PORT="" DNS_PORT="" TARGET_PID=""
start_cached_backends() {
    "$TARGET" --senders "$SENDERS" --domain "$DOMAIN" >"$TMP/target.out" 2>"$TMP/target.err" &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    SMTP_PORT=$(port_from_file "$TMP/target.out")
    # dnsmasq needs a fixed port: try a few random high ones.
    local try pid
    for ((try = 0; try < 10; try++)); do
        DNS_PORT=$((20000 + RANDOM % 40000))
        dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1 \
            --port="$DNS_PORT" --conf-file=/dev/null --pid-file= --cache-size=0 \
            --user=root --group=root --log-facility="$TMP/dnsmasq.log" \
            --local=/$DOMAIN/ --mx-host=$DOMAIN,mx.$DOMAIN,10 \
            --host-record=mx.$DOMAIN,127.0.0.1 2>"$TMP/dnsmasq.err" &
        pid=$!
        sleep 0.3
        if kill -0 "$pid" 2>/dev/null; then
            PIDS+=("$pid")
            echo "-- dnsmasq on 127.0.0.1:$DNS_PORT (pid $pid), bench_smtp_target on 127.0.0.1:$SMTP_PORT"
            check_smtp_target
            return 0
        fi
        wait "$pid" 2>/dev/null || true
    done
    echo "$BENCH_TOOL: dnsmasq did not start: $(cat "$TMP/dnsmasq.err")" >&2
    return 1
}

# One SMTP conversation by hand: a bench sender must get 250, the random local part 550.
check_smtp_target() {
    local first=user0@$DOMAIN out="" line cmd
    [[ $SENDERS == *[!0-9]* ]] && first=$(grep -v '^#' "$SENDERS" | head -1)
    exec 3<>/dev/tcp/127.0.0.1/"$SMTP_PORT"
    read -r -t 2 line <&3 && out+="${line%$'\r'}|"
    for cmd in "EHLO bench" "MAIL FROM:<>" "RCPT TO:<$first>" "RCPT TO:<calloutd-check-0bench0@$DOMAIN>" QUIT; do
        printf '%s\r\n' "$cmd" >&3
        while read -r -t 2 line <&3; do
            out+="${line%$'\r'}|"
            [[ ${line:3:1} == - ]] || break
        done
    done
    exec 3>&-
    if [[ $out != *"|250 2.1.5 ok|550 5.1.1"* ]]; then
        echo "$BENCH_TOOL: bench_smtp_target answered unexpectedly: $out" >&2
        return 1
    fi
    echo "-- bench_smtp_target check: $first -> 250, calloutd-check-... -> 550"
}

write_config() {  # write_config FILE LEVEL
    {
        echo '[server]'
        echo 'listen = ["inet:127.0.0.1:0"]'
        echo 'control_socket = ""'
        # BENCH_IO_URING (auto): server.io_uring, "off" for the one-call-per-operation path.
        echo "io_uring = \"${BENCH_IO_URING:-auto}\""
        echo '[log]'
        echo "level = \"$2\""
        if [[ $BACKENDS == yes ]]; then
            echo '[dns]'
            echo "servers = [\"127.0.0.1:$DNS_PORT\"]"
            # dnsmasq serves bench.test only: the root zone would never resolve.
            echo "canary = \"$DOMAIN\""
            echo '[callout]'
            echo "port = $SMTP_PORT"
            echo 'helo_name = "bench.calloutd.test"'
            echo 'allow_networks = ["127.0.0.0/8"]'
            echo '[limits]'
            echo 'domain_rate = "unlimited"'
            echo 'global_rate = "unlimited"'
            echo 'client_rate = "unlimited"'
            echo 'mx_rate = "unlimited"'
            echo 'provider_rate = "unlimited"'
            echo 'mx_concurrency = 50'
            echo '[actions]'
            # Distinct from the skip answer (DUNNO), so the figures show where answers came from.
            echo 'valid = "OK"'
        fi
        if [[ $MODE == skip ]]; then
            # Every bench sender is answered by a skip rule (skip-domain): the decision path
            # without a verdict source. No DNS server is named and no canary asked, so nothing
            # leaves the machine (the system resolver is never queried).
            echo '[dns]'
            echo 'servers = ["127.0.0.1:1"]'
            echo 'canary = ""'
            echo '[policy]'
            echo "skip_domains = [\"$DOMAIN\"]"
        fi
        if [[ $MODE == redis ]]; then
            echo '[redis]'
            echo "url = \"redis://127.0.0.1:$REDIS_PORT/0\""
            echo "near_cache_ttl = \"$NEAR\""
        fi
        if [[ -n $METRICS_PORT ]]; then
            echo '[metrics]'
            echo "listen = \"inet:127.0.0.1:$METRICS_PORT\""
        fi
    } >"$1"
    "$CALLOUTD" check-config -c "$1" >/dev/null
}

# prime PORT: asks for every sender once (over at most 8 connections, within the probe budgets
# of write_config) so later answers come from the cache; sets PRIMED_PATH to "cached" when every
# sender was answered with a verdict (actions.valid = OK), "partial" when some were not (those
# are probed again during the measurement), "skip" when none was.
prime() {
    local prime
    echo "-- priming the verdict cache: $SENDER_COUNT senders"
    prime=$("$LOAD" --port "$1" --connections 8 --senders "$SENDERS" \
        --domain "$DOMAIN" --prime "${BENCH_PRIME_TIMEOUT:-60}" || true)
    echo "$prime"
    if grep -q "final actions OK=$SENDER_COUNT\$" <<<"$prime"; then
        PRIMED_PATH=cached
    elif grep -q 'final actions .*OK=' <<<"$prime"; then
        echo "!! cached path partly measured: after priming, some bench senders had no verdict"
        PRIMED_PATH=partial
    else
        echo "!! cached path NOT measured: after priming, calloutd did not answer the bench senders" \
            "with a verdict (actions.valid = OK); the figures below are the skip path."
        PRIMED_PATH=skip
    fi
}
