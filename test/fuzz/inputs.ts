// The input stream of one target, as a pure function of (seed, index): the parent regenerates the
// input a crashed or hung child was working on from the index alone.
import { handInputs, mutate, Rng } from './mutate.ts';
import type { FuzzTarget } from './targets.ts';

export class InputStream {
  readonly hand: Buffer[];
  private readonly seeds: Buffer[];

  constructor(
    private readonly target: FuzzTarget,
    private readonly seed: number,
  ) {
    this.seeds = target.seeds();
    this.hand = [...this.seeds, ...handInputs(target.layout, this.seeds)];
  }

  /** Input `i`: first the seeds and the hand-built dangerous shapes, then mutations of a seed. */
  at(i: number): Buffer {
    if (i < this.hand.length) return this.hand[i] as Buffer;
    const rng = new Rng((this.seed * 1_000_003 + i) % 2 ** 48);
    return mutate(rng, this.target.layout, rng.pick(this.seeds));
  }
}
