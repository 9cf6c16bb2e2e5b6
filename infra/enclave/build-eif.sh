#!/usr/bin/env bash
# Builds the enclave image file and records its measurements.
#   infra/enclave/build-eif.sh            -> infra/ekv.eif, infra/build-enclave.json, infra/pcrs.json
#   EKV_OUT_DIR=/tmp/x build-eif.sh      -> the same into /tmp/x (eif-verify.mjs rebuilds there)
# Needs: git, node 20 + npm, docker with buildx (BuildKit >= 0.13 for rewrite-timestamp), nitro-cli at the
# version in infra/enclave/toolchain.json (its kernel and init blobs are part of the image: PCR1).
# Run on a clean checkout: uncommitted changes would change the PCRs without a commit to show for it.
set -euo pipefail

repo="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
cd "$repo"
out_dir="${EKV_OUT_DIR:-infra}"
tag="ekv-enclave:$(git rev-parse --short=12 HEAD)"

# One timestamp for everything the build stamps: the commit's.
SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)"
export SOURCE_DATE_EPOCH

# Every input pinned (base image digest, dated Debian snapshot, exact gcc, lockfiles), the NSM shim's source
# committed: a build whose inputs floated would give a PCR0 nobody else can reproduce.
node infra/enclave/check-pins.mjs --release

nitro_pin="$(node -p 'require("./infra/enclave/toolchain.json").nitroCli')"
nitro_have="$(nitro-cli --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1)"
if [ "$nitro_have" != "$nitro_pin" ]; then
  echo "build-eif: nitro-cli ${nitro_have:-?} is not the pinned ${nitro_pin} (infra/enclave/toolchain.json); its blobs would change PCR1" >&2
  exit 1
fi

if [ -n "$(git status --porcelain)" ]; then
  echo "build-eif: warning: the working tree has changes; these PCRs belong to no commit" >&2
fi

npm ci --no-audit --no-fund
# What the enclave must not take from its host is compiled into the bundle, and so into PCR0
# (enclave/image-config.ts): the sealing key's ARN (a key ARN, required on Nitro; pcrs.json records it), the peer PCR0 allowlist
# for rolling upgrades, the access mode and the replication factor.
: "${EKV_PINNED_KMS_KEY:?set EKV_PINNED_KMS_KEY to the ARN of the KMS key the enclaves seal under (the SealingKeyArn output of the keyOnly deploy; an alias is refused)}"
EKV_PINNED_PEER_PCR0S="$(node -e 'console.log(JSON.parse(require("fs").readFileSync("infra/enclave/peer-pcr0-allowlist.json","utf8")).join(","))')"
export EKV_PINNED_KMS_KEY EKV_PINNED_PEER_PCR0S
export EKV_PINNED_ACCESS_MODE="${EKV_PINNED_ACCESS_MODE:-closed}" EKV_PINNED_REPLICAS="${EKV_PINNED_REPLICAS:-3}"
# Accept peers of another image that prove the ring secret (which only images the key policy admits can open):
# what lets an image accept its successor during a roll (docs/deploy.md section 6). 0 to build without it.
export EKV_PINNED_RING_PEERS="${EKV_PINNED_RING_PEERS:-1}"
npm run build

docker buildx build --file infra/enclave/Dockerfile \
  --build-arg SOURCE_DATE_EPOCH \
  --output "type=docker,name=${tag},rewrite-timestamp=true" \
  .

mkdir -p "$out_dir"
nitro-cli build-enclave --docker-uri "$tag" --output-file "$out_dir/ekv.eif" > "$out_dir/build-enclave.json"
node infra/enclave/pcrs-from-build.mjs "$out_dir/build-enclave.json" "$out_dir/pcrs.json"
# What built it, beside the measurements: whoever rebuilds to compare PCRs uses the same.
node infra/enclave/build-info.mjs > "$out_dir/build-info.json" \
  --nitro-cli "$nitro_have" --docker "$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)" \
  --buildx "$(docker buildx version 2>/dev/null | awk '{print $2}' || echo unknown)"
sha384sum "$out_dir/ekv.eif" | tee "$out_dir/ekv.eif.sha384"
echo "build-eif: wrote $out_dir/ekv.eif and $out_dir/pcrs.json for commit $(git rev-parse HEAD)"
