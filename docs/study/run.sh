#!/usr/bin/env bash
# Regenerates the inference-time scaling study of docs/study.md: for each data set, every
# schedule family of examples/study.sched on the trained checkpoints of examples/models/, swept
# over its number of steps and scored against held-out data (docs/study/study.toml).
#
#   bash docs/study/run.sh              # all four data sets: about 10 minutes on 2 cores
#   DATA="checker" bash docs/study/run.sh
#
# Writes docs/study/<data>.csv (every point), <data>.svg (quality against NFE) and <data>.md (the
# points and the ranking at 1, 2 and 4 model evaluations), headline.md (the table of docs/study.md)
# and the sample pictures checker-*.png, which docs/study.md shows.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
cargo build --release --locked --quiet
for data in ${DATA:-checker moons eight spirals}; do
    echo "==> $data" >&2
    target/release/sched sweep docs/study/study.toml --data "$data" --budgets 1,2,4 \
        --out "docs/study/$data.csv" --plot "docs/study/$data.svg" > "docs/study/$data.md"
done
python3 docs/study/headline.py > docs/study/headline.md
for spec in "euler net velocity 1" "euler net velocity 4" "euler net velocity 32" "flow_map_jumps fm flow_map 1"; do
    set -- $spec
    target/release/sched run examples/study.sched --schedule "$1" --model "$2=examples/models/checker/$3.safetensors" \
        --param "steps=$4" --batch 2000 --plot "docs/study/checker-$1-$4.png" > /dev/null
done
