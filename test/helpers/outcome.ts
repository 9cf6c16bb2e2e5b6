import { EkvError } from '../../protocol/errors.ts';

/** An operation's outcome as a string: a read's value, `ACK <version>` for a write, or the EkvError's code. */
export async function outcome<T>(p: Promise<T>): Promise<string> {
  try {
    const v = await p;
    return Buffer.isBuffer(v) ? v.toString() : `ACK ${String(v)}`;
  } catch (err) {
    if (err instanceof EkvError) return err.code;
    throw err;
  }
}
