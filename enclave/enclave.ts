/**
 * One enclave node: its identity, its trust in peers, its partition, its
 * place on the ring, and the request handler behind the listener.
 */
import { X509Certificate } from 'node:crypto';
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
import { RequestTable, wireRequestId } from './cluster/requests.ts';
import { ClusterStore, wireIfVersion, type OpOptions } from './cluster/store.ts';
import type { EnclaveConfig, socketPaths } from './config.ts';
import { Partition } from './kv/partition.ts';
import { imageConfig, testAnyPullSource, testHostMayFound, testNoRingCheck, testSeamsOn } from './image-config.ts';
import { Persistence, sealConfigFrom } from './persist.ts';
import { requestKey, requestValue } from './kv/service.ts';
import type { Nsm } from './nsm.ts';
import { nodeIdFromPublicKey } from './ring/index.ts';
import { EnclaveServer, type CallerContext } from './server.ts';
import { learnSelfTrust, peerVerifier, type SelfTrust } from './trust.ts';
import { imageRecoveryPolicy, recoveryOps, startRecovery, type RecoveryGate } from './recovery/index.ts';
import type { Generation } from './recovery/generation.ts';

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
  // Trust-relevant settings are the image's, in both worlds (enclave/image-config.ts); so are the test seams.
  const seamsOn = testSeamsOn();
  if (seamsOn.length > 0) {
    if (trust.production) throw new EkvError('INTERNAL', `this image was built with test seams (${seamsOn.join(', ')}): refusing to run on Nitro`);
    c.logger.warn({ seams: seamsOn }, 'TEST SEAMS ON: this image has protections switched off (a test/attacks/ control image)');
  }
  if (testNoRingCheck) {
    ringChecks.connect = false;
    ringChecks.accept = false;
  }
  const settings = { replicas: imageConfig.replicas, accessMode: accessModeFromEnv(imageConfig.accessMode) };
  const sealing = sealConfigFrom(c.config.env, { production: trust.production, rootPem: new X509Certificate(trust.root).toString() });
  let persistence: Persistence | null = null;
  let identity: Identity;
  let ringCred: RingCredential | null = null;
  let founded: boolean;
  let discarded = false;
  let recoveredLog = false;
  let served = false;
  let sealedGeneration: Generation | null = null;
  let sealedPeers: string[] = [];
  if (sealing) {
    const opened = await Persistence.open({
      config: sealing, nsm: c.nsm, blobsSocket: c.paths.blobs, outboundSocket: c.paths.outbound, partition, requests, logger: c.logger,
      mayFound: c.config.join === null,
    });
    persistence = opened.persistence;
    identity = opened.recovered.identity;
    ringCred = opened.recovered.ring;
    founded = opened.recovered.founded;
    discarded = opened.recovered.reset !== null;
    recoveredLog = opened.recovered.lastSeq > 0;
    served = opened.recovered.served;
    sealedGeneration = opened.recovered.generation;
    sealedPeers = opened.recovered.peers;
  } else {
    // No KMS, so no ring secret: peers are trusted per image (docs/membership.md). Nothing survives a
    // restart, so every boot is a first boot and one with no join address founds.
    c.logger.warn('this image pins no KMS key: running without sealed persistence and without a ring secret (data is lost when the enclave stops)');
    identity = generateIdentity();
    founded = c.config.join === null;
  }
  const attest = (nonce: Uint8Array, publicKey: Uint8Array) => c.nsm.attest({ nonce, publicKey });
  const verifyPeer = peerVerifier(trust);
  const self = { id: nodeIdFromPublicKey(identity.publicKey), addr: c.config.selfAddr };

  const peers = new PeerPool({ outboundSocket: c.paths.outbound, identity, attest, verifyPeer, ring: ringCred, logger: c.logger });
  const ring = new RingDriver(self, peers, c.logger);
  // Only the node that founded its ring on this very boot (it holds nothing) serves at once, and a node
  // whose image says it runs alone (a single-node deployment, measured into PCR0) and whose sealed state
  // verified and is there at all: having discarded it, or finding its log gone while its data key and ring
  // secret remain (the host deleted it), a lone node has nothing true to say (NOT_FOUND would be a lie). Every
  // other node, whatever its host says (an empty join address, "solo"), has been a ring member: it serves
  // only after pulling its range from its successors, whose replicas hold every acknowledged write.
  const servesAtOnce = founded || (imageConfig.singleNode && !discarded && recoveredLog) || (testHostMayFound && c.config.join === null);
  const onFirstServing = persistence ? () => (persistence as Persistence).markServed() : undefined;
  const store = new ClusterStore(
    {
      partition, ring, peers, self, replicas: settings.replicas, logger: c.logger, requests,
      ...(persistence ? { durable: persistence } : {}), ...(onFirstServing ? { onFirstServing } : {}),
    },
    servesAtOnce,
    served,
  );
  store.anyPullSource = testAnyPullSource;

  // RECOVERY HOOK (issue 12, docs/recovery.md): on an image with recovery members, a member that finds no
  // live member of its ring serves nothing until k members sign its open (enclave/recovery/).
  const policy = imageRecoveryPolicy(imageConfig.recoveryMembers, imageConfig.recoveryThreshold);
  const recovery: RecoveryGate | null = policy && persistence && ringCred
    ? await startRecovery({
      policy, ring: ringCred, sealed: sealedGeneration, identityKey: identity.publicKey, persistence, partition, peers, join: c.config.join,
      self: c.config.selfAddr, sealedPeers, founded, serving: () => store.status().serving === true, logger: c.logger,
      neighbours: () => [...ring.core.successors.map((n) => n.addr), ...(ring.core.predecessor ? [ring.core.predecessor.addr] : [])],
    })
    : null;

  const handler = (op: string, req: Record<string, unknown>, ctx: CallerContext): Promise<RpcResult> | RpcResult => {
    // RECOVERY HOOK: recovery operations always; nothing else but status while in recovery mode.
    if (recovery && recoveryOps.has(op)) {
      if (op === 'rcvAlive' && !ctx.peer) throw new EkvError('FORBIDDEN', 'ring operations are for attested peer enclaves only');
      return recovery.handle(op, req);
    }
    if (recovery?.inRecovery && op !== 'status') recovery.refuse();
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
        return { ...store.status(), ringId: ringCred?.id ?? null, founded, ...(recovery ? { recovery: recovery.status() } : {}) };
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
  await recovery?.opened; // RECOVERY HOOK: in recovery mode, nothing joins or serves until the open
  // RECOVERY HOOK: a member whose host gave no join address joins through the live member it found.
  await joinWithRetry(ring, c.config.join ?? recovery?.liveVia ?? null, c.logger);
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
