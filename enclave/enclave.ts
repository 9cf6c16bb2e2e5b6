/**
 * One enclave node: its identity, its trust in peers, its partition, its
 * place on the ring, and the request handler behind the listener.
 */
import type { Logger } from 'pino';
import { EkvError } from '../protocol/errors.ts';
import { verifyPrincipalSignature } from '../protocol/principal.ts';
import { ringChecks } from '../protocol/handshake.ts';
import { generateIdentity, type Identity } from '../protocol/keys.ts';
import type { RingCredential } from '../protocol/ring.ts';
import type { RpcResult } from '../protocol/rpc.ts';
import { AccessService, accessModeFromEnv } from './access/index.ts';
import { PeerPool } from './cluster/peers.ts';
import { RingDriver } from './cluster/ring-driver.ts';
import { ClusterStore } from './cluster/store.ts';
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
  const trust = await learnSelfTrust(c.nsm);
  const settings = effectiveSettings(c.config, trust.production);
  const sealing = sealConfigFrom(c.config.env, trust.production);
  const seams = testSeams(c.config.env, trust.production, c.logger);
  let persistence: Persistence | null = null;
  let identity: Identity;
  let ringCred: RingCredential | null = null;
  let founded: boolean;
  let discarded = false;
  let served = false;
  if (sealing) {
    const opened = await Persistence.open({
      config: sealing, nsm: c.nsm, blobsSocket: c.paths.blobs, outboundSocket: c.paths.outbound, partition, logger: c.logger,
      mayFound: c.config.join === null,
    });
    persistence = opened.persistence;
    identity = opened.recovered.identity;
    ringCred = opened.recovered.ring;
    founded = opened.recovered.founded;
    discarded = opened.recovered.reset !== null;
    served = opened.recovered.served;
  } else {
    // No KMS, so no ring secret: peers are trusted per image (docs/membership.md). Nothing survives a
    // restart, so every boot is a first boot and one with no join address founds.
    c.logger.warn('no EKV_KMS_KEY_ID: running without sealed persistence and without a ring secret (data is lost when the enclave stops)');
    identity = generateIdentity();
    founded = c.config.join === null;
  }
  const attest = (nonce: Uint8Array, publicKey: Uint8Array) => c.nsm.attest({ nonce, publicKey });
  const verifyPeer = peerVerifier(trust);
  const self = { id: nodeIdFromPublicKey(identity.publicKey), addr: c.config.selfAddr };

  const peers = new PeerPool({ outboundSocket: c.paths.outbound, identity, attest, verifyPeer, ring: ringCred, logger: c.logger });
  const ring = new RingDriver(self, peers, c.logger);
  const onApply = persistence ? (k: Buffer, v: Buffer | null, n: number) => (persistence as Persistence).record(k, v, n) : undefined;
  // Only the node that founded its ring on this very boot (it holds nothing) serves at once, and a node
  // whose image says it runs alone (a single-node deployment, measured into PCR0) and whose sealed state
  // verified: having discarded it, a lone node has nothing true to say (NOT_FOUND would be a lie). Every
  // other node, whatever its host says (an empty join address, "solo"), has been a ring member: it serves
  // only after pulling its range from its successors, whose replicas hold every acknowledged write.
  const servesAtOnce = founded || (imageConfig.singleNode && !discarded) || (seams.hostMayFound && c.config.join === null);
  const onFirstServing = persistence ? () => (persistence as Persistence).markServed() : undefined;
  const store = new ClusterStore(
    { partition, ring, peers, self, replicas: settings.replicas, logger: c.logger, ...(onApply ? { onApply, onFirstServing } : {}) },
    servesAtOnce,
    served,
  );
  store.anyPullSource = seams.anyPullSource;

  const handler = (op: string, req: Record<string, unknown>, ctx: CallerContext): Promise<RpcResult> | RpcResult => {
    switch (op) {
      case 'get':
        return store.clientOp('get', clientKey(req), null, { principal: ctx.principal, hops: 0 });
      case 'put':
        return store.clientOp('put', clientKey(req), requestValue(req), { principal: ctx.principal, hops: 0 });
      case 'del':
        return store.clientOp('del', clientKey(req), null, { principal: ctx.principal, hops: 0 });
      case 'route':
        return store.routeStep(requestKey(req));
      case 'status':
        return { ...store.status(), ringId: ringCred?.id ?? null, founded };
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
  const server = new EnclaveServer({ identity, attest, verifyPeer, verifyPrincipal: verifyPrincipalSignature, ring: ringCred }, handler, c.logger);
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

/** Production takes its security settings from the image; the emulated world from the environment. */
function effectiveSettings(config: EnclaveConfig, production: boolean): { replicas: number; accessMode: 'open' | 'closed' } {
  if (production) return { replicas: imageConfig.replicas, accessMode: accessModeFromEnv(imageConfig.accessMode) };
  return { replicas: config.replicas, accessMode: accessModeFromEnv(config.env.EKV_ACCESS_MODE) };
}

/**
 * Test-only seams (EKV_TEST_SEAM, comma-separated), honoured only under the emulator's root, never on Nitro:
 * they switch a protection off so that each attack test has a control showing it catches the hole.
 * - host-may-found: a node with no join address serves at once (the old EKV_SOLO behaviour);
 * - no-ring-check: the handshake skips ring ids and MACs;
 * - any-pull-source: a pulling node serves even when no source vouched for its range.
 */
function testSeams(env: NodeJS.ProcessEnv, production: boolean, logger: Logger): { hostMayFound: boolean; anyPullSource: boolean } {
  const names = (env.EKV_TEST_SEAM ?? '').split(',').filter(Boolean);
  if (production || names.length === 0) return { hostMayFound: false, anyPullSource: false };
  logger.warn({ seams: names }, 'TEST SEAMS ON: protections switched off (emulator only)');
  if (names.includes('no-ring-check')) {
    ringChecks.connect = false;
    ringChecks.accept = false;
  }
  return { hostMayFound: names.includes('host-may-found'), anyPullSource: names.includes('any-pull-source') };
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
