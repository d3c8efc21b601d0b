#!/usr/bin/env bash
#
# Call-rate benchmark: our proxy (`carrier up`, the whole pipeline on) and
# Kamailio (tools/bench/kamailio.cfg: tm, rr, dialog, acc), each between the
# same sipp UAC and sipp UAS on this machine, at rising call rates.
#
# Per step it prints calls attempted and failed, the proxy's CPU and peak
# memory and, for ours, the events that reached the log. It stops a system
# at the first step with 0.1% or more failed calls, and ends with the
# highest rate each system carried under that. Everything listens on
# 127.0.0.1; the run is bounded by BENCH_BUDGET_SECS.
#
#   tools/bench/bench.sh                       # both systems
#   BENCH_SYSTEMS=kamailio tools/bench/bench.sh
#
# Settings (environment):
#   BENCH_SYSTEMS      "carrier kamailio"
#   BENCH_RATES        "500 1000 1500 2000 2500 3000 3500 4000" (calls/s)
#   BENCH_STEP_SECS    10    seconds of new calls per step
#   BENCH_PAUSE_MS     200   how long each answered call lasts
#   BENCH_KAM_CHILDREN 4     Kamailio UDP workers
#   BENCH_BUDGET_SECS  540   no step starts that could end past this
#   BENCH_KEEP         0     1 keeps the work dir (logs, sipp statistics)
#
# Columns:
#   cpu%      the proxy's CPU over the step, in % of one core
#   other%    the machine's CPU used by processes outside the benchmark, in
#             % of all cores: the load generator and the proxy share the
#             machine, so a step where this is high says little
#   mem_MB    peak of the PSS summed over the proxy's processes (Kamailio
#             runs a dozen that share memory; PSS counts shared pages
#             once), sampled twice a second; for one process it is its RSS
#   events/s  events that reached the log during a step (its calls and
#             their drain) over the step's seconds of load: the log's
#             sustained rate when ev/call is complete (3 per answered call:
#             INVITE, ACK, BYE)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SYSTEMS=${BENCH_SYSTEMS:-"carrier kamailio"}
RATES=${BENCH_RATES:-"500 1000 1500 2000 2500 3000 3500 4000"}
STEP_SECS=${BENCH_STEP_SECS:-10}
PAUSE_MS=${BENCH_PAUSE_MS:-200}
KAM_CHILDREN=${BENCH_KAM_CHILDREN:-4}
BUDGET_SECS=${BENCH_BUDGET_SECS:-540}
KEEP=${BENCH_KEEP:-0}

# A call that waits this long for a response fails: a carrier would have
# given up on it too. It also bounds how long a step can drain.
RECV_TIMEOUT_MS=5000
STEP_TIMEOUT_SECS=$((STEP_SECS + 2 * RECV_TIMEOUT_MS / 1000 + PAUSE_MS / 1000 + 10))
# sipp's sockets default to 64 kB buffers, which overflow in the bursts a
# busy proxy sends: the load generator's drops would count against the
# proxy. The kernel caps this at net.core.rmem_max/wmem_max.
SIPP_BUFFER=4194304
# A step where other processes took more of the machine than this is
# flagged in the summary.
OTHER_WARN_PCT=10

export PATH="$PATH:/usr/sbin:/sbin"
for c in sipp ss curl awk pgrep getconf; do
	command -v "$c" >/dev/null || { echo "bench: $c is missing (make deps installs the servers)" >&2; exit 1; }
done
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/carrier-bench.XXXXXX")
PIDS=()
START=$SECONDS

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ "$KEEP" = 1 ]; then
		echo "bench: logs kept in $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }

# stop PID: ends one process we started and forgets it.
stop() {
	local pid=$1 keep=() p
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# free_port: a loopback port nobody uses on UDP or TCP, below the
# ephemeral range so that no outgoing connection takes it meanwhile.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 10000))
		if [ -z "$(ss -Htuan "( sport = :$p )")" ]; then echo "$p"; return; fi
	done
	log "no free port found"; exit 1
}

# wait_udp PORT PID WHAT: until PID is bound to 127.0.0.1:PORT/udp.
wait_udp() {
	local port=$1 pid=$2 what=$3
	for _ in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || { log "$what exited while starting"; return 1; }
		if [ -n "$(ss -Hlun "( sport = :$port )")" ]; then return 0; fi
		sleep 0.1
	done
	log "$what not listening on udp 127.0.0.1:$port after 30s"
	return 1
}

