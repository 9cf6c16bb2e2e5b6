// The package build (`npm run build`, run by `npm ci` through `prepare`, by `npm start` and by the tests'
// global setup):
//   1. the enclave image, dist/enclave.mjs (scripts/build-enclave.mjs, unchanged: its bytes are PCR0);
//   2. the compiled JavaScript the CLI, the host and the SDK run, dist/lib/ (esbuild: one ESM bundle per
//      entry, code split so each CLI command loads only its own modules; npm packages stay external);
//   3. the SDK's type declarations, dist/types/ (tsc), unless --no-types.
//
//   node scripts/build.mjs [--no-enclave] [--no-lib] [--no-types]
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
  // The CLI on its own, so that its chunks follow its commands: one file for what `ekv get` needs.
  await build({ ...common, entryPoints: { cli: 'cli/main.ts' }, outdir, chunkNames: 'cli/[name]-[hash]' });
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
