#!/usr/bin/env bash
# Quickstart, second command (`npm test`): set up what is missing, then run the unit and
# integration suites. The last line is `N passed, N failed` (CI reads it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
report=$(mktemp /tmp/paddock-jest.XXXXXX.json)
trap 'rm -f "$report"' EXIT
set +e
# One test file at a time: integration tests boot VMs under TCG on 2 cores.
npx jest --ci --runInBand --json --outputFile="$report" "$@"
status=$?
set -e
node -e '
  const r = require(process.argv[1]);
  const erroredSuites = r.testResults.filter((s) => s.status === "failed" && s.assertionResults.length === 0).length;
  const failed = r.numFailedTests + erroredSuites;
  console.log(`${r.numPassedTests} passed, ${failed} failed${r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""}`);
' "$report"
exit $status
