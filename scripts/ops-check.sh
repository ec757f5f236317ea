#!/usr/bin/env bash
# Static checks of deploy/: systemd units (systemd-analyze verify against the built binary),
# Prometheus rules (promtool check rules + unit tests), Alertmanager config (amtool), the
# Grafana dashboard (valid JSON, every panel with a query).
# Usage: bash scripts/ops-check.sh [PATH-TO-varta-watch]   (default target/debug/varta-watch)
# Needs: systemd-analyze (systemd), promtool (Debian `prometheus`), amtool
# (`prometheus-alertmanager`), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=$(realpath "${1:-$root/target/debug/varta-watch}")
[ -x "$bin" ] || { echo "ops-check: no varta-watch binary at $bin (build it first)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "-- systemd-analyze verify (ExecStart rewritten to $bin)"
for u in deploy/systemd/*.service deploy/systemd/*.socket; do
    sed "s#/usr/local/bin/varta-watch#$bin#g" "$u" >"$tmp/$(basename "$u")"
done
# The unit must only use flags the binary has: run its ExecStart command line through the
# binary's own parser (`--help` after the flags parses them and exits without starting).
args=$(sed -n '/^ExecStart=/,/[^\\]$/p' "$tmp/varta-watch.service" | sed 's/^ExecStart=//; s/\\$//' | tr -s ' \n' ' ')
# shellcheck disable=SC2086 # word splitting of the unit's command line is intended
if ! out=$($args --help 2>&1 >/dev/null); then
    echo "ops-check: varta-watch refuses the unit's ExecStart flags: $out" >&2
    exit 1
fi
# verify warns about a missing `varta` user on hosts without it; only errors fail.
(cd "$tmp" && systemd-analyze verify --man=no ./varta-watch.socket ./varta-watch.service) 2>&1 | tee "$tmp/verify.log"
if grep -v -e 'User=varta' -e 'Group=varta' "$tmp/verify.log" | grep -q .; then
    echo "ops-check: systemd-analyze verify reported problems (above)" >&2
    exit 1
fi

# Beats queued in the socket while the observer restarts must carry SCM_CREDENTIALS (the
# observer refuses Unix datagrams without them): the socket unit must set SO_PASSCRED itself.
grep -q '^PassCredentials=yes$' deploy/systemd/varta-watch.socket || {
    echo "ops-check: deploy/systemd/varta-watch.socket lacks PassCredentials=yes" >&2
    exit 1
}

echo "-- sysctl fragment"
grep -Eq '^net\.unix\.max_dgram_qlen *= *[0-9]+$' deploy/sysctl/60-varta.conf

echo "-- promtool check rules / test rules"
promtool check rules deploy/prometheus/varta.rules.yml deploy/prometheus/upstream.rules.yml
promtool test rules deploy/prometheus/varta.rules.test.yml

echo "-- amtool check-config"
amtool check-config deploy/alertmanager/alertmanager.yml

echo "-- Grafana dashboard"
python3 - deploy/grafana/varta.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
panels = [p for p in d["panels"] if p.get("type") != "row"]
assert panels, "no panels"
for p in panels:
    exprs = [t.get("expr", "") for t in p.get("targets", [])]
    assert exprs and all(exprs), f"panel {p.get('title')!r} has no query"
print(f"{len(panels)} panels, each with a query")
PY
echo "ops-check: all deploy/ checks passed"
