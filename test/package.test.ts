// The package as a user gets it: `npm pack`, then the tarball installed into an empty project. The SDK
// must import from plain Node (`import { connect } from 'enclave-kv'`) and type-check from TypeScript
// through the `exports` map, and the `ekv` command must run as compiled JavaScript (no tsx installed).
// The install reads npm's cache first (--prefer-offline); dependencies are the package's own.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'ekv-pack-'));
const project = join(work, 'project');

afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(cmd: string, args: string[], cwd: string, timeout = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout, env: { ...process.env, npm_config_update_notifier: 'false' } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: unknown }).code as number) ?? 1 : 0, stdout, stderr });
    });
  });
}

describe('the packed package', () => {
  it('installs from its tarball and works from Node, TypeScript and the shell', async () => {
    // The compiled JS is built by the test setup; the declarations only here (the rest of the suite needs none).
    const types = await run(process.execPath, ['scripts/build.mjs', '--no-enclave', '--no-lib'], repo);
    expect(types.stderr + types.stdout).toBe('');
    const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], repo);
    expect(packed.code, packed.stderr).toBe(0);
    const info = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = info[0]!.files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['bin/ekv.js', 'dist/lib/cli.js', 'dist/lib/index.js', 'dist/types/client/index.d.ts', 'dist/enclave.mjs']));
    expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]); // compiled, not sources
    const tarball = join(work, info[0]!.filename);

    writeFileSync(join(work, 'package.json'), '{}\n'); // keep npm from walking up into another project
    rmSync(project, { recursive: true, force: true });
    const mk = await run('mkdir', ['-p', project], work);
    expect(mk.code).toBe(0);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    const install = await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', '--omit=optional', tarball], project, 180_000);
    expect(install.code, install.stderr).toBe(0);
    const installed = readdirSync(join(project, 'node_modules'));
    expect(installed).toContain('enclave-kv');
    expect(installed).not.toContain('tsx'); // the runtime needs no TypeScript loader

    // Plain Node, ESM: the package's name resolves through `exports`.
    writeFileSync(join(project, 'use.mjs'), [
      "import { connect, EkvError } from 'enclave-kv';",
      "import { verifyAttestation, AWS_NITRO_ROOT_SHA256 } from 'enclave-kv/verifier';",
      'let refused = null;',
      "try { await connect({ nodes: ['127.0.0.1:1'], trust: {} }); } catch (err) { refused = err instanceof EkvError ? err.code : String(err); }",
      "console.log(JSON.stringify({ connect: typeof connect, verify: typeof verifyAttestation, root: AWS_NITRO_ROOT_SHA256.slice(0, 8), refused }));",
    ].join('\n'));
    const node = await run(process.execPath, ['use.mjs'], project);
    expect(node.stderr).toBe('');
    expect(JSON.parse(node.stdout)).toEqual({ connect: 'function', verify: 'function', root: '641a0321', refused: 'BAD_REQUEST' });

    // TypeScript (NodeNext), strict, against the shipped declarations only.
    writeFileSync(join(project, 'use.ts'), [
      "import { connect, EkvError, type EkvClient, type TrustPolicy } from 'enclave-kv';",
      "const trust: TrustPolicy = { pcrs: { 0: 'ab'.repeat(48) } };",
      "export async function main(): Promise<Buffer> {",
      "  const kv: EkvClient = await connect({ nodes: ['127.0.0.1:7000'], trust, timeoutMs: 1000 });",
      "  try { return await kv.get('k'); } catch (err) { if (err instanceof EkvError && err.code === 'NOT_FOUND') return Buffer.alloc(0); throw err; }",
      '}',
    ].join('\n'));
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, noEmit: true,
        types: ['node'], typeRoots: [join(repo, 'node_modules', '@types')],
      },
      files: ['use.ts'],
    }));
    const tsc = await run(process.execPath, [join(repo, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], project);
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.code).toBe(0);

    // The command, compiled: usage works and a data command reports a stable error code.
    const ekv = join(project, 'node_modules', '.bin', 'ekv');
    const version = await run(ekv, ['--version'], project);
    expect(version.stdout.trim()).toBe('0.1.0');
    const get = await run(ekv, ['get', 'k', '-c', join(project, 'missing.json')], project);
    expect(get.code).toBe(1);
    expect(get.stderr).toMatch(/^BAD_REQUEST: cannot read cluster file/);
  }, 300_000);
});
