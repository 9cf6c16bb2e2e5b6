/**
 * The cluster file (`cluster.json`) that `ekv up` writes and clients read:
 * node addresses and a trust section (roots as PEM, expected PCRs). The file
 * is configuration, not evidence: every node is still verified on connect, and
 * the trust section is used only when the caller opts in (whoever writes the
 * file would otherwise choose whom the caller trusts; docs/client-trust.md).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { EkvError } from '../protocol/errors.ts';
import type { TrustPolicy } from './trust.ts';

export interface ClusterNode {
  addr: string;
  http?: string;
}

export interface ClusterFile {
  version: 1;
  nodes: ClusterNode[];
  trust: TrustPolicy;
  replicas?: number;
}

export const clusterFileBytesMax = 1024 * 1024;

export function parseCluster(text: string): ClusterFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new EkvError('BAD_REQUEST', `cluster file is not JSON: ${(err as Error).message}`);
  }
  const c = raw as Partial<ClusterFile>;
  // review-17 F6: `trust: null` (typeof 'object') passed here and crashed the trust store with a TypeError.
  if (!c || c.version !== 1 || !Array.isArray(c.nodes) || c.nodes.length === 0 || typeof c.trust !== 'object' || c.trust === null || Array.isArray(c.trust)) {
    throw new EkvError('BAD_REQUEST', 'cluster file: expected { version: 1, nodes: [...], trust: {...} }');
  }
  for (const n of c.nodes) {
    if (!n || typeof n.addr !== 'string') throw new EkvError('BAD_REQUEST', 'cluster file: every node needs an addr');
  }
  return c as ClusterFile;
}

export function loadCluster(path: string): ClusterFile {
  let text: string;
  try {
    // The size is bounded before anything is read (the file is the operator's): at most one byte past the bound.
    const fd = openSync(path, 'r');
    try {
      const buf = Buffer.alloc(clusterFileBytesMax + 1);
      let n = 0;
      for (let r = 1; r > 0 && n < buf.length; n += r) r = readSync(fd, buf, n, buf.length - n, null);
      if (n > clusterFileBytesMax) throw new EkvError('BAD_REQUEST', 'cluster file too large');
      text = buf.subarray(0, n).toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    if (err instanceof EkvError) throw err;
    throw new EkvError('BAD_REQUEST', `cannot read cluster file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return parseCluster(text);
}
