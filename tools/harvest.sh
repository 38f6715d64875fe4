#!/usr/bin/env bash
# The harvest (ltbench/harvest.py): train the queue in the background at low CPU priority from a
# clean worktree of one commit, writing into this checkout's results/.
#   tools/harvest.sh start [SECONDS]   start it (default: no deadline), code of HEAD
#   tools/harvest.sh stop [WAIT]       SIGTERM: finish the epoch, checkpoint, exit (waits WAIT s, default 300)
#   tools/harvest.sh status            running or not, the current step, the log's tail
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
H="$ROOT/.harvest"
PY="${HARVEST_PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$H"

running() { [[ -f "$H/pid" ]] && kill -0 "$(cat "$H/pid")" 2>/dev/null; }

case "${1:-status}" in
start)
  if running; then echo "harvest: already running (pid $(cat "$H/pid"))"; exit 0; fi
  # A fresh checkout has no .venv: say so before a worktree is made or a process is left to die.
  if [[ ! -x "$PY" ]]; then
    echo "harvest: error: python '$PY' is not an executable (HARVEST_PYTHON, default .venv/bin/python): run \`make install\` (or \`make harvest\`, which installs first)" >&2
    exit 1
  fi
  commit="$(git -C "$ROOT" rev-parse HEAD)"
  wt="$H/worktrees/$commit"
  for old in "$H"/worktrees/*; do  # earlier commits' worktrees: nothing runs there now
    [[ -d "$old" && "$old" != "$wt" ]] && git -C "$ROOT" worktree remove --force "$old" || true
  done
  if [[ ! -d "$wt" ]]; then
    git -C "$ROOT" worktree prune
    git -C "$ROOT" worktree add --detach "$wt" "$commit" >/dev/null
  fi
  deadline=()
  [[ -n "${2:-}" ]] && deadline=(--deadline "$2")
  if [[ -z "${LTBENCH_DATA:-}" && -d "$ROOT/../shared/data/cifar10" ]]; then
    export LTBENCH_DATA="$(cd "$ROOT/../shared/data" && pwd)"
  fi
  # The worktree's package first on sys.path, whatever the venv's editable install points at.
  cd "$wt"
  # Its own session, hence its own scheduler autogroup, which the harvest sets to nice 19 itself:
  # with autogroups, a process's nice weighs only against its own group's members.
  PYTHONPATH="$wt" nohup setsid nice -n 19 "$PY" -m ltbench.harvest run --results "$ROOT/results" \
      --notebooks "$wt/notebooks" --status "$H/status.json" "${deadline[@]}" >>"$H/harvest.log" 2>&1 &
  echo $! >"$H/pid"  # the python process itself (nohup, setsid and nice exec it), which the stop signals
  cd "$ROOT"
  # A harvest that dies at once (an import error, a bad argument) is reported, not announced as started.
  sleep "${HARVEST_START_CHECK:-3}"
  if ! running; then
    echo "harvest: error: it exited at once; the log's tail:" >&2
    tail -n 15 "$H/harvest.log" >&2
    rm -f "$H/pid"
    exit 1
  fi
  echo "harvest: started pid $(cat "$H/pid") on commit ${commit:0:12} (log: .harvest/harvest.log)"
  ;;
stop)
  if ! running; then echo "harvest: not running"; exit 0; fi
  pid="$(cat "$H/pid")"
  kill -TERM "$pid"
  for ((i = 0; i < ${2:-300}; i++)); do
    running || { echo "harvest: stopped cleanly"; rm -f "$H/pid"; exit 0; }
    sleep 1
  done
  echo "harvest: still finishing its epoch after ${2:-300} s; sending a second signal"
  kill -TERM "$pid" 2>/dev/null || true
  sleep 5; running && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$H/pid"
  ;;
status)
  if running; then echo "harvest: running (pid $(cat "$H/pid"))"; else echo "harvest: not running"; fi
  [[ -f "$H/status.json" ]] && cat "$H/status.json" && echo
  [[ -f "$H/harvest.log" ]] && tail -n 5 "$H/harvest.log"
  ;;
*) echo "usage: tools/harvest.sh start [SECONDS] | stop [WAIT] | status" >&2; exit 2 ;;
esac
