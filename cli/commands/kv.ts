/** `ekv put`, `ekv get`, `ekv del`: the redis-cli-like data commands. */
import type { Command } from 'commander';
import { connect, type EkvClient, type Routing } from '../../client/index.ts';
import { identityPath, loadIdentity, toPrincipalSigner } from '../../client/identity.ts';
import { setDefaultChainCache } from '../../verifier/index.ts';
import { FileChainCache } from '../chain-cache-file.ts';
import { run, UsageError } from '../output.ts';
import { trustChoice, trustOptions, type TrustFlags } from '../trust-flags.ts';
import { ttlMsMax } from '../../protocol/constants.ts';
import { defaultClusterFile, durationFlag, loadClusterFile, timeoutFlag } from '../flags.ts';

export interface CommonOpts extends TrustFlags {
  cluster: string;
  json?: boolean;
  timeout: string;
  /** --identity FILE; EKV_IDENTITY when absent; anonymous when neither. */
  identity?: string;
  routing: string;
  /** --floor FILE (default: the cluster file's path + '.floor'); --no-floor: false. */
  floor?: string | false;
}

/** Where the CLI keeps its floor by default: beside the cluster file (docs/recovery.md "What a client detects"). */
export function defaultFloorFile(clusterPath: string): string {
  return `${clusterPath}.floor`;
}

export function common(cmd: Command): Command {
  return trustOptions(cmd)
    .option('-c, --cluster <file>', "cluster file (node addresses; its trust section only with --trust-cluster-file or when your own ekv up wrote it)", defaultClusterFile())
    .option('--timeout <ms>', 'per-request timeout in milliseconds', '10000')
    .option('--identity <file>', 'private key to prove as principal (default: $EKV_IDENTITY; none: anonymous)')
    .option('--routing <mode>', "how the key's node is found: cached (one hop), iterative (walk the ring, verifying each hop) or any (the ring forwards)", 'cached')
    .option('--floor <file>', 'the versions this CLI has seen, kept between runs: an older answer is refused (STALE) (default: the cluster file + .floor)')
    .option('--no-floor', 'do not check or keep the floor')
    .option('--json', 'print one JSON object on stdout');
}

/**
 * The data commands remember verified certificate chains across processes (cli/chain-cache-file.ts:
 * only step 2's time-independent work on exact chain bytes; every document's root, window, signature,
 * nonce, PCRs and age are still checked). EKV_CHAIN_CACHE=0 turns it off.
 */
function useFileChainCache(): void {
  if (process.env.EKV_CHAIN_CACHE === '0') return;
  setDefaultChainCache(new FileChainCache());
}

export async function withClient<T>(o: CommonOpts, body: (kv: EkvClient) => Promise<T>): Promise<T> {
  useFileChainCache();
  const file = identityPath(o.identity);
  const identity = file === null ? undefined : toPrincipalSigner(loadIdentity(file));
  if (!['cached', 'iterative', 'any'].includes(o.routing)) throw new UsageError('--routing must be cached, iterative or any');
  const timeoutMs = timeoutFlag(o.timeout);
  const cluster = loadClusterFile(o.cluster);
  const { how: _how, ...trust } = trustChoice(o, cluster);
  const floor = o.floor === false ? { floor: false } : { floorFile: o.floor ?? defaultFloorFile(o.cluster) };
  const kv = await connect({ cluster, ...trust, ...floor, timeoutMs, routing: o.routing as Routing, ...(identity ? { identity } : {}) });
  try {
    return await body(kv);
  } finally {
    try {
      await kv.close();
    } catch (err) {
      // The operation's outcome stands; only the floor could not be kept.
      process.stderr.write(`warning: the floor file was not written: ${(err as Error).message}\n`);
    }
  }
}

