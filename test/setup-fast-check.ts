// Property tests draw random cases. In CI they replay one fixed seed, so a run is reproducible and a
// submission cannot fail by the luck of the draw; locally each run draws a new seed, to keep finding
// new cases. Either way the seed is printed by fast-check with any failure; FC_SEED=<n> replays it.
import fc from 'fast-check';

const fixed = process.env.FC_SEED ?? (process.env.CI ? '20261125' : undefined);
if (fixed !== undefined) fc.configureGlobal({ seed: Number(fixed) });
