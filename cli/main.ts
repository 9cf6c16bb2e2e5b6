// The `ekv` command line. Each command lives in cli/commands/<name>.ts and
// exports `register(program)`. Exit codes: 0 ok, 1 a refusal or a failed
// operation (its code on stderr), 2 a usage error.
//
// Start-up time matters (`ekv get` from a shell script): only the module of the command being run is
// loaded (the build splits each into its own chunk), so `get` never loads the emulator, express or the
// AWS SDK. Without a known command name (`ekv --help`, a typo) every command is registered.
import { Command, CommanderError } from 'commander';
import { commandModules } from './commands/index.ts';

const program = new Command('ekv')
  .description('enclave-kv: a key-value store on a ring of attested Nitro enclaves')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

// `ekv status | head`: a reader that goes away is the end of the output, not a crash.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

const name = process.argv[2];
const one = commandModules.find((m) => name !== undefined && m.names.includes(name));
for (const m of one ? [one] : commandModules) (await m.load())(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version exit 0; anything else commander rejects is a usage error.
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  throw err;
}