# descendants PID: the processes under PID, at any depth.
descendants() {
	local p
	for p in $(pgrep -P "$1" || true); do
		echo "$p"
		descendants "$p"
	done
}

# mem_sampler PID FILE: appends "epoch-ms kB" lines, the PSS summed over PID
# and its descendants, until PID is gone.
mem_sampler() {
	local pid=$1 out=$2 total p kb
	while kill -0 "$pid" 2>/dev/null; do
		total=0
		for p in "$pid" $(descendants "$pid"); do
			kb=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
			total=$((total + ${kb:-0}))
		done
		echo "$(date +%s%3N) $total" >>"$out"
		sleep 0.5
	done
}

# peak_mb FILE [FROM-MS]: the highest sample since FROM-MS, in MB.
peak_mb() {
	awk -v from="${2:-0}" '$1 >= from && $2 > max {max = $2} END {printf "%.0f", max / 1024}' "$1"
}

# cpu_ticks PID...: clock ticks of CPU (user and system) the processes have
# used so far. The command name in /proc/PID/stat may hold spaces, so the
# fields are counted from its closing parenthesis.
cpu_ticks() {
	local p j t=0
	for p in "$@"; do
		j=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null || true)
		t=$((t + ${j:-0}))
	done
	echo "$t"
}

# machine_ticks: "busy total" clock ticks of all CPUs so far.
machine_ticks() {
	awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

# stat FILE COLUMN: a column of the last row of a sipp statistics file.
stat() {
	awk -F';' -v col="$2" 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == col) c = i; next} {v = $c} END {print v + 0}' "$1"
}

# published MPORT: the events our proxy has put in the log, summed over
# the metric's series; "?" when the endpoint or the metric is not there.
published() {
	local body
	body=$(curl -sf --max-time 5 "http://127.0.0.1:$1/metrics") || { echo "?"; return; }
	awk '/^carrier_eventlog_published_total[ {]/ {s += $NF; n++}
		END {if (n) printf "%.0f\n", s; else print "?"}' <<<"$body"
}

# run_uac NAME TARGET RATE CALLS: one sipp UAC run; prints "attempted
# successful failed retransmissions cpu-ticks". Calls not ended when sipp
# stops count as failed. Runs in a subshell, so `times` gives sipp's CPU.
run_uac() {
	local name=$1 target=$2 rate=$3 calls=$4 rc=0 st created ok failed ticks
	st="$WORK/$name.csv"
	sipp -sf "$ROOT/tools/sipp/uac.xml" -i 127.0.0.1 -p "$UAC_PORT" -t u1 -ci 127.0.0.1 -buff_size "$SIPP_BUFFER" \
		-key caller 15550000001 -s 15550000002 \
		-m "$calls" -r "$rate" -d "$PAUSE_MS" -l 1000000 \
		-recv_timeout "$RECV_TIMEOUT_MS" -timeout "${STEP_TIMEOUT_SECS}s" \
		-nostdin -trace_stat -stf "$st" -fd 1 -trace_err -error_file "$WORK/$name-errors.log" \
		"$target" >"$WORK/$name.log" 2>&1 || rc=$?
	# The children's user and system time, "XmY.YYYs XmY.YYYs", in ticks.
	ticks=$(times | awk -v hz="$CLK_TCK" 'NR == 2 {
		t = 0
		for (i = 1; i <= 2; i++) {split($i, a, /[ms]/); t += a[1] * 60 + a[2]}
		printf "%.0f", t * hz}')
	if [ "$rc" != 0 ] && [ "$rc" != 1 ]; then
		log "sipp UAC $name exited with $rc: $(tail -c 300 "$WORK/$name.log")"
		echo "$calls 0 $calls 0 $ticks"
		return
	fi
	created=$(stat "$st" TotalCallCreated)
	ok=$(stat "$st" 'SuccessfulCall(C)')
	failed=$(stat "$st" 'FailedCall(C)')
	echo "$calls $ok $((calls - ok)) $(stat "$st" 'Retransmissions(C)') $ticks"
	[ "$created" = "$calls" ] || log "$name: sipp created $created of $calls calls"
	[ $((ok + failed)) = "$calls" ] || log "$name: $((calls - ok - failed)) calls had not ended"
}

