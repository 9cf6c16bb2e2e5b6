#!/usr/bin/env bash
# One step of an image roll (docs/deploy.md, section 6, step 4): tell one node to run the image with this PCR0,
# restart its host (whose watchdog stops the enclave and launches it again, on that image), and wait until the
# node's /healthz answers 200 with that PCR0. Run it for one node at a time, and check with `ekv status` that
# every range is back at R copies before the next node.
# Usage: AWS_REGION=<region> infra/scripts/roll-node.sh <instance-id> <pcr0> <node-ip> [http-port]
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: AWS_REGION=<region> $0 <instance-id> <pcr0> <node-ip> [http-port]" >&2
  exit 2
fi
instance="$1"
pcr0="$2"
ip="$3"
port="${4:-8080}"
region="${AWS_REGION:?set AWS_REGION}"
if ! [[ "$pcr0" =~ ^[0-9a-f]{96}$ ]]; then
  echo "roll-node: the PCR0 must be 96 lowercase hex digits" >&2
  exit 2
fi

commands="[\"echo $pcr0 > /var/lib/ekv/image-pcr0\",\"chown ekv:ekv /var/lib/ekv/image-pcr0\",\"systemctl restart ekv-host\"]"
command_id="$(aws ssm send-command --region "$region" --instance-ids "$instance" --document-name AWS-RunShellScript \
  --comment "ekv roll to ${pcr0:0:12}" --parameters "commands=$commands" --query Command.CommandId --output text)"
aws ssm wait command-executed --region "$region" --command-id "$command_id" --instance-id "$instance"

deadline=$((SECONDS + ${EKV_ROLL_TIMEOUT_S:-900}))
until body="$(curl -sf --max-time 10 "http://$ip:$port/healthz")" && [ "$(jq -r .pcr0 <<<"$body")" = "$pcr0" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "roll-node: ${instance} is not serving image ${pcr0} (last /healthz: ${body:-none}); stop the roll" >&2
    exit 1
  fi
  sleep "${EKV_ROLL_POLL_S:-5}"
done
echo "roll-node: ${instance} (${ip}) serving image ${pcr0}"
