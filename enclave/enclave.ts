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
import { DataStore, enclaveDataConfig } from './cluster/data-store.ts';
import { catalogue, dispatch } from './cluster/ops.ts';
import { PeerPool } from './cluster/peers.ts';
import { aloneOnRing, rejoinWhenAlone } from './cluster/rejoin.ts';
import { RingDriver } from './cluster/ring-driver.ts';
import type { EnclaveConfig, socketPaths } from './config.ts';
import type { DataLog } from './data/index.ts';
import { imageConfig, testAnyPullSource, testHostMayFound, testNoRingCheck, testSeamsOn } from './image-config.ts';
import { Persistence, sealConfigFrom } from './persist.ts';
import { countAttestation, enclaveMetrics } from './metrics.ts';
import { clientOpNames, registerNodeMetrics } from './node-metrics.ts';
import type { Nsm } from './nsm.ts';
import { idToBytes, nodeIdFromPublicKey } from './ring/index.ts';
import { EnclaveServer, type Handler } from './server.ts';
import { HostChannel } from './host-channel.ts';
import { operatorCheck } from './cluster/status-view.ts';
import { learnSelfTrust, peerVerifier, type SelfTrust } from './trust.ts';
import { imageRecoveryPolicy, recoveryOps, startRecovery, watchNeighbours, type RecoveryGate } from './recovery/index.ts';
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
  data: DataStore;
  server: EnclaveServer;
  /**
   * `graceful`: leave first (the ranges start moving away; the node may come back with its sealed state).
   * `decommission`: leave for good (retire, docs/consistency.md "Retirement"): this sealed state never comes back
   * as this member.
   */
  stop(graceful: boolean, mode?: { decommission?: boolean }): Promise<void>;
}

/** Without sealing (a local `--no-seal` image) nothing survives a restart: the log only resolves appends. */
const memoryLog: DataLog = { append: async () => undefined, load: async () => [] };

const clientOps = new Set<string>(clientOpNames);

