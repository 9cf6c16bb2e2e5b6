// `ekv measure [<image>]`: the PCRs the emulator reports for an enclave image
// (see emulator/measure.ts for what each one covers). A client's expected
// PCRs come from here, not from the node it is about to trust.
import { readFile, stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { imageBytesMax } from '../../emulator/launcher.ts';
import { measureImage } from '../../emulator/measure.ts';

export const defaultImagePath = 'dist/enclave.mjs';

export function registerMeasure(program: Command): void {
  program
    .command('measure')
    .description('print the PCR0/1/2 the emulated TEE measures for an enclave image')
    .argument('[image]', 'the enclave image file', defaultImagePath)
    .option('--json', 'print {"PCR0","PCR1","PCR2"} as JSON (the spelling of infra/pcrs.json)')
    .action(async (image: string, options: { json?: boolean }) => {
      const size = await stat(image).then((s) => s.size, () => -1);
      if (size < 0) {
        process.stderr.write(`NOT_FOUND: no enclave image at ${image} (run npm run build)\n`);
        process.exitCode = 1;
        return;
      }
      if (size > imageBytesMax) {
        process.stderr.write(`TOO_LARGE: ${image} is ${size} bytes, over ${imageBytesMax}\n`);
        process.exitCode = 1;
        return;
      }
      const { pcr0, pcr1, pcr2 } = measureImage(await readFile(image));
      const hex = { PCR0: pcr0.toString('hex'), PCR1: pcr1.toString('hex'), PCR2: pcr2.toString('hex') };
      if (options.json) process.stdout.write(JSON.stringify(hex) + '\n');
      else process.stdout.write(`PCR0 ${hex.PCR0}\nPCR1 ${hex.PCR1}\nPCR2 ${hex.PCR2}\n`);
    });
}
