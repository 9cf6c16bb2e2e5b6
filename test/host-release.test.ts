// The release record (host/release.ts): the SSM parameter naming the images a deployment may run.
import { describe, expect, it } from 'vitest';
import { acceptedPcr0, parseRelease, ReleaseError, selectImage } from '../host/release.ts';

const a = 'a'.repeat(96);
const b = 'b'.repeat(96);
const rel = (o: unknown) => JSON.stringify(o);

describe('release record', () => {
  it('accepts the current image, and the next one during a roll', () => {
    const one = parseRelease(rel({ version: 1, current: { pcr0: a, artifactsUri: 's3://bkt/release-1/' } }));
    expect(acceptedPcr0(one)).toEqual([a]);
    expect(one.current.artifactsUri).toBe('s3://bkt/release-1');
    const two = parseRelease(rel({ version: 1, current: { pcr0: a, artifactsUri: 's3://bkt/r1' }, next: { pcr0: b, artifactsUri: 's3://bkt/r2' } }));
    expect(acceptedPcr0(two)).toEqual([a, b]);
  });

  it('selects the image an upgrade step chose while the release names it, else the current one', () => {
    const two = parseRelease(rel({ version: 1, current: { pcr0: a, artifactsUri: 's3://bkt/r1' }, next: { pcr0: b, artifactsUri: 's3://bkt/r2' } }));
    expect(selectImage(two, b).pcr0).toBe(b);
    expect(selectImage(two, `${b.toUpperCase()}\n`).pcr0).toBe(b);
    expect(selectImage(two, null).pcr0).toBe(a);
    expect(selectImage(two, 'c'.repeat(96)).pcr0).toBe(a);
    // After the roll the release names B as current: a node that selected B keeps running B.
    const done = parseRelease(rel({ version: 1, current: { pcr0: b, artifactsUri: 's3://bkt/r2' } }));
    expect(selectImage(done, b).pcr0).toBe(b);
    expect(selectImage(done, a).pcr0).toBe(b);
  });

  it('refuses malformed records with BAD_RELEASE', () => {
    const bad = [
      'nope', '[]', rel({ version: 2, current: { pcr0: a, artifactsUri: 's3://bkt/r' } }),
      rel({ version: 1 }), rel({ version: 1, current: { pcr0: 'A'.repeat(96), artifactsUri: 's3://bkt/r' } }),
      rel({ version: 1, current: { pcr0: '0'.repeat(96), artifactsUri: 's3://bkt/r' } }),
      rel({ version: 1, current: { pcr0: a, artifactsUri: 'https://bkt/r' } }),
      rel({ version: 1, current: { pcr0: a, artifactsUri: 's3://bkt/r' }, next: { pcr0: a, artifactsUri: 's3://bkt/r' } }),
      rel({ version: 1, current: { pcr0: a, artifactsUri: 's3://bkt/r' }, extra: 1 }),
      rel({ version: 1, current: { pcr0: a, artifactsUri: `s3://bkt/${'x'.repeat(5000)}` } }),
    ];
    for (const text of bad) expect(() => parseRelease(text), text.slice(0, 80)).toThrow(ReleaseError);
  });
});