export async function startEnclave(c: EnclaveComponents): Promise<RunningEnclave> {
  const startedAt = Date.now();
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
  let sealedGeneration: Generation | null = null;
  let sealedPeers: string[] = [];
  if (sealing) {
    const opened = await Persistence.open({
      config: sealing, nsm: c.nsm, blobsSocket: c.paths.blobs, outboundSocket: c.paths.outbound, shards: enclaveDataConfig.shards, logger: c.logger,
      mayFound: c.config.join === null,
    });
    persistence = opened.persistence;
    identity = opened.recovered.identity;
    ringCred = opened.recovered.ring;
    founded = opened.recovered.founded;
    sealedGeneration = opened.recovered.generation; // RECOVERY HOOK
    sealedPeers = opened.recovered.peers;
  } else {
    // No KMS, so no ring secret: peers are trusted per image (docs/membership.md). Nothing survives a
    // restart, so every boot is a first boot and one with no join address founds.
    c.logger.warn('this image pins no KMS key: running without sealed persistence and without a ring secret (data is lost when the enclave stops)');
    identity = generateIdentity();
    founded = c.config.join === null;
  }
  const attest = (nonce: Uint8Array, publicKey: Uint8Array) => countAttestation(c.nsm.attest({ nonce, publicKey }));
  // ringPeers: the image's choice, and only with a ring whose secret the handshake makes peers prove.
  const verifyPeer = peerVerifier(trust, Date.now, undefined, {
    ringPeers: imageConfig.ringPeers === true && ringCred !== null && ringChecks.accept && ringChecks.connect,
  });
  const self = { id: nodeIdFromPublicKey(identity.publicKey), addr: c.config.selfAddr };

  const peers = new PeerPool({ outboundSocket: c.paths.outbound, identity, attest, verifyPeer, ring: ringCred, logger: c.logger });
  const ring = new RingDriver(self, peers, c.logger);
  // Authority over data comes only from the data core's decided configurations (docs/consistency.md): the node
  // that founded its ring on this very boot starts every range as [itself] at epoch 1; every other node has
  // its configurations in its sealed log, or learns them from its peers and is brought into ranges by
  // reconfiguration. Nothing the host says (an empty join address, "solo") makes a node own anything.
  const data = new DataStore({
    self, peers, ring, log: persistence ?? memoryLog,
    founded,
    // Test seams (control images of test/attacks/ only, refused on Nitro): a node the host starts without a join
    // address takes every range alone, as the old host-chosen "solo" or an unvouched pull would have let it.
    ...((testHostMayFound || testAnyPullSource) && c.config.join === null ? { seizeAll: true } : {}),
    replicas: settings.replicas,
    minMembers: imageConfig.singleNode || ((testHostMayFound || testAnyPullSource) && c.config.join === null) ? 1 : settings.replicas,
    logger: c.logger,
  });
  // The access check is built before the client path that uses it, and passed in (ops.ts).
  const access = new AccessService({ docs: data, peers, self, logger: c.logger }, { mode: settings.accessMode });
  // Keys, bytes and counters: in a closed ring only for the image's recovery members (cluster/status-view.ts).
  const policy = imageRecoveryPolicy(imageConfig.recoveryMembers, imageConfig.recoveryThreshold);
  const operator = operatorCheck(settings.accessMode, policy?.members.map((m) => m.bytes) ?? []);
  // Read at call time (after start-up): `recovery` is set below, before the server listens.
  const status = (): RpcResult => ({
    ...ringStatus(ring, self), ...data.status(), replicas: settings.replicas, ringId: ringCred?.id ?? null, founded,
    ...(recovery ? { recovery: recovery.status() } : {}),
  });
  const ops = catalogue({
    data, ring, access,
    // The same snapshot as the host channel's, here over an attested session (the dashboard), for operators.
    metrics: () => ({ m: enclaveMetrics.snapshot() }),
    status,
    operator,
    // The shared credential: a recovery open updates it in place (enclave/recovery/gate.ts).
    generation: () => ringCred?.generation ?? 0,
  });
  // RECOVERY HOOK (issue 12, docs/recovery.md): on an image with recovery members, a member that finds no
  // live member of its ring serves nothing until k members sign its open (enclave/recovery/). Decided before
  // the data core starts: in recovery mode the core is not started at all (it replays nothing, sends nothing,
  // takes no peer message, so it cannot vote, ack or serve for a generation nobody opened).
  // A live member (rcvAlive) is a node of this generation whose data core runs: it was opened (founded, found a
  // live member, or signed open) and the core's own fencing governs what it may vote, ack or serve. Readiness
  // (R members per range) is not asked: a ring still forming (one node of R) is alive.
  let coreRunning = false;
  const recovery: RecoveryGate | null = policy && persistence && ringCred
    ? await startRecovery({
      policy, ring: ringCred, sealed: sealedGeneration, identityKey: identity.publicKey, persistence, peers, join: c.config.join,
      self: c.config.selfAddr, sealedPeers, founded, logger: c.logger,
      // Review-15 F1: a live member is one whose core runs with its state proven, not one still checking it (an old
      // copy the host started beside the ring, then vouching for the other old copies it restarts after it).
      serving: () => coreRunning && data.provenMember,
      keys: () => data.status().keys as number,
      // On open (a new ring id in the shared credential): every peer session made at the old id re-handshakes. Only
      // called from an open, which arrives through the server below, so `server` exists by then.
      closePeerSessions: () => {
        peers.closeAll();
        server.closeStalePeerSessions();
      },
      neighbours: () => [...ring.core.successors.map((n) => n.addr), ...(ring.core.predecessor ? [ring.core.predecessor.addr] : [])],
    })
    : null;
  const opsHandler = dispatch(ops);
  const handler: Handler = (op, req, ctx) => {
    // RECOVERY HOOK: recovery operations always; nothing else but status while in recovery mode (no client data,
    // no ACL, and no ring / data-core / forwarded peer traffic).
    if (recovery && recoveryOps.has(op)) {
      if (op === 'rcvAlive' && !ctx.peer) throw new EkvError('FORBIDDEN', 'ring operations are for attested peer enclaves only');
      return recovery.handle(op, req);
    }
    if (recovery?.inRecovery && op !== 'status') recovery.refuse();
    return opsHandler(op, req, ctx);
  };
  registerNodeMetrics({ status, bytes: () => { const b = data.status().bytes; return typeof b === 'number' ? b : 0; }, startedAt, data: () => data.metrics() });
  const opLabel = (op: string) => (clientOps.has(op) || ops.has(op) || (recovery !== null && recoveryOps.has(op)) ? op : 'other');
  // No 'metrics' hello here: this socket is what the client and ring ports relay to (review-4 A1).
  const server = new EnclaveServer({ identity, attest, verifyPeer, verifyPrincipal: verifyPrincipalSignature, ring: ringCred }, handler, c.logger, { opLabel });
  // Decommission (docs/consistency.md, "Retirement"): leave, wait for the ranges to move, retire for good, then
  // leave the Chord ring. Asked by the host over its channel (Nitro: the enclave gets no signals) or, locally,
  // by SIGUSR2 to the enclave process. The node serves nothing afterwards; its host stops it.
  let decommissioned: Promise<{ retired: boolean; rangesStillNamingIt: number; heard: boolean }> | null = null;
  const decommission = (waitMs?: number) => (decommissioned ??= (async () => {
    c.logger.info({ waitMs }, 'decommission: leaving for good');
    const r = await data.decommission(waitMs);
    if (r.retired && r.heard) c.logger.info({ rangesStillNamingIt: r.rangesStillNamingIt }, 'decommissioned: this member retired for good, and its co-members know');
    else if (r.retired) c.logger.warn({ code: 'UNHEARD', rangesStillNamingIt: r.rangesStillNamingIt }, 'retired, but no co-member of some range naming it has echoed it yet: stopped now, it counts as a crash-stop there');
    else c.logger.warn({ code: 'REFUSED', rangesStillNamingIt: r.rangesStillNamingIt }, 'not retired: refused (a range naming this node would keep no majority, or the node is still checking its state or was superseded); it only left');
    await ring.leave();
    return r;
  })());
  const hostChannel = new HostChannel(() => enclaveMetrics.snapshot(), c.logger, decommission);
  await hostChannel.listen(c.paths.hostChannel);
  await server.listen(c.paths.inbound);
  // The data core replays its sealed log before the node enters the ring (status shows its state at once);
  // it talks to peers only as the ring and attested senders name them.
  await recovery?.opened; // RECOVERY HOOK: in recovery mode, the data core neither starts nor joins until the open
  await data.start();
  coreRunning = true;
  // Restarts (docs/membership.md): the ring's neighbours stay sealed as they change, and a node that finds itself
  // alone on the ring (no join address, or the ring re-formed without it) or stuck joining rejoins through them.
  // Hints only: a peer counts after the attested handshake, and data authority stays the core's configurations.
  const neighbours = (): string[] => [...ring.core.successors.map((n) => n.addr), ...(ring.core.predecessor ? [ring.core.predecessor.addr] : [])];
  if (persistence && !recovery) watchNeighbours({ sealedPeers, neighbours, self: c.config.selfAddr, persistence, logger: c.logger });
  const rejoin = persistence
    ? rejoinWhenAlone({ ring, peers, candidates: () => [...new Set([c.config.join ?? '', ...(persistence as Persistence).sealedPeers])].filter((a) => a !== ''), logger: c.logger })
    : null;
  // RECOVERY HOOK: a member whose host gave no join address joins through the live member it found.
  await joinWithRetry(ring, c.config.join ?? recovery?.liveVia ?? null, c.logger);
  return {
    nodeId: identity.publicKey.toString('hex'),
    identity,
    trust,
    data,
    server,
    async stop(graceful: boolean, mode?: { decommission?: boolean }) {
      if (mode?.decommission || decommissioned) {
        await decommission().catch((err: unknown) => c.logger.error({ err }, 'decommission failed'));
      } else if (graceful) {
        await data.leave().catch(() => undefined);
        // The leave messages go out before the peer connections are closed below (else a neighbour learns of the
        // leave only by failure detection).
        await ring.leave();
      }
      access.stop();
      data.stop();
      rejoin?.stop();
      ring.stop();
      peers.closeAll();
      await server.close();
      await hostChannel.close();
      await persistence?.close();
    },
  };
}

