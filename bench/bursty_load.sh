#!/bin/bash
# bursty_load.sh CMD...: run CMD beside two processes that compete for the cores in bursts: torch matmuls on one
# thread each (at nice $NICE, default 0) that run for 10 s, pause for 10 s, and so on; stopped when CMD ends.
# The overload benchmark's rates then change while it runs, as they do beside a training job or a test run.
hog='import torch; torch.set_num_threads(1); a = torch.randn(1024, 1024)
while True: a @ a'
python=${PYTHON:-python}
pids=()
for _ in 1 2; do nice -n "${NICE:-0}" "$python" -c "$hog" & pids+=($!); done
( while sleep 10; do kill -STOP "${pids[@]}"; sleep 10; kill -CONT "${pids[@]}"; done ) & cycler=$!
trap 'kill $cycler; kill -CONT "${pids[@]}"; kill "${pids[@]}" 2>/dev/null' EXIT
"$@"