start_carrier() {
	local sip=$1 gw=$2
	MPORT=$(free_port)
	"$ROOT/bin/carrier" up --sip-listen "127.0.0.1:$sip" --gateway "127.0.0.1:$gw" \
		--trunk-cidr 127.0.0.1/32 \
		--data-dir "$WORK/carrier-data" --metrics-listen "127.0.0.1:$MPORT" \
		--nats-listen "127.0.0.1:$(free_port)" \
		>"$WORK/carrier.log" 2>&1 &
	PROXY_PID=$!
	PIDS+=("$PROXY_PID")
	wait_udp "$sip" "$PROXY_PID" "carrier up" || { tail -20 "$WORK/carrier.log" >&2; return 1; }
	for _ in $(seq 300); do
		curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$MPORT/metrics" && return 0
		sleep 0.1
	done
	log "carrier metrics not answering on 127.0.0.1:$MPORT"
	return 1
}

start_kamailio() {
	local sip=$1 gw=$2
	mkdir -p "$WORK/kamailio"
	# -DD -E: stay in the foreground, log (acc records too) to stderr.
	# -m: shared memory holds the transactions and dialogs; ample, so that
	# it is CPU that sets the limit.
	kamailio -f "$ROOT/tools/bench/kamailio.cfg" -DD -E \
		-Y "$WORK/kamailio" -P "$WORK/kamailio/kamailio.pid" -m 1024 -M 16 \
		-A "SIP_PORT=$sip" -A "GATEWAY=\"sip:127.0.0.1:$gw\"" -A "CHILDREN=$KAM_CHILDREN" \
		>"$WORK/kamailio.log" 2>&1 &
	PROXY_PID=$!
	PIDS+=("$PROXY_PID")
	wait_udp "$sip" "$PROXY_PID" kamailio || { tail -20 "$WORK/kamailio.log" >&2; return 1; }
}

SUMMARY=()

