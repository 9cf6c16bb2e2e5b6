/**
 * Where the ring's other members are, as this node's enclave last said (its `status`: successors and
 * predecessor, read by the health check): the host keeps these addresses in `ring-members.json` in its data
 * directory and, when it launches the enclave again, names one as the join address in node-config.json if it
 * was given none. Without this, a node started without a join address (the one that founded the ring) waits,
 * after a restart, for the others to reach it, and they have dropped it by then: it never rejoins.
 *
 * Addresses only ("where things are", enclave/host-config.ts): a wrong one makes the join fail or reach a node
 * that the enclave's attested, ring-secret-proving handshake refuses. It decides no trust.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const ringMembersFile = 'ring-members.json';
export const ringMembersMax = 16;
const addrRe = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$/;

/** Member addresses from an enclave `status` answer (successors, then the predecessor), bounded, without `self`. */
export function membersFromStatus(status: Record<string, unknown>, self: string): string[] {
  const refs = [...(Array.isArray(status.successors) ? status.successors : []), status.predecessor];
  const out: string[] = [];
  for (const r of refs) {
    const addr = typeof r === 'object' && r !== null ? (r as { addr?: unknown }).addr : undefined;
    if (typeof addr === 'string' && addrRe.test(addr) && addr !== self && !out.includes(addr)) out.push(addr);
    if (out.length >= ringMembersMax) break;
  }
  return out;
}

export class RingHints {
  private members: string[];
  private readonly file: string;
  /** Launches since the enclave last reported serving: each picks the next member, so a dead one is not retried forever. */
  private launches = 0;

  constructor(dataDir: string) {
    this.file = join(dataDir, ringMembersFile);
    this.members = RingHints.read(this.file);
  }

  private static read(file: string): string[] {
    if (!existsSync(file)) return [];
    try {
      const v = JSON.parse(readFileSync(file, 'utf8')) as unknown;
      return Array.isArray(v) ? v.filter((a): a is string => typeof a === 'string' && addrRe.test(a)).slice(0, ringMembersMax) : [];
    } catch {
      return [];
    }
  }

  get known(): readonly string[] {
    return this.members;
  }

  /** The member a launch should join through (rotating over launches that did not end up serving), or none. */
  nextJoin(): string {
    const m = this.members;
    return m.length === 0 ? '' : (m[this.launches++ % m.length] as string);
  }

  /** Remember what the enclave last reported (nothing is forgotten for an empty report: a lone node keeps its hints). */
  update(members: string[]): void {
    this.launches = 0;
    if (members.length === 0 || members.join(',') === this.members.join(',')) return;
    this.members = members.slice(0, ringMembersMax);
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.members) + '\n', { mode: 0o600 });
    renameSync(tmp, this.file);
  }
}

/** node-config.json for a launch: the configured join address, or, when there is none, a remembered member. */
export function nodeConfigForLaunch(cfg: { selfAddr: string; join: string }, hints: RingHints): { selfAddr: string; join: string } {
  if (cfg.join !== '') return cfg;
  return { selfAddr: cfg.selfAddr, join: hints.nextJoin() };
}
