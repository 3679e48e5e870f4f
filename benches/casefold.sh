#!/bin/sh
# Cost of -o casefold: fimfs with and without it, same tree, one run.
#   sh benches/casefold.sh [ENTRIES] [STATS]      (defaults 10000, 100000)
# Prints the time of ENTRIES-entry-directory stat loops (wrong case with
# casefold, exact case without) and of `find MNT | wc -l`, and the ratios.
set -eu
N=${1:-10000}
S=${2:-100000}
BIN=${FIMFS:-target/release/fimfs}
T=$(mktemp -d /tmp/fimfs-casefold-bench.XXXXXX)
trap 'umount -l "$T/m" 2>/dev/null || true; rm -rf "$T"' EXIT
mkdir -p "$T/l/big" "$T/u" "$T/m"
python3 - "$T/l/big" "$N" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    open(os.path.join(d, f"File{i:05}.Dat"), "w").close()
PY
run() { # $1: mount options, $2: case transform for the stat loop
    "$BIN" mount $1 "$T/l" "$T/u" "$T/m"
    python3 - "$T/m/big" "$N" "$S" "$2" <<'PY'
import os, sys, time
d, n, s, how = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
names = [f"File{i:05}.Dat" for i in range(n)]
if how == "wrong":
    names = [x.swapcase() for x in names]
t = time.perf_counter()
for i in range(s):
    os.stat(os.path.join(d, names[(i * 7919) % n]))
print(f"{time.perf_counter() - t:.3f}")
PY
    t0=$(date +%s.%N); c=$(find "$T/m" | wc -l); t1=$(date +%s.%N)
    echo "$(echo "$t1 - $t0" | bc) $c"
    umount "$T/m"; sleep 0.2
}
sync; echo 3 > /proc/sys/vm/drop_caches
plain=$(run "" exact | tr '\n' ' ')
sync; echo 3 > /proc/sys/vm/drop_caches
fold=$(run "-o casefold" wrong | tr '\n' ' ')
set -- $plain; ps=$1; pf=$2; pc=$3
set -- $fold; fs=$1; ff=$2; fc=$3
echo "stats: $S over $N entries: plain exact-case ${ps}s, casefold wrong-case ${fs}s, ratio $(echo "scale=2; $fs / $ps" | bc)x"
echo "find | wc -l ($pc / $fc entries): plain ${pf}s, casefold ${ff}s, ratio $(echo "scale=2; $ff / $pf" | bc)x"
