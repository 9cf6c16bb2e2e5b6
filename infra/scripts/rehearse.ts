/**
 * `npm run rehearse` (infra/scripts/rehearse.ts): the production boot path of a 3-node deployment, on this machine, with only the hardware
 * seams emulated. What runs is what an instance runs:
 *
 * - each node's host is `ekv host` with the command line of infra/host/ekv-host.service (its ${VARS} filled as
 *   the user data fills /etc/ekv/ekv.env), plus only what differs on loopback: the bind address, the emulated
 *   IMDS's URL, the emulator's root for health checks, and the outbound range (127.0.0.0/8 stands for the VPC);
 * - the host launches the enclave and is its watchdog (--enclave-cmd): `ekv emulate-enclave --release` makes the
 *   choice run-enclave.sh makes (the release record's image for this node, checked against its PCR0) and runs it
 *   on the emulated TEE with the image's production environment (EKV_CONFIG_FROM_HOST, KMS through the
 *   vsock-proxy's socket);
 * - the image is built by scripts/build-enclave.mjs with the settings compiled in (key ARN, R, access mode);
 * - the emulated KMS enforces the key policy of the synthesized CloudFormation template (infra/, the same
 *   `buildApp` as `cdk deploy`), and its release parameter is what the nodes read;
 * - an emulated IMDS hands out rotating role credentials (IMDSv2), which the hosts pass to their enclaves;
 * - the client's cluster file comes from `ekv cluster init` on stack outputs shaped as the template's.
 *
 * Seams: nitro-cli (the emulated TEE), socat (the unix sockets the bridges would connect; the ring port's socat
 * is the client port's relay, both reach enclave-5000), vsock-proxy (a unix-to-TCP forwarder to the emulated
 * KMS), SSM and S3 (files), IMDS and KMS (emulated).
 *
 * Then: first boot (the three nodes started at once, as a first deploy starts its instances: with R = 3 a lone
 * founder never serves, so nothing waits for node 0 alone), a client, kill -9 of an enclave under a writer (watchdog, health red then green, no
 * acknowledged write lost), a credentials rotation, and a node told to run an image the key policy does not
 * admit yet (refused by KMS, says why, the ring keeps serving; back on the admitted image it recovers).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { buildApp } from '../bin/app.ts';
import { defaultImagePath, localImage, localImageSettings } from '../../cli/local/image.ts';
import { connect, type EkvClient } from '../../client/index.ts';
import { EmulatorCa } from '../../emulator/ca.ts';
import { startEmulatedImds, type EmulatedImds } from '../../emulator/imds.ts';
import { startEmulatedKms, type EmulatedKms, type KmsKeyPolicy } from '../../emulator/kms.ts';
import { measureImage } from '../../emulator/measure.ts';
import { localKmsKeyArn } from '../../enclave/image-config.ts';
import { verifyAttestation } from '../../verifier/index.ts';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const ekvBin = join(repo, 'bin', 'ekv.js');
const hostUnit = join(repo, 'infra', 'host', 'ekv-host.service');
/**
 * Nodes of the rehearsed deployment: R + 1, as docs/deploy.md section 7 recommends. With R = 3 and three nodes
 * one node down stops the whole ring (every range has all three as members; a read needs every member's lease
 * grant and a write R acknowledgements, and no configuration of fewer than R members is ever proposed), so the
 * steps that take one node out (an image the key policy refuses) could not show the ring serving on.
 */
const nodeCountDefault = 4;
/** The hosts' and enclaves' log level (host.log in each node's directory; --keep keeps them). */
const logLevel = process.env.EKV_REHEARSAL_LOG_LEVEL ?? 'warn';
const region = 'us-east-1'; // the local key ARN's

