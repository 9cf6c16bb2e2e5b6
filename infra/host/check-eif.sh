#!/usr/bin/env bash
# Refuses to launch an EIF whose PCR0 is not the expected one (the value the KMS key policy allows).
# Usage: check-eif.sh <eif-path> <expected-pcr0-hex>
set -euo pipefail
eif="$1"
expected="$2"
actual="$(nitro-cli describe-eif --eif-path "$eif" | jq -r '.Measurements.PCR0')"
if [ "${actual,,}" != "${expected,,}" ]; then
  echo "check-eif: ${eif} has PCR0 ${actual}, expected ${expected}" >&2
  exit 1
fi
echo "check-eif: ${eif} PCR0 ${actual}"
