#!/usr/bin/env bash
# Static checks of the Prometheus files with promtool (Debian package
# "prometheus"): config syntax, alert rule syntax, alert rule unit tests.
# Without promtool it skips, except under CI=true where it fails.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v promtool >/dev/null 2>&1; then
	msg="promtool not found (apt-get install -y --no-install-recommends prometheus)"
	if [ "${CI:-}" = "true" ]; then
		echo "FAIL: $msg" >&2
		exit 1
	fi
	echo "SKIP: $msg" >&2
	exit 0
fi
promtool check config prometheus.yml
promtool check rules alerts.yml
promtool test rules alerts_test.yml