export interface RehearsalOptions {
  dir?: string;
  log?: (line: string) => void;
  /** Keys the client writes first (default 30). */
  keys?: number;
  keep?: boolean;
  /**
   * The shorter run of the test suite: no dedicated credentials step (the boot credentials have expired by the
   * time of the kill, whose relaunch must unseal with rotated ones, which is checked), and a roll of one node only.
   */
  short?: boolean;
  /** Nodes (default 4: R + 1). */
  nodes?: number;
}

export interface RehearsalReport {
  timingsMs: Record<string, number>;
  acknowledgedWrites: number;
  pcr0: { a: string; b: string };
  refusal: string;
}

type Pcrs = { PCR0: string; PCR1: string; PCR2: string; KmsKeyArn: string; Replicas: number; AccessMode: 'open'; RingPeers: true };

function pcrsOf(path: string): Pcrs {
  const m = measureImage(readFileSync(path));
  return { PCR0: m.pcr0.toString('hex'), PCR1: m.pcr1.toString('hex'), PCR2: m.pcr2.toString('hex'), KmsKeyArn: localKmsKeyArn, Replicas: 3, AccessMode: 'open', RingPeers: true };
}

/** The stack as `cdk deploy` would create it, from the same app (infra/bin/app.ts). */
function synthesize(dir: string, nodeCount: number, pcrsFile: string, extra: Record<string, string> = {}): Template {
  const app = new App({ outdir: join(dir, 'cdk.out'), context: {
    region, pcrsFile, nodeCount: String(nodeCount), adminRoleArn: 'arn:aws:iam::111122223333:role/ekv-key-admin',
    artifactsUri: 's3://ekv-rehearsal/release-a', amiId: 'ami-0123456789abcdef0', ...extra,
  } });
  return Template.fromStack(buildApp(app).stack);
}

interface Statement { Sid?: string; Effect: string; Action: string | string[]; Condition?: Record<string, Record<string, unknown>> }

/**
 * The template's key policy as the emulated KMS enforces it. Only the shapes the stack writes are understood;
 * anything else is an error, so that a change to the policy cannot pass here unnoticed.
 */
export function emulatedPolicy(t: Template): KmsKeyPolicy {
  const keys = Object.values(t.findResources('AWS::KMS::Key')) as Array<{ Properties: { KeyPolicy: { Statement: Statement[] } } }>;
  if (keys.length !== 1) throw new Error('the template has no single sealing key');
  const statements = keys[0]!.Properties.KeyPolicy.Statement;
  const use = statements.filter((s) => s.Effect === 'Allow' && [s.Action].flat().some((a) => /^kms:(Decrypt|GenerateDataKey)$/.test(a)));
  if (use.length !== 1) throw new Error('expected one Allow statement for enclave use');
  const cond = use[0]!.Condition ?? {};
  const keysUsed = Object.keys(cond);
  if (keysUsed.length !== 1 || keysUsed[0] !== 'StringEqualsIgnoreCase') throw new Error(`unexpected condition operators ${keysUsed.join(',')}`);
  const conditions = cond.StringEqualsIgnoreCase as Record<string, string | string[]>;
  for (const k of Object.keys(conditions)) if (!/^kms:RecipientAttestation:(ImageSha384|PCR\d+)$/.test(k)) throw new Error(`unexpected condition key ${k}`);
  const deny = statements.find((s) => s.Effect === 'Deny' && s.Condition?.Null?.['kms:RecipientAttestation:ImageSha384'] === 'true');
  if (!deny) throw new Error('the template has no deny without attestation');
  // The deny without attestation and no other allow: nothing is allowed without a Recipient.
  return { allowWithoutRecipient: [], recipientConditions: conditions as KmsKeyPolicy['recipientConditions'] };
}

function releaseValue(t: Template): string {
  const params = Object.values(t.findResources('AWS::SSM::Parameter')) as Array<{ Properties: { Value: string } }>;
  return params[0]!.Properties.Value;
}

