#!/usr/bin/env bash
# Two machines, simulated: two network namespaces joined by a veth pair, one `lowrank train`
# worker in each, rendezvous across the pair (issue 3, item 5). Run by tests/train/netns_test.cpp.
#
#   scripts/netns_test.sh LOWRANK_BINARY OUT_DIR [STEPS]
#
# Rank 0 runs in namespace A (10.213.S.1/30), rank 1 in namespace B (10.213.S.2/30); the addresses
# exist only inside the two namespaces, so all traffic stays on the pair. Each worker writes
# OUT_DIR/{a,b}/rank<r>.json; the script compares their weight checksums. The namespaces (and with
# them the veth pair) are always deleted on exit.
# Exit status: 0 identical weights, 1 failure, 77 skipped (not root, or network namespaces not permitted).
set -u
BIN=${1:?usage: netns_test.sh LOWRANK_BINARY OUT_DIR [STEPS]}
OUT=${2:?usage: netns_test.sh LOWRANK_BINARY OUT_DIR [STEPS]}
STEPS=${3:-6}

[ "$(id -u)" -eq 0 ] || { echo "skip: creating network namespaces needs root"; exit 77; }
command -v ip >/dev/null || { echo "skip: ip (Debian package iproute2) is not installed"; exit 77; }

ID=$$
NS_A=lowrank-a-$ID
NS_B=lowrank-b-$ID
VETH_A=lrka$ID            # interface names are limited to 15 characters
VETH_B=lrkb$ID
SUBNET=$((ID % 250 + 1))  # a /30 per concurrent run
ADDR_A=10.213.$SUBNET.1
ADDR_B=10.213.$SUBNET.2
PORT=29500                # a fresh namespace has every port free

cleanup() {
  ip netns del "$NS_A" 2>/dev/null
  ip netns del "$NS_B" 2>/dev/null
}
trap cleanup EXIT
echo "namespaces: $NS_A $NS_B"

if ! ip netns add "$NS_A" 2>"$OUT/netns.err"; then
  echo "skip: ip netns add is not permitted here: $(cat "$OUT/netns.err")"
  exit 77
fi
set -e
ip netns add "$NS_B"
ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
ip -n "$NS_A" addr add "$ADDR_A/30" dev "$VETH_A"
ip -n "$NS_B" addr add "$ADDR_B/30" dev "$VETH_B"
for pair in "$NS_A $VETH_A" "$NS_B $VETH_B"; do
  set -- $pair
  ip -n "$1" link set lo up
  ip -n "$1" link set "$2" up
done
set +e
mkdir -p "$OUT/a" "$OUT/b"

run_rank() {  # namespace rank own-address out-dir
  ip netns exec "$1" env RANK="$2" WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR="$ADDR_A" MASTER_PORT=$PORT \
    timeout 300 "$BIN" train --steps "$STEPS" --threads 1 --timeout 60 --hostname "$3" --out "$4" \
    >"$4.log" 2>&1
}
run_rank "$NS_A" 0 "$ADDR_A" "$OUT/a" &
PID_A=$!
run_rank "$NS_B" 1 "$ADDR_B" "$OUT/b" &
PID_B=$!
wait $PID_A
RC_A=$?
wait $PID_B
RC_B=$?
echo "rank 0 (namespace A, $ADDR_A) exit $RC_A; rank 1 (namespace B, $ADDR_B) exit $RC_B"
if [ $RC_A -ne 0 ] || [ $RC_B -ne 0 ]; then
  echo "--- rank 0 log"; cat "$OUT/a.log"
  echo "--- rank 1 log"; cat "$OUT/b.log"
  exit 1
fi
SUM_A=$(grep -o '"weights_checksum": "[^"]*"' "$OUT/a/rank0.json")
SUM_B=$(grep -o '"weights_checksum": "[^"]*"' "$OUT/b/rank1.json")
echo "rank 0 $SUM_A"
echo "rank 1 $SUM_B"
if [ -z "$SUM_A" ] || [ "$SUM_A" != "$SUM_B" ]; then
  echo "FAIL: the two machines ended with different weights"
  exit 1
fi
echo "PASS: identical weights on both machines"
