/**
 * `ekv node`: one more emulated node (host + emulator + enclave) on this
 * machine, joining a running ring, or founding one with no --join.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { serviceLogger } from '../../emulator/service-log.ts';
import { loadCluster, type ClusterFile } from '../../client/cluster.ts';
import { EmulatorCa } from '../../emulator/ca.ts';
import { defaultImagePath, localImage, localImageSettings } from '../local/image.ts';
import { kmsEnv, localBlobStore, startLocalKms, type LocalKmsInfo } from '../local/kms.ts';
import { LocalNode } from '../local/node.ts';
import { provideRingSecret, writeJsonAtomic, type RingState } from '../local/ring.ts';
import { exitDecommissioned, firstSignal, run, UsageError } from '../output.ts';
import { decommissionLogged } from '../../host/enclave-metrics.ts';
import { defaultClusterFile, logLevelFlag, portFlag } from '../flags.ts';
import { EkvError } from '../../protocol/errors.ts';

interface NodeOpts {
  join?: string;
  dir: string;
  cluster: string;
  ca?: string;
  enclaveImage?: string;
  replicas: string;
  port: string;
  httpPort: string;
  logLevel: string;
  access: string;
  json?: boolean;
}

export function registerNode(program: Command): void {
  program
    .command('node')
    .description('start one emulated node (host + emulator + enclave) that joins a running ring')
    .option('--join <address>', 'a ring member (host:port) to join through; omitted: found a new ring')
    .option('-d, --dir <dir>', "this node's state directory", '.ekv-node')
    .option('-c, --cluster <file>', 'the ring\'s cluster file: its CA is used and this node is added to it', defaultClusterFile())
    .option('--ca <dir>', 'the emulated CA directory (default: ca/ beside the cluster file)')
    .option('--enclave-image <file>', "run exactly this enclave image (default: joining a ring of `ekv up`, that ring's image; else the image built for --access and --replicas, alone a single-node one)")
    .option('-r, --replicas <r>', 'replication factor, compiled into the image (must match the ring)', '3')
    .option('--port <port>', 'client/peer TCP port on 127.0.0.1 (0: any free port)', '0')
    .option('--http-port <port>', 'HTTP port (attestation, health, metrics)', '0')
    .option('--access <mode>', 'keys outside any namespace: open or closed, compiled into the image (must match the ring)', 'open')
    .option('--log-level <level>', 'log level: trace, debug, info, warn, error, fatal or silent (JSON lines on stderr, one svc field each; the enclave\'s own: EKV_ENCLAVE_LOG_LEVEL)', 'warn')
    .option('--json', 'print the ready line as JSON')
    .action(async (o: NodeOpts) =>
      run(o.json, async () => {
        const signal = firstSignal(['SIGUSR2']);
        const listenPort = portFlag(o.port, '--port');
        const httpPort = portFlag(o.httpPort, '--http-port');
        const replicas = Number(o.replicas);
        if (!Number.isInteger(replicas) || replicas < 1 || replicas > 8) throw new UsageError('--replicas must be 1..8');
        if (o.access !== 'open' && o.access !== 'closed') throw new UsageError('--access must be open or closed');
        // A decommissioned node stays down (its sealed state is retired for good: started, it would act in nothing).
        const marker = join(resolve(o.dir), 'decommissioned');
        if (existsSync(marker)) {
          process.stderr.write(`DECOMMISSIONED: this node was decommissioned (${marker}); use another --dir to run a new node\n`);
          process.exitCode = exitDecommissioned;
          return;
        }
        if (!existsSync(o.enclaveImage ?? defaultImagePath)) throw new UsageError(`no enclave image at ${o.enclaveImage ?? defaultImagePath}: run \`npm run build\` first`);
        // The ring's image (a node of another image is refused by its peers): the settings `ekv up` recorded in
        // ring.json beside the cluster file when joining such a ring, else those of --access and --replicas.
        const clusterPath = resolve(o.cluster);
        const ringFile = join(dirname(clusterPath), 'ring.json');
        const recorded = o.join && existsSync(ringFile) ? (JSON.parse(readFileSync(ringFile, 'utf8')) as RingState).image : undefined;
        const image = o.enclaveImage !== undefined && resolve(o.enclaveImage) !== defaultImagePath
          ? resolve(o.enclaveImage)
          : await localImage(recorded ?? localImageSettings({ access: o.access, replicas, nodes: o.join ? 2 : 1 }));
        const caDir = resolve(o.ca ?? join(dirname(clusterPath), 'ca'));
        if (!existsSync(caDir)) throw new UsageError(`no emulated CA at ${caDir}: pass --ca or --cluster of a ring started by ekv up`);
        const ca = await EmulatorCa.loadOrCreate(caDir);
        const logger = serviceLogger('ekv-node', logLevelFlag(o.logLevel));
        const statePath = join(resolve(o.dir), 'node.json');
        const prev = existsSync(statePath) ? (JSON.parse(readFileSync(statePath, 'utf8')) as { port: number; httpPort: number }) : null;
        // Seal through the ring's emulated KMS when `ekv up` left its address beside the cluster file;
        // a node founding a ring alone runs its own, keeping its keys in its directory.
        const kmsFile = join(dirname(clusterPath), 'kms.json');
        const ownKms = o.join && existsSync(kmsFile) ? null : await startLocalKms({ dir: resolve(o.dir), ca, imagePath: image, logger });
        const kmsInfo: LocalKmsInfo = ownKms ? ownKms.info : (JSON.parse(readFileSync(kmsFile, 'utf8')) as LocalKmsInfo);
        const node: LocalNode = new LocalNode({
          name: `node-${process.pid}`,
          dir: resolve(o.dir),
          imagePath: image,
          ca,
          listenPort: prev?.port ?? listenPort,
          httpPort: prev?.httpPort ?? httpPort,
          logger,
          enclaveEnv: (): Record<string, string> => ({ EKV_JOIN: o.join ?? '', ...kmsEnv(kmsInfo) }),
          startBlobStore: localBlobStore(logger),
          imdsUrl: kmsInfo.imdsUrl,
          onGiveUp: (err) => giveUp(err),
        });
        let giveUp: (err: Error) => void = () => undefined;
        const gaveUp = new Promise<Error>((r) => (giveUp = r));
        // A joining node needs the ring's ring-secret (KMS ciphertext, which `ekv up` leaves beside the cluster
        // file): only KMS can open it, and only for the measured image (docs/membership.md).
        if (o.join) provideRingSecret(dirname(clusterPath), join(resolve(o.dir), 'data'));
        process.stderr.write(`ekv node: starting${o.join ? `, joining through ${o.join}` : ''}\n`);
        // The first Ctrl-C stops a node still starting (an enclave the KMS refuses is retried a few times first).
        const started = await Promise.race([
          node.start().then(() => null, (err: unknown) => err as Error),
          signal,
        ]);
        if (started !== null) {
          await node.stop();
          await ownKms?.close();
          if (started instanceof Error) throw new EkvError('UNAVAILABLE', started.message);
          process.stderr.write(`ekv node: ${started} while starting: stopped\n`);
          return;
        }
        writeJsonAtomic(statePath, { port: node.host.port, httpPort: node.host.httpPort });
        if (existsSync(clusterPath)) {
          const c: ClusterFile = loadCluster(clusterPath);
          if (!c.nodes.some((n) => n.addr === node.addr)) {
            c.nodes.push({ addr: node.addr, http: node.http });
            writeJsonAtomic(clusterPath, c);
          }
        }
        const ready = { ok: true, addr: node.addr, http: node.http, pids: node.pids() };
        process.stdout.write(o.json ? JSON.stringify(ready) + '\n' : `ready: node ${node.addr} (${node.http}), enclave pid ${ready.pids.enclave}\n`);
        const ended = await Promise.race([signal, gaveUp]);
        if (ended instanceof Error) {
          // The enclave died and could not be started again: stop for good, and say why.
          await node.stop();
          await ownKms?.close();
          throw new EkvError('UNAVAILABLE', ended.message);
        }
        if (ended === 'SIGUSR2') {
          // Decommission (docs/consistency.md, "Retirement"): leave for good, so that co-members never wait for it.
          process.stderr.write('ekv node: SIGUSR2: decommissioning (leaving the ring for good)\n');
          const r = await decommissionLogged(() => node.decommission(), logger);
          if (r?.retired) writeFileSync(marker, JSON.stringify({ decommissionedAt: new Date().toISOString() }) + '\n', { mode: 0o600 });
          process.stderr.write(r === null
            ? 'ekv node: the decommission failed (see the log): stopping anyway\n'
            : r.retired
              ? `ekv node: retired for good (${r.rangesStillNamingIt} ranges still named it; its co-members will not wait for it)\n`
              : `ekv node: REFUSED: not retired (${r.rangesStillNamingIt} ranges naming it have fewer than three members: its data would go with it); it only left\n`);
        } else process.stderr.write(`ekv node: ${ended}: stopping (leaving the ring)\n`);
        await node.stop();
        await ownKms?.close();
        // It left gracefully (its enclave handed its keys off on SIGTERM): it is no longer a member, so it no
        // longer belongs in the cluster file (`ekv status` would report it down forever).
        if (existsSync(clusterPath)) {
          const c: ClusterFile = loadCluster(clusterPath);
          const rest = c.nodes.filter((n) => n.addr !== node.addr);
          if (rest.length > 0 && rest.length < c.nodes.length) writeJsonAtomic(clusterPath, { ...c, nodes: rest });
        }
      }),
    );
}
