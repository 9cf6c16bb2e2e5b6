// The package build (`npm run build`, run by `npm ci` through `prepare`, by `npm start` and by the tests'
// global setup):
//   1. the enclave image, dist/enclave.mjs (scripts/build-enclave.mjs, unchanged: its bytes are PCR0);
//   2. the compiled JavaScript the CLI, the host and the SDK run, dist/lib/ (esbuild, ESM): index.js (the
//      SDK) and verifier.js; cli.js (the CLI with its client commands) and cli-heavy/ (the commands that
//      run nodes, loaded only by them); npm packages stay external but for commander and cbor-x;
//   3. the SDK's type declarations, dist/types/ (tsc), unless --no-types.
//
//   node scripts/build.mjs [--no-enclave] [--no-lib] [--no-types]
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { 'no-enclave': { type: 'boolean' }, 'no-lib': { type: 'boolean' }, 'no-types': { type: 'boolean' } } });

if (!values['no-enclave']) execFileSync(process.execPath, [join(root, 'scripts', 'build-enclave.mjs')], { cwd: root, stdio: 'inherit' });

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const bundled = ['commander', 'cbor-x'];
const outdir = join(root, 'dist', 'lib');
/** Settings shared by the two bundles. */
const common = {
  absWorkingDir: root,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Dependencies load from node_modules as installed (pkijs, the AWS SDK, express, ...), except the two
  // every command needs at start-up, which are bundled: loading them as packages costs more (resolution,
  // CommonJS lexing) than the rest of `ekv get`. cbor-x's optional native add-on stays external.
  external: [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {})].filter((d) => !bundled.includes(d)).concat(['cbor-extract']),
  // cbor-x's pure-JavaScript build, as in the enclave image: its node entry loads a native add-on
  // (cbor-extract, found by scanning the file system) that only pays off on large, string-heavy messages.
  alias: { 'cbor-x': './node_modules/cbor-x/index.js' },
  // Names kept (readable stack traces); full minification measured no faster to start.
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  logLevel: 'warning',
  // cbor-x (bundled) reaches its add-on through require().
  banner: { js: "import { createRequire as __ekvCreateRequire } from 'node:module'; const require = __ekvCreateRequire(import.meta.url);" },
};

if (!values['no-lib']) {
  rmSync(outdir, { recursive: true, force: true });
  // The SDK (`import { connect } from 'enclave-kv'`) and the verifier (`enclave-kv/verifier`).
  await build({ ...common, entryPoints: { index: 'client/index.ts', verifier: 'verifier/index.ts' }, outdir, chunkNames: 'chunks/[name]-[hash]' });
  // The CLI in one file with the commands that talk to nodes (get, put, batch, attest, status, acl, verify:
  // what a script runs often), so `ekv get` reads and compiles one module. The commands that run nodes
  // (up, node, host, measure: the emulator, express, pino, the AWS SDK) are bundles of their own in
  // dist/lib/cli-heavy/, imported only when one of them runs.
  const heavy = ['up', 'node', 'host', 'measure', 'emulate-enclave', 'dashboard'];
  const heavyImports = {
    name: 'cli-heavy-external',
    setup(b) {
      // cli/commands/index.ts imports them as './<name>.ts'; cli.js reaches them as './cli-heavy/<name>.js'.
      b.onResolve({ filter: new RegExp(`^\\./(${heavy.join('|')})\\.ts$`) }, (args) =>
        args.importer.endsWith(join('cli', 'commands', 'index.ts')) ? { path: `./cli-heavy/${args.path.slice(2, -3)}.js`, external: true } : undefined);
    },
  };
  await build({ ...common, splitting: false, entryPoints: { cli: 'cli/main.ts' }, outdir, plugins: [heavyImports] });
  await build({
    ...common,
    entryPoints: Object.fromEntries(heavy.map((h) => [h, `cli/commands/${h}.ts`])),
    outdir: join(outdir, 'cli-heavy'),
    chunkNames: 'chunks/[name]-[hash]',
  });
  // The dashboard's page and script, read beside the module that serves them (cli/dashboard/server.ts).
  for (const f of ['index.html', 'app.js']) copyFileSync(join(root, 'cli', 'dashboard', f), join(outdir, 'cli-heavy', f));
}

if (!values['no-types']) {
  rmSync(join(root, 'dist', 'types'), { recursive: true, force: true });
  execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
  // The sources import './x.ts'; a consumer's TypeScript wants './x.js' in declarations.
  for (const entry of readdirSync(join(root, 'dist', 'types'), { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.d.ts')) continue;
    const file = join(entry.parentPath ?? entry.path, entry.name);
    const text = readFileSync(file, 'utf8');
    const fixed = text.replace(/(from\s+|import\()(['"])(\.{1,2}\/[^'"]+)\.ts\2/g, '$1$2$3.js$2');
    if (fixed !== text) writeFileSync(file, fixed);
  }
}
