#!/bin/sh
# PID 1 of the enclave: bring up lo, bridge vsock ports to the unix sockets our code speaks, then
# run the enclave. The enclave has no network interface: every byte in or out crosses one of these.
#   in:  vsock :5000            -> /run/ekv/vsock/enclave-5000.sock (clients, peers, attestation fetch)
#        vsock :5001            -> /run/ekv/vsock/enclave-5001.sock (the host's own channel: the metrics hello only;
#                                  no port of the parent relays to it, enclave/host-channel.ts)
#   out: host-8000.sock -> vsock 3:8000 (the host's outbound relay: EKV-CONNECT <host>:<port>)
#        host-8001.sock -> vsock 3:8001 (the host's sealed-blob store)
#        host-8002.sock -> vsock 3:8002 (the parent's vsock-proxy to the regional KMS endpoint)
#   logs: stdout+stderr -> vsock 3:8003 (journald on the parent). Never the console: in a
#         production enclave a full console buffer blocks the writer, and Node's event loop with it.
set -eu
dir="${EKV_VSOCK_DIR:-/run/ekv/vsock}"
parent_cid=3

# Connections (docs/architecture.md "Connections and the in-enclave socat"): socat forks a child per vsock
# connection before node can refuse it, ~512 KiB each with its buffers (enclave/admission.ts connectionBytes).
# connections = a quarter of MemTotal over 512 KiB, within [512, 8192]: the same formula as node's connectionsMax
# (admission.ts connectionsFor; test/connection-bound.test.ts checks they agree). socat may fork a margin of 64 more
# (connections node has closed, children not yet reaped); past that it stops accepting, and further connections
# wait in the kernel's listen backlog until a child exits. The host channel (:5001) gets 16.
mem_kib=$(awk '$1 == "MemTotal:" { print $2 }' "${EKV_MEMINFO:-/proc/meminfo}")
connections=$((mem_kib / 2048))
[ "$connections" -ge 512 ] || connections=512
[ "$connections" -le 8192 ] || connections=8192
children_5000=$((connections + 64))
children_5001=16
if [ "${1:-}" = "--limits" ]; then
  echo "connections=$connections children_5000=$children_5000 children_5001=$children_5001"
  exit 0
fi

ip link set lo up
mkdir -p "$dir"
chmod 0700 "$dir"

socat "VSOCK-LISTEN:5000,fork,reuseaddr,max-children=$children_5000" "UNIX-CONNECT:$dir/enclave-5000.sock" &
socat "VSOCK-LISTEN:5001,fork,reuseaddr,max-children=$children_5001" "UNIX-CONNECT:$dir/enclave-5001.sock" &
for port in 8000 8001 8002; do
  rm -f "$dir/host-$port.sock"
  socat "UNIX-LISTEN:$dir/host-$port.sock,fork,mode=0600" "VSOCK-CONNECT:$parent_cid:$port" &
done

# The enclave restarts in place if it exits (its state comes back from the sealed store). If the
# parent's log listener is gone, the logs are drained rather than left to block the enclave.
while :; do
  node /app/enclave.mjs || echo "ekv-entrypoint: enclave exited with status $?, restarting"
  sleep 1
done 2>&1 | { socat -u STDIN "VSOCK-CONNECT:$parent_cid:8003,retry=30,interval=1" || cat >/dev/null; }
