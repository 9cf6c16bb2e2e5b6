/**
 * Access control from the command line (issue 7):
 *   ekv keygen [--out FILE] [--alg ed25519|p256] [--force]
 *   ekv ns create NS
 *   ekv acl show NS [--json]
 *   ekv acl grant NS <principal|group:NAME[@KEY]> read|write|admin   (a group is bound to its key)
 *   ekv acl revoke NS <principal|group:NAME> [read|write|admin]   (no right: all of them)
 *   ekv group create NAME [member...]      (the --identity key becomes the group key)
 *   ekv group show NAME
 *   ekv group add|remove NAME <principal>
 * Every ring command takes --identity FILE (or EKV_IDENTITY), -c/--cluster and --json.
 * Values go to stdout; refusals print `CODE: message` on stderr and exit 1; bad arguments exit 2.
 */
import type { Command } from 'commander';
import { generateIdentity, identityPath, loadIdentity, saveIdentity } from '../../client/identity.ts';
import type { AclView, GroupView } from '../../client/acl.ts';
import { aclBodyToJson, allRights, formatSubject, groupBodyToJson, parseSubject, type Right, type SubjectRef } from '../../protocol/acl-doc.ts';
import { Principal, principalFromText, type PrincipalAlg } from '../../protocol/principal.ts';
import { run, UsageError } from '../output.ts';
import { common, withClient, type CommonOpts } from './kv.ts';

export const defaultIdentityFile = 'ekv.key';

export function registerAcl(program: Command): void {
  registerKeygen(program);
  registerWhoami(program);
  registerNs(program);
  registerAclCommands(program);
  registerGroup(program);
}

function registerKeygen(program: Command): void {
  program
    .command('keygen')
    .description('write a new private key (mode 0600) and print its principal')
    .option('-o, --out <file>', 'where to write the key', defaultIdentityFile)
    .option('--alg <alg>', 'ed25519 or p256', 'ed25519')
    .option('--force', 'replace an existing file')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { out: string; alg: string; force?: boolean; json?: boolean }) =>
      run(o.json, async () => {
        if (o.alg !== 'ed25519' && o.alg !== 'p256') throw new UsageError('--alg must be ed25519 or p256');
        const principal = saveIdentity(o.out, generateIdentity(o.alg as PrincipalAlg), { overwrite: o.force === true });
        if (o.json) out({ ok: true, principal: principal.text, file: o.out, alg: o.alg });
        else {
          process.stdout.write(principal.text + '\n');
          process.stderr.write(`wrote ${o.out}; use it with --identity ${o.out} or EKV_IDENTITY=${o.out}\n`);
        }
      }),
    );
}

function registerWhoami(program: Command): void {
  program
    .command('whoami')
    .description('print the principal of a key file (the one --identity would prove), without contacting the ring')
    .option('--identity <file>', 'the private key file (default: $EKV_IDENTITY)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (o: { identity?: string; json?: boolean }) =>
      run(o.json, async () => {
        const file = identityPath(o.identity);
        if (file === null) throw new UsageError('no identity: pass --identity FILE or set EKV_IDENTITY');
        const principal = loadIdentity(file).principal;
        if (o.json) out({ ok: true, principal: principal.text, alg: principal.alg, file });
        else process.stdout.write(principal.text + '\n');
      }),
    );
}

function registerNs(program: Command): void {
  const ns = program.command('ns').description('namespaces: the prefix of a key up to its first "/"');
  common(ns.command('create').argument('<ns>'))
    .description('create a namespace owned by your identity (first creation wins, ring-wide)')
    .action(async (name: string, o: CommonOpts) =>
      run(o.json, async () => {
        const v = await withClient(o, (kv) => kv.acl.createNamespace(name));
        printAclChange(o, v);
      }),
    );
  common(ns.command('list'))
    .description('the namespaces your identity holds a right in (read, write or admin; owners included), sorted; anonymous: none')
    .option('--prefix <p>', 'only names starting with this', '')
    .action(async (o: CommonOpts & { prefix: string }) =>
      run(o.json, async () => {
        const names = await withClient(o, (kv) => kv.listNamespaces({ prefix: o.prefix }));
        if (o.json) process.stdout.write(JSON.stringify({ ok: true, namespaces: names }) + '\n');
        else if (names.length > 0) process.stdout.write(names.join('\n') + '\n');
      }),
    );
}

