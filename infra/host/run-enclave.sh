#!/usr/bin/env bash
# Launches this node's enclave and lives exactly as long as it runs. `ekv host --enclave-cmd` runs it and is
# its watchdog: when this script exits, the host launches it again (exponential backoff, bounded rate), and
# when the enclave stops answering health checks, the host stops this script (SIGTERM terminates the enclave).
#
# Each launch reads the release record from SSM (EKV_RELEASE_PARAM, written by CloudFormation: the images this
# deployment may run, host/release.ts) and runs the image this node was told to run (EKV_STATE_DIR/image-pcr0,
# set by `ekv-upgrade step`; absent or no longer named: the release's current image). The EIF is fetched from
# that image's artifacts and checked against its PCR0 before it runs: a wrong file is refused here rather than
# later, with a less obvious error, by KMS.
set -euo pipefail

state="${EKV_STATE_DIR:-/var/lib/ekv}"
name="${EKV_ENCLAVE_NAME:-ekv}"
: "${EKV_RELEASE_PARAM:?}" "${AWS_REGION:?}" "${EKV_ENCLAVE_CPU_COUNT:?}" "${EKV_ENCLAVE_MEMORY_MIB:?}" "${EKV_ENCLAVE_CID:?}"
bindir="$(dirname "$0")"

# 1. The release record: which images may run now.
aws ssm get-parameter --region "$AWS_REGION" --name "$EKV_RELEASE_PARAM" --query Parameter.Value --output text > "$state/release.json.tmp"
mv "$state/release.json.tmp" "$state/release.json"

# 2. This node's image.
selected="$(tr -d '[:space:]' < "$state/image-pcr0" 2>/dev/null || true)"
next="$(jq -r '.next.pcr0 // empty' "$state/release.json")"
if [ -n "$next" ] && [ "${selected,,}" = "$next" ]; then which=next; else which=current; fi
pcr0="$(jq -r ".${which}.pcr0" "$state/release.json")"
uri="$(jq -r ".${which}.artifactsUri" "$state/release.json")"
if ! [[ "$pcr0" =~ ^[0-9a-f]{96}$ ]]; then
  echo "run-enclave: the release record names no valid ${which} PCR0" >&2
  exit 1
fi

# 3. Its EIF, fetched once per image and checked before every launch.
mkdir -p "$state/eif"
eif="$state/eif/${pcr0}.eif"
if [ ! -f "$eif" ]; then
  aws s3 cp --region "$AWS_REGION" --only-show-errors "${uri}/ekv.eif" "$eif.tmp"
  mv "$eif.tmp" "$eif"
fi
"$bindir/check-eif.sh" "$eif" "$pcr0"

# 4. Run it in production mode (never in debug mode: its PCRs read as zeros and nobody trusts it), then watch it.
nitro-cli terminate-enclave --enclave-name "$name" >/dev/null 2>&1 || true
trap 'nitro-cli terminate-enclave --enclave-name "$name" >/dev/null 2>&1 || true' EXIT
trap 'exit 0' TERM INT
nitro-cli run-enclave --enclave-name "$name" --eif-path "$eif" \
  --cpu-count "$EKV_ENCLAVE_CPU_COUNT" --memory "$EKV_ENCLAVE_MEMORY_MIB" --enclave-cid "$EKV_ENCLAVE_CID" >/dev/null
echo "run-enclave: ${name} running image ${pcr0} (${which})"
while nitro-cli describe-enclaves | jq -e --arg n "$name" 'any(.[]; .EnclaveName == $n and .State == "RUNNING")' >/dev/null; do
  sleep "${EKV_ENCLAVE_POLL_S:-2}" &
  wait $!
done
echo "run-enclave: ${name} is no longer running" >&2
exit 1
