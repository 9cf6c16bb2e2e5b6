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
import { AccessService, accessModeFromEnv } from './access/index.ts';
import { DataStore, enclaveDataConfig } from './cluster/data-store.ts';
import { catalogue, dispatch } from './cluster/ops.ts';
import { PeerPool } from './cluster/peers.ts';
import { RingDriver } from './cluster/ring-driver.ts';
import type { EnclaveConfig, socketPaths } from './config.ts';
import type { DataLog } from './data/index.ts';
import { imageConfig, testAnyPullSource, testHostMayFound, testNoRingCheck, testSeamsOn } from './image-config.ts';
import { Persistence, sealConfigFrom } from './persist.ts';
import { countAttestation, enclaveMetrics } from './metrics.ts';
import { clientOpNames, registerNodeMetrics } from './node-metrics.ts';
import type { Nsm } from './nsm.ts';
import { idToBytes, nodeIdFromPublicKey } from './ring/index.ts';
import { EnclaveServer } from './server.ts';
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
  data: DataStore;
  server: EnclaveServer;
  stop(graceful: boolean): Promise<void>;
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
  if (sealing) {
    const opened = await Persistence.open({
      config: sealing, nsm: c.nsm, blobsSocket: c.paths.blobs, outboundSocket: c.paths.outbound, shards: enclaveDataConfig.shards, logger: c.logger,
      mayFound: c.config.join === null,
    });
    persistence = opened.persistence;
    identity = opened.recovered.identity;
    ringCred = opened.recovered.ring;
    founded = opened.recovered.founded;
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
  const status = () => ({ ...ringStatus(ring, self), ...data.status(), replicas: settings.replicas, ringId: ringCred?.id ?? null, founded });
  const ops = catalogue({
    data, ring, access, status,
    // The same snapshot as the host's 'metrics' hello, here over an attested session (the dashboard).
    metrics: () => ({ m: enclaveMetrics.snapshot() }),
  });
  const handler = dispatch(ops);
  registerNodeMetrics({ status, bytes: () => { const b = data.status().bytes; return typeof b === 'number' ? b : 0; }, startedAt });
  const opLabel = (op: string) => (clientOps.has(op) || ops.has(op) ? op : 'other');
  const server = new EnclaveServer({ identity, attest, verifyPeer, verifyPrincipal: verifyPrincipalSignature, ring: ringCred }, handler, c.logger, {
    metricsSnapshot: () => enclaveMetrics.snapshot(),
    opLabel,
  });
  await server.listen(c.paths.inbound);
  // The data core replays its sealed log before the node enters the ring (status shows its state at once);
  // it talks to peers only as the ring and attested senders name them.
  await data.start();
  await joinWithRetry(ring, c.config.join, c.logger);
  return {
    nodeId: identity.publicKey.toString('hex'),
    identity,
    trust,
    data,
    server,
    async stop(graceful: boolean) {
      if (graceful) {
        await data.leave().catch(() => undefined);
        ring.leave();
      }
      access.stop();
      data.stop();
      ring.stop();
      peers.closeAll();
      await server.close();
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