export function registerKv(program: Command): void {
  common(program.command('put').argument('<key>').argument('[value]', 'the value (read from stdin when omitted or "-"; "" stores an empty value)'))
    .description('store a value under a key; prints the new version with --json')
    .option('--if-version <n>', 'compare-and-set: only if the key is at version n (0: only if it has no value); else CONFLICT and exit 1')
    .option('--hex', 'the value (argument or stdin) is hex; stored as those bytes')
    .option('--allow-empty', 'accept an empty stdin as an empty value (refused otherwise: a forgotten pipe is not a value)')
    .option('--ttl <duration>', "expire the value after this long (500ms, 30s, 5m, 1h, 2d; up to 366d), counted by the enclaves' own clocks: never earlier, later by at most a tick and a replication round, more after a failover or restart")
    .action(async (key: string, value: string | undefined, o: CommonOpts & { ifVersion?: string; hex?: boolean; allowEmpty?: boolean; ttl?: string }) =>
      run(o.json, async () => {
        const cas = { ...ifVersionOption(o.ifVersion), ...(o.ttl === undefined ? {} : { ttlMs: durationFlag(o.ttl, '--ttl', ttlMsMax) }) };
        timeoutFlag(o.timeout);
        const fromStdin = value === undefined || value === '-';
        const raw = fromStdin ? await readStdin() : Buffer.from(value, 'utf8');
        if (fromStdin && raw.length === 0 && o.allowEmpty !== true) {
          throw new UsageError('empty stdin: refusing to store an empty value (pass --allow-empty, or "" as the value)');
        }
        const bytes = o.hex ? hexValue(raw) : raw;
        const version = await withClient(o, (kv) => kv.put(key, bytes, cas));
        if (o.json) process.stdout.write(JSON.stringify({ ok: true, key, version, ...(cas.ttlMs ? { ttlMs: cas.ttlMs } : {}) }) + '\n');
        else process.stdout.write('OK\n');
      }),
    );

  common(program.command('get').argument('[key]'))
    .description('print the value of a key on stdout (exit 1 and NOT_FOUND on stderr when missing); --prefix P: every key<TAB>value under P')
    .option('--hex', 'print the value as hex')
    .option('--prefix <p>', 'every key you may read starting with P, with its value (one key<TAB>value line each; docs/scans.md)')
    .action(async (key: string | undefined, o: CommonOpts & { hex?: boolean; prefix?: string }) =>
      run(o.json, async () => {
        if (o.prefix !== undefined) {
          if (key !== undefined) throw new UsageError('give a key or --prefix, not both');
          const { printPrefix } = await import('./scan.ts');
          await withClient(o, (kv) => printPrefix(kv, o.prefix as string, o, true));
          return;
        }
        if (key === undefined) throw new UsageError('get needs a key (or --prefix P)');
        const r = await withClient(o, (kv) => kv.getWithVersion(key));
        if (o.json) {
          process.stdout.write(JSON.stringify({ ok: true, key, version: r.version, value: r.value.toString('utf8'), valueHex: r.value.toString('hex') }) + '\n');
        } else if (o.hex) process.stdout.write(r.value.toString('hex') + '\n');
        else {
          process.stdout.write(r.value);
          if (process.stdout.isTTY) process.stdout.write('\n');
        }
      }),
    );

  common(program.command('del').alias('delete').argument('<key>'))
    .description('delete a key; a key without a value is not an error (exit 0, "OK (no such key)"; --json says deleted: false)')
    .option('--if-version <n>', 'compare-and-set: only if the key is at version n; else CONFLICT and exit 1')
    .action(async (key: string, o: CommonOpts & { ifVersion?: string }) =>
      run(o.json, async () => {
        const cas = ifVersionOption(o.ifVersion);
        const r = await withClient(o, (kv) => kv.delete(key, cas));
        if (o.json) process.stdout.write(JSON.stringify({ ok: true, key, deleted: r.deleted, version: r.version }) + '\n');
        else process.stdout.write(r.deleted ? 'OK\n' : 'OK (no such key)\n');
      }),
    );
}

function ifVersionOption(v: string | undefined): { ifVersion?: number } {
  if (v === undefined) return {};
  if (!/^\d{1,15}$/.test(v)) throw new UsageError('--if-version must be a version number (0: only if the key has no value)');
  return { ifVersion: Number(v) };
}

function hexValue(raw: Buffer): Buffer {
  const text = raw.toString('latin1').trim();
  if (!/^([0-9a-fA-F]{2})*$/.test(text)) throw new UsageError('--hex: the value must be an even number of hex digits');
  return Buffer.from(text, 'hex');
}

async function readStdin(): Promise<Buffer> {
  // On a terminal, say what we wait for (otherwise `ekv put KEY` just sits there).
  if (process.stdin.isTTY) process.stderr.write('reading the value from stdin; end it with Ctrl-D (or pass it as an argument)\n');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
