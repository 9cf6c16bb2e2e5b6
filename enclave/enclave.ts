/**
 * One enclave node: its identity, its trust in peers, its partition, its
 * place on the ring, and the request handler behind the listener.
 */
import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { EkvError } from '../protocol/errors.ts';
import { verifyPrincipalSignature } from '../protocol/principal.ts';
import { generateIdentity, type Identity } from '../protocol/keys.ts';
import type { RpcResult } from '../protocol/rpc.ts';
import { AccessService, accessModeFromEnv } from './access/index.ts';
import { PeerPool } from './cluster/peers.ts';
import { RingDriver } from './cluster/ring-driver.ts';
import { RequestTable, wireRequestId } from './cluster/requests.ts';
import { ClusterStore, wireIfVersion, type OpOptions } from './cluster/store.ts';
import type { EnclaveConfig, socketPaths } from './config.ts';
import { Partition } from './kv/partition.ts';
import { imageConfig } from './image-config.ts';
import { Persistence, sealConfigFrom } from './persist.ts';
import { requestKey, requestValue } from './kv/service.ts';
import type { Nsm } from './nsm.ts';
import { nodeIdFromPublicKey } from './ring/index.ts';
import { EnclaveServer, type CallerContext } from './server.ts';
import { learnSelfTrust, peerVerifier, type SelfTrust } from './trust.ts';

export interface EnclaveComponents {
  nsm: Nsm;
  logger: Logger;
  paths: ReturnType<typeof socketPaths>;
  config: EnclaveConfig;
}

export interface RunningEnclave {
  nodeId: string;
  identity: Identity;
  trust: SelfTrust;
  partition: Partition;
  store: ClusterStore;
  server: EnclaveServer;
  stop(graceful: boolean): Promise<void>;
}

const peerOps = new Set(['ring', 'fwd', 'rep', 'pull', 'owns']);

export async function startEnclave(c: EnclaveComponents): Promise<RunningEnclave> {
  const partition = new Partition();
  const requests = new RequestTable();
  const trust = await learnSelfTrust(c.nsm);
  // Trust-relevant settings are the image's, in both worlds (enclave/image-config.ts).
  const settings = { replicas: imageConfig.replicas, accessMode: accessModeFromEnv(imageConfig.accessMode) };
  const sealing = sealConfigFrom(c.config.env, { production: trust.production, rootPem: new X509Certificate(trust.root).toString() });
  let persistence: Persistence | null = null;
  let identity: Identity;
  let recoveredEntries = 0;
  if (sealing) {
    const opened = await Persistence.open({
      config: sealing, nsm: c.nsm, blobsSocket: c.paths.blobs, outboundSocket: c.paths.outbound, partition, requests, logger: c.logger,
    });
    persistence = opened.persistence;
    identity = opened.recovered.identity;
    recoveredEntries = opened.recovered.entries;
  } else {
    c.logger.warn('this image pins no KMS key: running without sealed persistence (data is lost when the enclave stops)');
    identity = generateIdentity();
  }
  const attest = (nonce: Uint8Array, publicKey: Uint8Array) => c.nsm.attest({ nonce, publicKey });
  const verifyPeer = peerVerifier(trust);
  const self = { id: nodeIdFromPublicKey(identity.publicKey), addr: c.config.selfAddr };

  const peers = new PeerPool({ outboundSocket: c.paths.outbound, identity, attest, verifyPeer, logger: c.logger });
  const ring = new RingDriver(self, peers, c.logger);
  // A node that joins an existing ring serves only after pulling its range from its successor, whose
  // replicas hold every acknowledged write. So does a node that founds a ring with recovered sealed data
  // (the host may have rolled it back): it waits for the ring to form and reconciles with its successor.
  // Only a node that is alone by design (an image built for a one-node deployment) serves its sealed state at once.
  const solo = imageConfig.singleNode;
  const servesAtOnce = c.config.join === null && (recoveredEntries === 0 || solo);
  const store = new ClusterStore(
    { partition, ring, peers, self, replicas: settings.replicas, logger: c.logger, requests, ...(persistence ? { durable: persistence } : {}) },
    servesAtOnce,
  );

  const handler = (op: string, req: Record<string, unknown>, ctx: CallerContext): Promise<RpcResult> | RpcResult => {
    switch (op) {
      case 'get':
        return store.clientOp('get', clientKey(req), null, { principal: ctx.principal, hops: 0 });
      case 'put':
        return store.clientOp('put', clientKey(req), requestValue(req), writeOptions(req, ctx));
      case 'del':
        return store.clientOp('del', clientKey(req), null, writeOptions(req, ctx));
      case 'route':
        return store.routeStep(requestKey(req));
      case 'status':
        return store.status();
    }
    // ACCESS-CONTROL HOOK (issue 7): namespace/ACL/group operations are dispatched here.
    if (access.handles(op)) return access.handle(op, req, ctx);
    if (peerOps.has(op)) {
      if (!ctx.peer) throw new EkvError('FORBIDDEN', 'ring operations are for attested peer enclaves only');
      return store.peerOp(op, req, ctx.peer.key);
    }
    throw new EkvError('BAD_REQUEST', `unknown operation ${op.slice(0, 32)}`);
  };

  // ACCESS-CONTROL HOOK (issue 7): set store.access here.
  const access = new AccessService({ store, ring, peers, partition, self, logger: c.logger }, { mode: settings.accessMode });
  store.access = access;
  const server = new EnclaveServer({ identity, attest, verifyPeer, verifyPrincipal: verifyPrincipalSignature }, handler, c.logger);
  await server.listen(c.paths.inbound);
  await joinWithRetry(ring, c.config.join, c.logger);
  store.start();
  return {
    nodeId: identity.publicKey.toString('hex'),
    identity,
    trust,
    partition,
    store,
    server,
    async stop(graceful: boolean) {
      if (graceful) await store.leave().catch(() => undefined);
      access.stop();
      store.stop();
      ring.stop();
      peers.closeAll();
      await server.close();
      await persistence?.close();
    },
  };
}

/** A client write's options: its request id (r: [session, seq]) and compare-and-set version (iv), both optional. */
function writeOptions(req: Record<string, unknown>, ctx: CallerContext): OpOptions {
  return { principal: ctx.principal, hops: 0, rid: wireRequestId(req.r), ...(req.iv === undefined ? {} : { ifVersion: wireIfVersion(req.iv) }) };
}

/** Keys starting with 0x00 are reserved for the enclave's own documents (ACLs, groups). */
function clientKey(req: Record<string, unknown>): Buffer {
  const key = requestKey(req);
  if (key[0] === 0) throw new EkvError('FORBIDDEN', 'reserved key');
  return key;
}

async function joinWithRetry(ring: RingDriver, join: string | null, logger: Logger): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await ring.start(join);
      return;
    } catch (err) {
      if (attempt >= 20) throw err;
      logger.warn({ join, err: (err as Error).message }, 'cannot reach the join node yet; retrying');
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
