#!/usr/bin/env bash
# The full reliability suite: 10 SIGKILLs per crash test, 5,000 records posted twice and drained
# three times, 50 clients for 60 s, every bad batch drop, outage, security.
# Usage: bench/reliability_full.sh [extra pytest args]   (about 5-10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
APPDATA_RELIABILITY_FULL=1 exec python -m pytest -m reliability -s -q -p no:cacheprovider \
  appdata_tests "$@" 2>&1 | grep -E '^\[reliability\]|^[0-9]+ (passed|failed)|^(FAILED|ERROR) '
