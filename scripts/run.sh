#!/bin/bash
# run.sh start|stop|status: the demo (private Redis + chatd + httpd with
# mod_bosh) under ./run. `make run` / `make stop` call this.
# HTTP_PORT (default 8080) and XMPP_PORT (default 5222) move the ports;
# MPM=event|worker|prefork picks httpd's MPM.
# The work is done by scripts/chatstack.py, shared with the integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-start}
exec /usr/bin/python3 scripts/chatstack.py "$action" --dir "$PWD/run"