function registerAclCommands(program: Command): void {
  const acl = program.command('acl').description("a namespace's access-control list");
  common(acl.command('show').argument('<ns>'))
    .description('print the current ACL (for principals holding any right in the namespace)')
    .action(async (name: string, o: CommonOpts) =>
      run(o.json, async () => {
        const v = await withClient(o, (kv) => kv.acl.getAcl(name));
        if (o.json) out({ ok: true, ...aclBodyToJson(v.body) });
        else process.stdout.write(formatAcl(v));
      }),
    );
  common(acl.command('grant').argument('<ns>').argument('<subject>', 'a principal (ekv1...), group:NAME or group:NAME@<group key>').argument('<right>', allRights.join('|')))
    .description('give a principal or group a right (needs admin)')
    .action(async (name: string, subject: string, right: string, o: CommonOpts) =>
      run(o.json, async () => {
        const s = subjectArg(subject);
        const r = rightArg(right);
        const v = await withClient(o, (kv) => kv.acl.grant(name, s, r));
        printAclChange(o, v);
        // A group is bound by its key: say which, so the admin can check it is the group they meant.
        if (!o.json && !(s instanceof Principal)) {
          const e = v.body.entries.find((x) => !(x.subject instanceof Principal) && x.subject.group === s.group);
          if (e) process.stderr.write(`bound ${formatSubject(e.subject)}\n`);
        }
      }),
    );
  common(acl.command('revoke').argument('<ns>').argument('<subject>', 'a principal (ekv1...), group:NAME or group:NAME@<group key>').argument('[right]', `${allRights.join('|')} (default: all)`))
    .description('take a right (or all of them) from a principal or group (needs admin)')
    .action(async (name: string, subject: string, right: string | undefined, o: CommonOpts) =>
      run(o.json, async () => {
        const s = subjectArg(subject);
        const r = right === undefined ? null : rightArg(right);
        printAclChange(o, await withClient(o, (kv) => kv.acl.revoke(name, s, r)));
      }),
    );
}

function registerGroup(program: Command): void {
  const group = program.command('group').description('groups of principals, signed by the group key (the --identity that created them)');
  common(group.command('create').argument('<name>').argument('[members...]', 'principals (ekv1...)'))
    .description('create a group; your identity becomes its key')
    .action(async (name: string, members: string[], o: CommonOpts) =>
      run(o.json, async () => {
        const ps = members.map(principalArg);
        printGroup(o, await withClient(o, (kv) => kv.acl.createGroup(name, ps)));
      }),
    );
  common(group.command('show').argument('<name>'))
    .description('print the members (for the group key and members)')
    .action(async (name: string, o: CommonOpts) =>
      run(o.json, async () => printGroup(o, await withClient(o, (kv) => kv.acl.getGroup(name)), true)),
    );
  for (const verb of ['add', 'remove'] as const) {
    common(group.command(verb).argument('<name>').argument('<principal>'))
      .description(`${verb} a member (signed with the group key: --identity)`)
      .action(async (name: string, member: string, o: CommonOpts) =>
        run(o.json, async () => {
          const p = principalArg(member);
          printGroup(o, await withClient(o, (kv) => (verb === 'add' ? kv.acl.addMember(name, p) : kv.acl.removeMember(name, p))));
        }),
      );
  }
}

// ---------------------------------------------------------------- arguments and output

function rightArg(x: string): Right {
  if (!(allRights as readonly string[]).includes(x)) throw new UsageError(`right must be one of ${allRights.join(', ')}`);
  return x as Right;
}

function subjectArg(x: string): SubjectRef {
  try {
    return parseSubject(x);
  } catch (err) {
    throw new UsageError(`not a principal or group:NAME: ${(err as Error).message}`);
  }
}

function principalArg(x: string): Principal {
  try {
    return principalFromText(x);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function out(x: object): void {
  process.stdout.write(JSON.stringify(x) + '\n');
}

function printAclChange(o: CommonOpts, v: AclView): void {
  if (o.json) out({ ok: true, ...aclBodyToJson(v.body) });
  else process.stdout.write(`OK ${v.body.ns} version ${v.body.version}\n`);
}

function printGroup(o: CommonOpts, v: GroupView, members = false): void {
  if (o.json) out({ ok: true, ...groupBodyToJson(v.body) });
  else if (!members) process.stdout.write(`OK group ${v.body.name} version ${v.body.version}\n`);
  else process.stdout.write(`group ${v.body.name} version ${v.body.version} key ${v.body.key.text}\n` + v.body.members.map((m) => `  ${m.text}\n`).join(''));
}

function formatAcl(v: AclView): string {
  const b = v.body;
  const lines = [`namespace ${b.ns} version ${b.version}`, `  ${b.owner.text}  owner (${allRights.join(',')})`];
  for (const e of b.entries) lines.push(`  ${formatSubject(e.subject)}  ${e.rights.join(',')}`);
  return lines.join('\n') + '\n';
}
