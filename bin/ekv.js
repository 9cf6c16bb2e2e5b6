#!/usr/bin/env node
// The `ekv` command: the compiled CLI (dist/lib/cli.js, built by `npm run build`, which `npm ci`,
// `npm start` and the tests run). No TypeScript loader at run time.
try {
  await import('../dist/lib/cli.js');
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/lib/cli.js')) {
    process.stderr.write('ekv: the CLI is not built (dist/lib/cli.js is missing): run `npm run build`\n');
    process.exit(2);
  }
  throw err;
}