/** ExecStart of ekv-host.service, its ${VARS} filled from `env` (the unit's EnvironmentFile). */
export function hostCommandLine(env: Record<string, string>): string[] {
  const line = readFileSync(hostUnit, 'utf8').split('\n').find((l) => l.startsWith('ExecStart='));
  if (!line) throw new Error('ekv-host.service has no ExecStart');
  const filled = line.slice('ExecStart='.length).replace(/\$\{(\w+)\}/g, (_, k: string) => {
    if (!(k in env)) throw new Error(`ekv-host.service uses \${${k}}, which the rehearsal does not set`);
    return env[k] as string;
  });
  return filled.split(' ');
}

async function freePort(host: string): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer().once('error', rej).listen(0, host, () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => res(p));
    });
  });
}

/**
 * vsock-proxy's stand-in: the enclave's KMS socket forwarded to the emulated KMS. Its close() cuts the
 * connections still open (a kept-alive TLS connection would otherwise hold server.close() forever).
 */
function kmsProxy(socketPath: string, port: number): { close(): Promise<void> } {
  rmSync(socketPath, { force: true });
  const open = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const up = net.connect(port, '127.0.0.1');
    for (const s of [c, up]) {
      open.add(s);
      s.once('close', () => open.delete(s));
    }
    c.pipe(up).pipe(c);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  server.listen(socketPath);
  return {
    close: () => new Promise((r) => {
      for (const s of open) s.destroy();
      server.close(() => r());
    }),
  };
}

/** SIGTERM (systemctl stop): the host stops its enclave and exits; SIGKILL after a deadline, its enclave too. */
async function stopHost(n: NodeProc, deadlineMs = 45_000): Promise<void> {
  if (n.proc.exitCode !== null || n.proc.signalCode !== null) return;
  const exited = new Promise((r) => n.proc.once('exit', r));
  n.proc.kill('SIGTERM');
  const t = setTimeout(() => {
    n.proc.kill('SIGKILL');
    try {
      process.kill(Number(readFileSync(join(n.state, 'enclave.pid'), 'utf8')), 'SIGKILL');
    } catch {
      // gone already
    }
  }, deadlineMs);
  await exited;
  clearTimeout(t);
}

/** The enclave's own words for the KMS refusal, from the first log line that carries it. */
function refusalOf(log: string): string {
  for (const line of log.split('\n')) {
    if (!/AccessDenied/.test(line)) continue;
    try {
      const j = JSON.parse(line) as { err?: { message?: string }; msg?: string };
      return (j.err?.message ?? j.msg ?? line).slice(0, 240);
    } catch {
      return line.slice(0, 240);
    }
  }
  return '';
}

/**
 * A read, retried up to a deadline (30 s): right after a node dies the ring may still route to it until its failure
 * detector has noticed (a timeout, not a wrong answer). A wrong value is never retried: it fails the rehearsal.
 */
