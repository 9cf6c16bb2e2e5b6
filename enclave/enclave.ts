/**
 * One enclave node: its identity, its trust in peers, its partition, and the
 * request handler behind the listener.
 */
import type { Logger } from 'pino';
import { EkvError } from '../protocol/errors.ts';
import { generateIdentity, type Identity } from '../protocol/keys.ts';
import type { RpcResult } from '../protocol/rpc.ts';
import { Partition } from './kv/partition.ts';
import { localDelete, localGet, localPut, requestKey, requestValue } from './kv/service.ts';
import type { Nsm } from './nsm.ts';
import { EnclaveServer, type CallerContext } from './server.ts';
import { learnSelfTrust, peerVerifier, type SelfTrust } from './trust.ts';
import type { socketPaths } from './config.ts';

export interface EnclaveComponents {
  nsm: Nsm;
  logger: Logger;
  paths: ReturnType<typeof socketPaths>;
  env: NodeJS.ProcessEnv;
}

export interface RunningEnclave {
  nodeId: string;
  identity: Identity;
  trust: SelfTrust;
  partition: Partition;
  server: EnclaveServer;
  stop(): Promise<void>;
}

export async function startEnclave(c: EnclaveComponents): Promise<RunningEnclave> {
  const identity = generateIdentity();
  const trust = await learnSelfTrust(c.nsm, identity.publicKey);
  const partition = new Partition();
  const attest = (nonce: Uint8Array, publicKey: Uint8Array) => c.nsm.attest({ nonce, publicKey });

  const handler = (op: string, req: Record<string, unknown>, _ctx: CallerContext): RpcResult => {
    switch (op) {
      case 'get':
        return localGet(partition, requestKey(req));
      case 'put':
        return localPut(partition, requestKey(req), requestValue(req));
      case 'del':
        return localDelete(partition, requestKey(req));
      case 'info':
        return { id: identity.publicKey, keys: partition.size };
      default:
        throw new EkvError('BAD_REQUEST', `unknown operation ${op.slice(0, 32)}`);
    }
  };

  const server = new EnclaveServer(
    { identity, attest, verifyPeer: peerVerifier(trust), verifyPrincipal: () => false },
    handler,
    c.logger,
  );
  await server.listen(c.paths.inbound);
  return {
    nodeId: identity.publicKey.toString('hex'),
    identity,
    trust,
    partition,
    server,
    stop: () => server.close(),
  };
}
