// The `ekv` command line. Each command lives in cli/commands/<name>.ts and
// exports `register(program)`. Exit codes: 0 ok, 1 a refusal or a failed
// operation (its code on stderr), 2 a usage error.
import { Command, CommanderError } from 'commander';
import { commands } from './commands/index.ts';

const program = new Command('ekv')
  .description('enclave-kv: a key-value store on a ring of attested Nitro enclaves')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

for (const register of commands) register(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version exit 0; anything else commander rejects is a usage error.
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  throw err;
}
