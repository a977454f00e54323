#!/usr/bin/env bash
# Runs a command over a slow link: inside a fresh network namespace whose loopback is shaped by a
# token-bucket filter, so that local workers (lowrank train --nproc, bench_pytorch_ddp.py) talk to
# each other at RATE instead of at memory speed.
#
#   scripts/with_slow_link.sh RATE [DELAY] -- COMMAND...
#   scripts/with_slow_link.sh 1gbit -- build/lowrank train --nproc 2 --model resnet18
#   scripts/with_slow_link.sh 100mbit 1ms -- /usr/bin/python3 scripts/bench_pytorch_ddp.py --nproc 2
#
# RATE is an integer with a tc bit-rate unit: bit, kbit, mbit, gbit or tbit (decimal: 1mbit is 10^6
# bit/s). DELAY (optional, e.g. 1ms) adds a netem delay in front of the tbf; every packet crosses lo
# once, so the round trip grows by twice DELAY. The namespace has only its own lo (127.0.0.1): the
# command sees no other network. Its exit status is the command's; 77 means skipped (not root,
# network namespaces not permitted, tc or a needed qdisc missing); 2 a usage error. The namespace
# is deleted on every exit, and INT or TERM is passed on to the command as TERM.
#
# The link: lo's MTU is set to 1500 bytes (Ethernet's, where the kernel default is 64 KiB), and the
# token bucket's burst is 1 ms worth of RATE, never below four 1500-byte packets (tbf drops any packet
# larger than its burst). A burst passes at memory speed once the bucket has refilled, e.g. during a
# step's compute: with lo's 64 KiB packets the burst had to be 256 KiB, and every message smaller
# than that (a compressed step's factors) crossed the "slow" link for free. With 1500-byte packets a
# 40 KB message takes 15 ms at 20 Mbit/s, as on a real link, and large transfers run at about 94 % of
# RATE, the rest being the packets' headers and TCP's own traffic (2 MB messages measured at 18.8
# Mbit/s on 20mbit and 94 on 100mbit; on 1gbit, where the 125 KB burst is a larger share of each
# message, at 1002). The queue holds up to 100 ms of traffic at RATE (tbf latency) before tbf drops.
# LOWRANK_LINK_MTU overrides the MTU (576 to 65536), e.g. 65536 for the earlier set-up.
set -u
usage() { echo "usage: with_slow_link.sh RATE [DELAY] -- COMMAND..." >&2; exit 2; }

[ $# -ge 3 ] || usage
RATE=$1
shift
DELAY=
if [ "$1" != "--" ]; then
  DELAY=$1
  shift
fi
if [ $# -lt 2 ] || [ "$1" != "--" ]; then usage; fi
shift

[[ $RATE =~ ^([0-9]+)(bit|kbit|mbit|gbit|tbit)$ ]] ||
  { echo "error: RATE '$RATE' is not an integer with unit bit, kbit, mbit, gbit or tbit" >&2; exit 2; }
case ${BASH_REMATCH[2]} in
  bit) SCALE=1 ;; kbit) SCALE=1000 ;; mbit) SCALE=1000000 ;; gbit) SCALE=1000000000 ;;
  tbit) SCALE=1000000000000 ;;
esac
BITS_PER_S=$((BASH_REMATCH[1] * SCALE))
[ "$BITS_PER_S" -gt 0 ] || { echo "error: RATE must be positive" >&2; exit 2; }
MTU=${LOWRANK_LINK_MTU:-1500}
[[ $MTU =~ ^[0-9]+$ ]] && [ "$MTU" -ge 576 ] && [ "$MTU" -le 65536 ] ||
  { echo "error: LOWRANK_LINK_MTU '$MTU' is not an MTU in bytes from 576 to 65536" >&2; exit 2; }
MTU=$((10#$MTU))  # decimal, even with a leading zero
BURST=$((BITS_PER_S / 8000))  # 1 ms at RATE, in bytes
[ "$BURST" -ge $((4 * MTU)) ] || BURST=$((4 * MTU))
if [ -n "$DELAY" ] && ! [[ $DELAY =~ ^[0-9]+(\.[0-9]+)?(s|ms|us)$ ]]; then
  echo "error: DELAY '$DELAY' is not a number with unit s, ms or us" >&2
  exit 2
fi

[ "$(id -u)" -eq 0 ] || { echo "skip: creating network namespaces needs root"; exit 77; }
for tool in ip tc; do
  command -v $tool >/dev/null || { echo "skip: $tool (Debian package iproute2) is not installed"; exit 77; }
done

NS=lowrank-slow-$$
cleanup() { ip netns del "$NS" 2>/dev/null; }
trap cleanup EXIT

if ! ERR=$(ip netns add "$NS" 2>&1); then
  echo "skip: ip netns add is not permitted here: $ERR"
  exit 77
fi
ip -n "$NS" link set lo mtu "$MTU" up || exit 1
TBF_PARENT=(root)
if [ -n "$DELAY" ]; then
  if ! ERR=$(tc -n "$NS" qdisc add dev lo root handle 1: netem delay "$DELAY" 2>&1); then
    echo "skip: cannot add a netem qdisc for DELAY (kernel module sch_netem missing?): $ERR"
    exit 77
  fi
  TBF_PARENT=(parent 1:1)
fi
if ! ERR=$(tc -n "$NS" qdisc add dev lo "${TBF_PARENT[@]}" handle 10: tbf rate "$RATE" burst "$BURST" \
             latency 100ms 2>&1); then
  echo "skip: cannot add a tbf qdisc (kernel module sch_tbf missing?): $ERR"
  exit 77
fi
echo "with_slow_link: namespace $NS, lo mtu $MTU, burst $BURST bytes; tc qdisc show dev lo:"
tc -n "$NS" qdisc show dev lo

# In the background so that INT and TERM reach this shell at once (a foreground command would
# defer the traps until it ends) and can be passed on; <&0 keeps stdin, which & would replace by
# /dev/null. `ip netns exec` execs the command, so $CHILD is the command itself. Background jobs
# ignore SIGINT, hence TERM for both.
ip netns exec "$NS" "$@" <&0 &
CHILD=$!
trap 'kill -TERM "$CHILD" 2>/dev/null' INT TERM
while :; do
  wait "$CHILD"
  RC=$?
  kill -0 "$CHILD" 2>/dev/null || break  # still running: wait was cut short by a signal
done
exit "$RC"
