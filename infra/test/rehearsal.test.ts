// The local rehearsal of the production boot path (scripts/rehearse.ts), its shorter run: four nodes (R + 1) booted by
// `ekv host` as ekv-host.service starts it, the emulated KMS enforcing the synthesized template's key policy, the
// client's file from `ekv cluster init`, kill -9 of an enclave under a writer (watchdog, health red then green,
// credentials rotated since boot), a node on an image the policy does not admit yet, a node rolled to the
// next image under a writer (a mixed ring, no client pinned to "A or B" refused), and no acknowledged write lost.
import { describe, expect, it } from 'vitest';
import { rehearse } from '../scripts/rehearse.ts';

describe('rehearsal (short)', () => {
  // It was skipped after failing in CI: it booted node 0 alone and waited for it to serve, which with R = 3 it
  // never does since the data core needs R members per range (a lone founder's /healthz stays 503 NOT_SERVING).
  // The first boot now starts the nodes at once, as a first deploy does, and waits for the ring. The deployment
  // has four nodes (R + 1): with three, a node that is down (the one on the refused image) stops every range.
  it('boots, serves, survives kill -9 and a premature image, loses no acknowledged write', async () => {
    const lines: string[] = [];
    const r = await rehearse({ short: true, keys: 10, log: (l) => lines.push(`${new Date().toISOString()} ${l}`) })
      .finally(() => console.log(lines.join('\n'))); // the steps reached, also when one fails
    console.log(JSON.stringify(r.timingsMs));
    expect(r.acknowledgedWrites).toBeGreaterThanOrEqual(10);
    expect(r.refusal).toMatch(/AccessDeniedException.*kms:RecipientAttestation:ImageSha384/);
    expect(r.timingsMs.killToGreen).toBeGreaterThan(0);
    // A mixed ring: node 1 rolled to image B, accepted by the A nodes (ringPeers), no client refused.
    expect(r.timingsMs.roll_node1).toBeGreaterThan(0);
  }, 420_000); // 160-180 s on a 2-core machine loaded by other work (docs/deploy.md section 11)
});
