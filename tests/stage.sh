#!/usr/bin/env bash
# Runs one stage of `make test` (NAME COMMAND...) and appends how long it took to $MULTIHV_STAGES, which
# `make test` prints at its end: where the suite's time goes, on every run.
name=$1
shift
start=$(date +%s)
status=0
"$@" || status=$?
line="$(printf '%-34s %5d s' "$name" $(($(date +%s) - start)))"
[ $status -eq 0 ] || line="$line  (failed, exit $status)"
echo "$line" >> "${MULTIHV_STAGES:-/dev/null}"
exit $status