async function read(kv: EkvClient, key: string, deadlineMs = 30_000): Promise<string> {
  const start = Date.now();
  for (;;) {
    try {
      return (await kv.get(key)).toString();
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (Date.now() - start > deadlineMs || (code !== 'TIMEOUT' && code !== 'UNAVAILABLE')) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

interface NodeProc { name: string; ip: string; dir: string; state: string; proc: ChildProcess; http: string; addr: string; log: string }

async function until(what: string, pred: () => Promise<boolean>, ms: number): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await pred().catch(() => false)) return Date.now() - start;
    if (Date.now() - start > ms) throw new Error(`rehearsal: ${what} not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function healthy(n: NodeProc): Promise<boolean> {
  const r = await fetch(`${n.http}/healthz`, { signal: AbortSignal.timeout(8000) });
  return r.status === 200;
}

async function healthBody(n: NodeProc): Promise<Record<string, unknown>> {
  return (await (await fetch(`${n.http}/healthz`, { signal: AbortSignal.timeout(8000) })).json()) as Record<string, unknown>;
}

export async function rehearse(o: RehearsalOptions = {}): Promise<RehearsalReport> {
  const log = o.log ?? ((l: string) => process.stderr.write(`rehearse: ${l}\n`));
  const dir = resolve(o.dir ?? mkdtempSync(join(tmpdir(), 'ekv-rh-')));
  const t0 = Date.now();
  const nodeCount = o.nodes ?? nodeCountDefault;
  const timings: Record<string, number> = {};
  const lap = (name: string, since: number) => (timings[name] = Date.now() - since);
  const cleanup: Array<() => Promise<void> | void> = [];
  try {
    // ---- the release: two images built by the same script, their PCRs, the stack synthesized for A
    if (!existsSync(defaultImagePath)) await promisify(execFile)(process.execPath, [join(repo, 'scripts', 'build-enclave.mjs')], { cwd: repo });
    // Both images accept peers of another image that prove the ring secret (ringPeers, compiled in): the key
    // policy decides which images those are. B also allowlists A.
    const settings = { ...localImageSettings({ access: 'open', replicas: 3, nodes: nodeCount }), ringPeers: true };
    const imageA = await localImage(settings);
    const pcrsA = pcrsOf(imageA);
    const imageB = await localImage({ ...settings, peerPcr0Allowlist: [pcrsA.PCR0] });
    const pcrsB = pcrsOf(imageB);
    const artifacts = join(dir, 'artifacts');
    mkdirSync(artifacts, { recursive: true });
    copyFileSync(imageA, join(artifacts, `${pcrsA.PCR0}.mjs`));
    copyFileSync(imageB, join(artifacts, `${pcrsB.PCR0}.mjs`));
    writeFileSync(join(dir, 'pcrs-a.json'), JSON.stringify(pcrsA, null, 2));
    writeFileSync(join(dir, 'pcrs-b.json'), JSON.stringify(pcrsB, null, 2));
    let s = Date.now();
    const template = synthesize(dir, nodeCount, join(dir, 'pcrs-a.json'));
    lap('synth', s);
    const policy = emulatedPolicy(template);
    log(`images A ${pcrsA.PCR0.slice(0, 12)}… B ${pcrsB.PCR0.slice(0, 12)}…; key policy from the template admits ${JSON.stringify(policy.recipientConditions['kms:RecipientAttestation:ImageSha384']).slice(0, 20)}…`);

    // ---- the AWS side: IMDS with rotating credentials, KMS with the template's policy
    const ca = await EmulatorCa.loadOrCreate(join(dir, 'ca'));
    writeFileSync(join(dir, 'ca', 'root.pem'), ca.rootPem);
    const imds: EmulatedImds = await startEmulatedImds({ lifetimeMs: 10_000, rotateEveryMs: 5000 });
    cleanup.push(() => imds.close());
    const tls = await ca.issueTlsServer([`kms.${region}.amazonaws.com`]);
    const kmsPort = await freePort('127.0.0.1');
    const startKms = (keyPolicy: KmsKeyPolicy) => startEmulatedKms({
      region, port: kmsPort, keyPolicy, tls, credentials: imds.registry, dir: join(dir, 'kms'),
      defaultKeyId: localKmsKeyArn.slice(localKmsKeyArn.indexOf(':key/') + 5),
      verifyRecipient: (doc) => verifyAttestation(doc, { roots: [ca.rootPem] }),
    });
    let kms: EmulatedKms = await startKms(policy);
    cleanup.push(() => kms.close());

    // ---- the nodes: ekv host as the unit starts it; it launches the enclave
    const clientPort = await freePort('127.0.0.11');
    const httpPort = await freePort('127.0.0.11');
    const release = releaseValue(template);
    const nodes: NodeProc[] = [];
    const proxies = new Map<number, { close(): Promise<void> }>();
    // Cleanup runs in reverse: every host stopped at once (each stops its enclave), then the proxies.
    cleanup.push(() => Promise.all([...proxies.values()].map((p) => p.close())).then(() => undefined));
    cleanup.push(() => Promise.all(nodes.map((n) => stopHost(n))).then(() => undefined));
    /** Node i's host, started as the unit starts it, with `releaseJson` as what run-enclave.sh reads from SSM. */
    const startNode = (i: number, releaseJson = release): NodeProc => {
      const name = `node${i}`;
      const ip = `127.0.0.${11 + i}`;
      const nd = join(dir, name);
      const vsock = join(nd, 'vsock');
      const state = join(nd, 'data');
      mkdirSync(vsock, { recursive: true, mode: 0o700 });
      mkdirSync(state, { recursive: true, mode: 0o700 });
      writeFileSync(join(state, 'release.json'), releaseJson); // run-enclave.sh: aws ssm get-parameter
      if (!proxies.has(i)) { // ekv-vsock-proxy.service: its own unit, not restarted with the host
        proxies.set(i, kmsProxy(join(vsock, 'host-8002.sock'), kmsPort));
      }
      const join0 = i === 0 ? '' : `${nodes[0]!.ip}:${clientPort}`;
      const env = {
        EKV_VSOCK_DIR: vsock, EKV_CLIENT_PORT: String(clientPort), EKV_HTTP_PORT: String(httpPort), EKV_SELF_ADDR: `${ip}:${clientPort}`,
        EKV_JOIN: join0, EKV_RING_SECRET_URL: i === 0 ? '' : `http://${nodes[0]!.ip}:${httpPort}/v1/ring-secret`, EKV_STATE_DIR: state,
      };
      const argv = hostCommandLine(env).map((a) => (a === '/var/lib/ekv' ? state : a));
      const cmd = argv.indexOf('--enclave-cmd');
      argv[cmd + 1] = `${process.execPath} ${ekvBin} emulate-enclave --ca ${join(dir, 'ca')} --vsock-dir ${vsock} --release ${join(state, 'release.json')} --images-dir ${artifacts} --pid-file ${join(state, 'enclave.pid')} --log-level ${logLevel}`;
      const [, script, ...args] = argv; // /usr/bin/node /opt/ekv/app/bin/ekv.js ...: this checkout's
      if (script !== '/opt/ekv/app/bin/ekv.js') throw new Error(`ekv-host.service runs ${script}`);
      const local = ['--bind', ip, '--imds', imds.url, '--health-root', join(dir, 'ca', 'root.pem'), '--allow-outbound', '127.0.0.0/8', '--log-level', logLevel];
      const logFile = join(nd, 'host.log');
      const out = createWriteStream(logFile, { flags: 'a' }); // the journal: kept across host restarts
      const proc = spawn(process.execPath, [ekvBin, ...args, ...local], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, EKV_ENCLAVE_LOG_LEVEL: 'warn' } });
      proc.stdout?.pipe(out);
      proc.stderr?.pipe(out);
      const node = { name, ip, dir: nd, state, proc, http: `http://${ip}:${httpPort}`, addr: `${ip}:${clientPort}`, log: logFile };
      return node;
    };

    // First boot as a first deploy does it: every instance at once (CloudFormation waits for none to serve).
    // Nothing may wait for node 0 alone: with R = 3 a lone founder never serves (each range needs R members, so
    // its /healthz stays 503 NOT_SERVING until two more have joined). Node 0 founds the ring (ring secret, ring
    // id); the joiners' hosts fetch the ring secret from node 0's host and only then launch their enclaves.
    s = Date.now();
    for (let i = 0; i < nodeCount; i++) nodes.push(startNode(i));
    const firstHealthy: Record<string, number> = {};
    await until('all nodes healthy', async () => {
      const up = await Promise.all(nodes.map(async (n) => {
        const ok = await healthy(n).catch(() => false);
        if (ok) firstHealthy[n.name] ??= Date.now() - s;
        return ok;
      }));
      return up.every(Boolean);
    }, 150_000);
    lap('firstBoot', s);
    for (const [name, ms] of Object.entries(firstHealthy)) timings[`firstBoot_${name}`] = ms;
    log(`first boot: ${nodeCount} nodes serving after ${timings.firstBoot} ms`);

    // ---- the client's cluster file, from stack outputs shaped as the template's
    const outputNames = Object.keys(template.findOutputs('*'));
    const values: Record<string, string> = {
      SealingKeyArn: localKmsKeyArn, PinnedKmsKeyArn: localKmsKeyArn, Pcr0: pcrsA.PCR0, ReleaseParameterName: '/ekv/EnclaveKvRing/release',
      ClientPort: String(clientPort), HttpPort: String(httpPort), NodeCount: String(nodeCount),
    };
    nodes.forEach((n, i) => Object.assign(values, { [`Node${i}PrivateIp`]: n.ip, [`Node${i}PublicIp`]: n.ip, [`Node${i}InstanceId`]: `i-rehearsal${i}` }));
    const missing = outputNames.filter((k) => !(k in values));
    if (missing.length > 0) throw new Error(`the template has outputs the rehearsal does not fill: ${missing.join(', ')}`);
    writeFileSync(join(dir, 'outputs.json'), JSON.stringify({ EnclaveKvRing: Object.fromEntries(outputNames.map((k) => [k, values[k]])) }, null, 2));
    await promisify(execFile)(process.execPath, [ekvBin, 'cluster', 'init', '--outputs', join(dir, 'outputs.json'), '--pcrs', join(dir, 'pcrs-a.json'), '-o', join(dir, 'cluster.json')]);
    // The client pins its own policy (here the emulator's root stands for AWS's); the file gives addresses.
    const kv: EkvClient = await connect({ cluster: join(dir, 'cluster.json'), trust: { roots: [ca.rootPem], pcrs: { 0: [pcrsA.PCR0, pcrsB.PCR0] } }, timeoutMs: 5000 });
    cleanup.push(() => kv.close());
    const acked = new Map<string, string>();
    const keys = o.keys ?? 30;
    s = Date.now();
    for (let i = 0; i < keys; i++) {
      await kv.put(`k${i}`, `v${i}`);
      acked.set(`k${i}`, `v${i}`);
    }
    lap('clientWrites', s);

    // ---- kill -9 of an enclave under a writer
    let writing = true;
    let seq = 0;
    const writer = (async () => {
      while (writing) {
        const k = `w${seq % 20}`;
        const v = `s${seq++}`;
        try {
          await kv.put(k, v);
          acked.set(k, v);
        } catch {
          // refused or timed out: not acknowledged, so not counted
        }
      }
    })();
    const victim = nodes[1]!;
    const victimCreds = () => (JSON.parse(readFileSync(join(victim.state, 'aws-credentials.json'), 'utf8')) as { AccessKeyId: string }).AccessKeyId;
    const bootCreds = victimCreds();
    const pid = Number(readFileSync(join(victim.state, 'enclave.pid'), 'utf8'));
    s = Date.now();
    process.kill(pid, 'SIGKILL');
    timings.killToRed = await until('health red after kill -9', async () => !(await healthy(victim)), 20_000);
    timings.killToGreen = await until('health green after the watchdog relaunch', () => healthy(victim), 90_000) + timings.killToRed;
    const body = await healthBody(victim);
    if ((body.watchdog as { restarts?: number } | undefined)?.restarts !== 1) throw new Error(`watchdog: ${JSON.stringify(body.watchdog)}`);
    await new Promise((r) => setTimeout(r, 1000));
    writing = false;
    await writer;
    log(`kill -9 ${victim.name}: health red after ${timings.killToRed} ms, green after ${timings.killToGreen} ms (watchdog), ${seq} writes attempted meanwhile`);

    if (o.short) {
      // The relaunch unsealed through KMS, which takes only current credentials: they must have rotated since boot.
      await until('credentials rotated', async () => victimCreds() !== bootCreds, 20_000);
    }
    // ---- credentials rotation: the boot credentials are long expired; a relaunch unseals with current ones
    if (!o.short) {
    const creds = () => (JSON.parse(readFileSync(join(nodes[2]!.state, 'aws-credentials.json'), 'utf8')) as { AccessKeyId: string }).AccessKeyId;
    const bootKey = creds();
    s = Date.now();
    await until('the host refreshed rotated credentials', async () => creds() !== bootKey, 30_000);
    imds.rotate(); // and one forced rotation: every key issued so far is expired now
    await until('the host refreshed after the forced rotation', async () => creds() !== bootKey, 30_000);
    await new Promise((r) => setTimeout(r, 6000)); // at least one refresh past the forced rotation
    process.kill(Number(readFileSync(join(nodes[2]!.state, 'enclave.pid'), 'utf8')), 'SIGKILL');
    await until('red', async () => !(await healthy(nodes[2]!)), 20_000);
    await until('green with rotated credentials', () => healthy(nodes[2]!), 90_000);
    lap('credentialRotation', s);
    log(`credentials rotated (${bootKey.slice(0, 8)}… -> ${creds().slice(0, 8)}…); ${nodes[2]!.name} unsealed again after ${timings.credentialRotation} ms`);
    }

    // ---- a node told to run image B before the key policy admits it: refused, says why, the ring serves on
    const rolling = JSON.stringify({ version: 1, current: JSON.parse(release).current, next: { pcr0: pcrsB.PCR0, artifactsUri: 's3://ekv-rehearsal/release-b' } });
    const early = nodes[2]!;
    writeFileSync(join(early.state, 'release.json'), rolling);
    writeFileSync(join(early.state, 'image-pcr0'), `${pcrsB.PCR0}\n`);
    s = Date.now();
    process.kill(Number(readFileSync(join(early.state, 'enclave.pid'), 'utf8')), 'SIGKILL');
    await until('the node on image B reports why', async () => /AccessDenied/.test(readFileSync(early.log, 'utf8')), 60_000);
    const refusal = refusalOf(readFileSync(early.log, 'utf8'));
    const red = await healthBody(early);
    if (red.ok !== false) throw new Error('a node refused by KMS reported healthy');
    for (let i = 0; i < keys; i++) if ((await read(kv, `k${i}`)) !== `v${i}`) throw new Error(`k${i} lost while a node was refused`);
    lap('refusedImageB', s);
    log(`${early.name} on image B refused by KMS ("${refusal}"); reads served by the others`);
    // Back on A (the operator's fix: the release without next), the watchdog's next relaunch recovers.
    writeFileSync(join(early.state, 'release.json'), release);
    rmSync(join(early.state, 'image-pcr0'), { force: true });
    s = Date.now();
    await until('the node back on image A', () => healthy(early), 120_000);
    lap('recoverOnA', s);

    // ---- a rolling upgrade A -> B under a writer: one deploy puts both images in the key policy and the release;
    // then one node at a time is told to run B and its host restarted; then a deploy retires A.
    s = Date.now();
    const rollTemplate = synthesize(dir, nodeCount, join(dir, 'pcrs-a.json'), { nextPcrsFile: join(dir, 'pcrs-b.json'), nextArtifactsUri: 's3://ekv-rehearsal/release-b' });
    await kms.close();
    kms = await startKms(emulatedPolicy(rollTemplate));
    for (const n of nodes) writeFileSync(join(n.state, 'release.json'), releaseValue(rollTemplate));
    let rollOn = true;
    const refusedDuringRoll: string[] = [];
    let rollSeq = 0;
    const rollWriter = (async () => {
      while (rollOn) {
        const k = `r${rollSeq % 20}`;
        const v = `t${rollSeq++}`;
        try {
          await kv.put(k, v);
          acked.set(k, v);
        } catch (err) {
          const code = (err as { code?: string }).code ?? 'ERROR';
          // A client pinned to "A or B" must never be refused for the image or the ring during the roll.
          if (code === 'UNATTESTED' || code === 'WRONG_RING') refusedDuringRoll.push(`${code}: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    })();
    // Node 0 founded the ring and has no join address: its host names a member the enclave last reported
    // (host/ring-hints.ts), so it is rolled like the others. The short run rolls node 1 alone (a mixed ring).
    // Each step is what roll-node.sh runs through SSM: `echo <B> > /var/lib/ekv/image-pcr0 && systemctl restart
    // ekv-host`: the host stops its enclave and exits, a new host (a fresh watchdog) launches B.
    const order = o.short ? [1] : nodes.map((_, i) => i);
    for (const i of order) {
      const t = Date.now();
      const n = nodes[i]!;
      writeFileSync(join(n.state, 'image-pcr0'), `${pcrsB.PCR0}\n`);
      await stopHost(n);
      const again = startNode(i, releaseValue(rollTemplate));
      nodes[i] = again;
      await until(`${again.name} serving image B`, async () => {
        const b = await healthBody(again);
        return b.ok === true && b.pcr0 === pcrsB.PCR0;
      }, 120_000);
      timings[`roll_${again.name}`] = Date.now() - t;
    }
    if (!o.short) {
      // End of the roll: the key policy and the release name B alone.
      const done = synthesize(dir, nodeCount, join(dir, 'pcrs-b.json'), { artifactsUri: 's3://ekv-rehearsal/release-b' });
      await kms.close();
      kms = await startKms(emulatedPolicy(done));
      for (const n of nodes) writeFileSync(join(n.state, 'release.json'), releaseValue(done));
      await until('all nodes healthy on B', async () => (await Promise.all(nodes.map(async (n) => (await healthBody(n)).pcr0 === pcrsB.PCR0))).every(Boolean), 30_000);
    }
    await new Promise((r) => setTimeout(r, 1000));
    rollOn = false;
    await rollWriter;
    lap('roll', s);
    if (refusedDuringRoll.length > 0) throw new Error(`a client pinned to A or B was refused during the roll: ${refusedDuringRoll[0]}`);
    log(`rolled ${order.map((i) => nodes[i]!.name).join(', ')} to image B under a writer (${rollSeq} writes attempted) in ${timings.roll} ms; no client refused`);

    // ---- nothing acknowledged was lost
    for (const [k, v] of acked) {
      const got = await read(kv, k);
      if (got !== v) throw new Error(`acknowledged write ${k}=${v} reads ${got}`);
    }
    log(`${acked.size} acknowledged keys all read back; total ${Date.now() - t0} ms`);
    timings.total = Date.now() - t0;
    void kms;
    return { timingsMs: timings, acknowledgedWrites: acked.size, pcr0: { a: pcrsA.PCR0, b: pcrsB.PCR0 }, refusal };
  } catch (err) {
    if (existsSync(dir)) log(`failed; logs in ${dir}/node*/host.log`);
    throw err;
  } finally {
    for (const c of cleanup.reverse()) await Promise.resolve(c()).catch(() => undefined);
    if (!o.keep && !o.dir) rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const keep = process.argv.includes('--keep');
  const at = process.argv.indexOf('--nodes');
  const nodes = at > 0 ? Number(process.argv[at + 1]) : undefined;
  if (nodes !== undefined && !(Number.isInteger(nodes) && nodes >= 3 && nodes <= 8)) {
    process.stderr.write('rehearse: --nodes must be an integer from 3 to 8\n');
    process.exit(2);
  }
  rehearse({ keep, short: process.argv.includes('--short'), ...(nodes ? { nodes } : {}) }).then((r) => {
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  }).catch((err: unknown) => {
    process.stderr.write(`rehearse: FAILED: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