# bench SYSTEM: one system through all the rates.
bench() {
	local sys=$1 uas_port sip_port uas_pid mem best=none note="" rate calls row
	local t0 t1 attempted ok failed retrans uac_ticks pct busy0 total0 busy1 total1
	local px0 px1 uas0 uas1 cpu other other_max=0 ev0="?" ev1 events evs evcall
	uas_port=$(free_port)
	sip_port=$(free_port)
	UAC_PORT=$(free_port)

	sipp -sf "$ROOT/tools/sipp/uas.xml" -i 127.0.0.1 -p "$uas_port" -t u1 -ci 127.0.0.1 \
		-buff_size "$SIPP_BUFFER" -nostdin >"$WORK/$sys-uas.log" 2>&1 &
	uas_pid=$!
	PIDS+=("$uas_pid")
	wait_udp "$uas_port" "$uas_pid" "sipp UAS" || return 1

	if ! "start_$sys" "$sip_port" "$uas_port"; then
		SUMMARY+=("$sys: did not start (logs: BENCH_KEEP=1)")
		stop "$uas_pid"
		return
	fi
	mem="$WORK/$sys-mem.txt"
	: >"$mem"
	mem_sampler "$PROXY_PID" "$mem" &
	PIDS+=("$!")

	# A few calls first: a broken path is a set-up error, not a rate.
	read -r attempted ok failed _ <<<"$(run_uac "$sys-warmup" "127.0.0.1:$sip_port" 50 100)"
	if [ "$ok" != "$attempted" ]; then
		SUMMARY+=("$sys: warm-up failed, $failed of $attempted calls (logs: BENCH_KEEP=1)")
		stop "$PROXY_PID"
		stop "$uas_pid"
		return
	fi

	echo
	echo "== $sys (127.0.0.1:$sip_port -> sipp UAS 127.0.0.1:$uas_port; ${STEP_SECS}s per step, calls of ${PAUSE_MS}ms)"
	row=$(printf '%8s %10s %8s %8s %8s %7s %6s %7s %7s' \
		rate/s attempted failed %failed retrans wall_s cpu% other% mem_MB)
	[ "$sys" = carrier ] && row+=$(printf ' %10s %9s %7s' events events/s ev/call)
	echo "$row"
	for rate in $RATES; do
		if [ $((SECONDS - START + STEP_TIMEOUT_SECS)) -gt "$BUDGET_SECS" ]; then
			note=" (stopped: time budget of ${BUDGET_SECS}s)"
			break
		fi
		calls=$((rate * STEP_SECS))
		if [ "$sys" = carrier ]; then ev0=$(published "$MPORT"); fi
		t0=$(date +%s%3N)
		read -r busy0 total0 <<<"$(machine_ticks)"
		# shellcheck disable=SC2046 # one word per pid
		px0=$(cpu_ticks "$PROXY_PID" $(descendants "$PROXY_PID"))
		uas0=$(cpu_ticks "$uas_pid")

		read -r attempted ok failed retrans uac_ticks <<<"$(run_uac "$sys-$rate" "127.0.0.1:$sip_port" "$rate" "$calls")"
		# Events are published asynchronously: let the last ones land.
		sleep 1

		t1=$(date +%s%3N)
		read -r busy1 total1 <<<"$(machine_ticks)"
		# shellcheck disable=SC2046
		px1=$(cpu_ticks "$PROXY_PID" $(descendants "$PROXY_PID"))
		uas1=$(cpu_ticks "$uas_pid")
		cpu=$(((px1 - px0) * 1000 * 100 / CLK_TCK / (t1 - t0)))
		other=$(((busy1 - busy0 - (px1 - px0) - (uas1 - uas0) - uac_ticks) * 100 / (total1 - total0)))
		[ "$other" -ge 0 ] || other=0
		[ "$other" -le "$other_max" ] || other_max=$other

		pct=$(awk -v f="$failed" -v a="$attempted" 'BEGIN {printf "%.3f", a ? 100 * f / a : 100}')
		row=$(printf '%8s %10s %8s %8s %8s %7s %6s %7s %7s' "$rate" "$attempted" "$failed" "$pct" "$retrans" \
			"$(awk -v d=$((t1 - t0)) 'BEGIN {printf "%.1f", d / 1000}')" "$cpu" "$other" "$(peak_mb "$mem" "$t0")")
		if [ "$sys" = carrier ]; then
			ev1=$(published "$MPORT")
			events="?" evs="?" evcall="?"
			if [ "$ev0" != "?" ] && [ "$ev1" != "?" ]; then
				events=$((ev1 - ev0))
				evs=$((events / STEP_SECS))
				evcall=$(awk -v e="$events" -v a="$attempted" 'BEGIN {printf "%.2f", a ? e / a : 0}')
			fi
			row+=$(printf ' %10s %9s %7s' "$events" "$evs" "$evcall")
		fi
		echo "$row"
		# Under 0.1% failed: failed * 1000 < attempted.
		if [ $((failed * 1000)) -ge "$attempted" ]; then
			note=" (${rate}/s failed ${pct}%)"
			break
		fi
		best=$rate
		sleep 1
	done

	local hwm line
	hwm=$(awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$PROXY_PID/status" 2>/dev/null || echo "?")
	line="$sys: highest rate with <0.1% failed: ${best} calls/s${note}; peak memory $(peak_mb "$mem") MB"
	line+=" (PSS, all processes; VmHWM of the main process ${hwm} MB)"
	if [ "$other_max" -gt "$OTHER_WARN_PCT" ]; then
		line+="; other processes took up to ${other_max}% of the machine in a step: the figure is low"
	fi
	SUMMARY+=("$line")
	stop "$PROXY_PID"
	stop "$uas_pid"
}

for sys in $SYSTEMS; do
	case $sys in
	carrier)
		log "building bin/carrier"
		(cd "$ROOT" && go build -o bin/carrier ./cmd/carrier)
		;;
	kamailio)
		command -v kamailio >/dev/null || { log "kamailio is missing (make deps installs it)"; exit 1; }
		kamailio -c -f "$ROOT/tools/bench/kamailio.cfg" >"$WORK/kamailio-check.log" 2>&1 ||
			{ cat "$WORK/kamailio-check.log" >&2; exit 1; }
		;;
	*)
		log "unknown system $sys (carrier or kamailio)"
		exit 1
		;;
	esac
	bench "$sys"
done

echo
echo "== summary ($(nproc) cores, $((SECONDS - START))s)"
printf '%s\n' "${SUMMARY[@]}"
