/**
 * The release record: which enclave images this deployment may run right now, and where their artifacts
 * are. On AWS it is the SSM parameter `/ekv/<stack>/release` (infra/lib/ring-stack.ts), read by
 * infra/host/run-enclave.sh at every launch and copied to /var/lib/ekv/release.json, so an upgrade changes
 * it without touching any instance's user data:
 *
 *   { "version": 1,
 *     "current": { "pcr0": "<96 hex>", "artifactsUri": "s3://bucket/release-<commit>" },
 *     "next":    { "pcr0": "<96 hex>", "artifactsUri": "s3://bucket/release-<commit>" } }   // during a roll only
 *
 * It decides no trust: the key policy (KMS) and the images' own peer rules decide which enclaves get data.
 * The host uses it to launch the image this node is told to run and to report another one as unhealthy.
 */
import { existsSync, readFileSync } from 'node:fs';

export interface ReleaseImage {
  pcr0: string;
  artifactsUri: string;
}

export interface Release {
  version: 1;
  current: ReleaseImage;
  next?: ReleaseImage;
}

export const releaseBytesMax = 4096;
const pcr0Re = /^[0-9a-f]{96}$/;
const s3Re = /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/[A-Za-z0-9._\-/]*)?$/;

export class ReleaseError extends Error {
  readonly code = 'BAD_RELEASE';
}

function image(v: unknown, where: string): ReleaseImage {
  if (typeof v !== 'object' || v === null) throw new ReleaseError(`${where}: an object is required`);
  const o = v as Record<string, unknown>;
  if (typeof o.pcr0 !== 'string' || !pcr0Re.test(o.pcr0) || /^0+$/.test(o.pcr0)) throw new ReleaseError(`${where}.pcr0: 96 lowercase hex digits, not all zero`);
  if (typeof o.artifactsUri !== 'string' || !s3Re.test(o.artifactsUri)) throw new ReleaseError(`${where}.artifactsUri: s3://bucket/prefix`);
  return { pcr0: o.pcr0, artifactsUri: o.artifactsUri.replace(/\/$/, '') };
}

export function parseRelease(text: string): Release {
  if (text.length > releaseBytesMax) throw new ReleaseError(`release record over ${releaseBytesMax} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ReleaseError('release record: not JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ReleaseError('release record: an object is required');
  const o = raw as Record<string, unknown>;
  if (o.version !== 1) throw new ReleaseError('release record: version 1 is required');
  const unknown = Object.keys(o).filter((k) => !['version', 'current', 'next'].includes(k));
  if (unknown.length > 0) throw new ReleaseError(`release record: unknown field ${unknown[0]?.slice(0, 40)}`);
  const current = image(o.current, 'current');
  if (o.next === undefined || o.next === null) return { version: 1, current };
  const next = image(o.next, 'next');
  if (next.pcr0 === current.pcr0) throw new ReleaseError('release record: next is the current image');
  return { version: 1, current, next };
}

/** The PCR0s a node of this release may run: the current image's, and the next one's during a roll. */
export function acceptedPcr0(r: Release): string[] {
  return [r.current.pcr0, ...(r.next ? [r.next.pcr0] : [])];
}

/** The release file, or null when there is none (yet); a malformed file is a ReleaseError. */
export function readReleaseFile(path: string): (Release & { accepted: string[] }) | null {
  if (!existsSync(path)) return null;
  const r = parseRelease(readFileSync(path, 'utf8'));
  return { ...r, accepted: acceptedPcr0(r) };
}

/** Which of the release's images a node runs: the one it was told to (`selected`) if the release still names it, else the current one. */
export function selectImage(r: Release, selected: string | null): ReleaseImage {
  const s = selected?.trim().toLowerCase() ?? '';
  if (r.next && s === r.next.pcr0) return r.next;
  return r.current;
}