/** The ring part of `status`: where this node sits on the Chord ring (routing only; data authority is the core's). */
function ringStatus(ring: RingDriver, self: { id: bigint; addr: string }): Record<string, unknown> {
  const core = ring.core;
  const ref = (n: { id: bigint; addr: string } | null | undefined) => (n ? { id: idToBytes(n.id), addr: n.addr } : null);
  return {
    id: idToBytes(self.id),
    addr: self.addr,
    ring: core.status,
    predecessor: ref(core.predecessor),
    successors: core.successors.map(ref),
    lookups: ring.lookupsDone,
    hops: ring.hopsTotal,
  };
}

/**
 * Enter the ring through the join address, retrying for as long as it takes (every 500 ms, then backing off to
 * every 5 s; logged each time at first, then every tenth). It used to give up after 20 tries and exit, which
 * made a node whose join address was down (or refused it) die and be relaunched every ~10 s: status calls to
 * it failed with CLOSED in between, and nothing was gained (the host relaunches it with the same address).
 */
async function joinWithRetry(ring: RingDriver, join: string | null, logger: Logger): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    // Brought in meanwhile (a rejoin through a sealed neighbour, cluster/rejoin.ts): nothing more to do.
    if (attempt > 0 && !aloneOnRing(ring) && ring.core.status === 'active') return;
    try {
      await ring.start(join);
      if (attempt > 0) logger.info({ join, attempts: attempt + 1 }, 'joined the ring');
      return;
    } catch (err) {
      if (attempt < 20 || attempt % 10 === 0) logger.warn({ join, attempt, err: (err as Error).message }, 'cannot reach the join node yet; retrying');
      await new Promise((r) => setTimeout(r, attempt < 20 ? 500 : Math.min(5000, 500 * 2 ** Math.min(attempt - 20, 4))));
    }
  }
}
