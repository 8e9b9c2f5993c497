#!/bin/sh
# Entrypoint of the Alpine image: runs the gateway and restarts it when it exits with an error, as the
# reference's Alpine image does (back-off SSH_PROXY_RESTART_DELAY seconds, default 1, doubling to 30 s,
# reset after a minute of uptime).
# SIGTERM/SIGINT go to the gateway, which drains (server.drainTimeout); the loop then exits with the
# gateway's status instead of restarting. SSH_PROXY_RESTART=0 turns the loop off (the gateway then runs
# as PID 1 directly); the Helm chart sets it, because Kubernetes restarts containers itself and counts it.
set -u
NODE=${SSH_PROXY_NODE:-/usr/local/bin/node}
APP=${SSH_PROXY_APP:-/app/dist/cli/ssh-proxy.js}

if [ "${SSH_PROXY_RESTART:-1}" = "0" ]; then
  exec "$NODE" "$APP" "$@"
fi

child=""
stopping=0
forward() {
  stopping=1
  if [ -n "$child" ]; then kill -s "$1" "$child" 2>/dev/null; fi
}
trap 'forward TERM' TERM
# (INT as TERM: a background job of a non-interactive shell starts with SIGINT ignored.)
trap 'forward TERM' INT

first_delay=${SSH_PROXY_RESTART_DELAY:-1}
delay=$first_delay
while :; do
  started=$(date +%s)
  "$NODE" "$APP" "$@" &
  child=$!
  wait "$child"
  status=$?
  # A trapped signal interrupts wait (status > 128) while the gateway is still draining: keep waiting.
  while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    status=$?
  done
  child=""
  if [ "$stopping" = 1 ] || [ "$status" = 0 ]; then
    exit "$status"
  fi
  if [ $(($(date +%s) - started)) -ge 60 ]; then delay=$first_delay; fi
  echo "ssh-proxy-entrypoint: ssh-proxy exited with status $status; restarting in ${delay}s" >&2
  # Sleep in the background so a signal during the back-off is handled at once.
  sleep "$delay" &
  child=$!
  # A signal that came before $child was set found nothing to kill: stop the sleep ourselves.
  if [ "$stopping" = 1 ]; then
    kill "$child" 2>/dev/null
    exit "$status"
  fi
  wait "$child"
  child=""
  if [ "$stopping" = 1 ]; then exit "$status"; fi
  delay=$((delay * 2))
  if [ "$delay" -gt 30 ]; then delay=30; fi
done
