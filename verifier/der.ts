// A minimal, strict DER reader for the fast chain check (chain.ts): it finds the few fields of an
// X.509 certificate that node:crypto's X509Certificate does not expose (the exact to-be-signed bytes,
// the raw issuer and subject names, the validity dates, the extensions with their criticality). It
// never decides that anything is valid: whatever it cannot read exactly (long or indefinite lengths,
// unusual encodings, unknown fields) makes it return null, and the caller then runs the complete
// pkijs check instead. (asn1js, which pkijs uses, costs about 1 ms per certificate here; this walk a
// few microseconds.) Every length is checked against the input before it is used.

export interface Tlv {
  tag: number;
  /** Offset of the first byte of the element (its tag). */
  start: number;
  /** Offset of the first content byte. */
  body: number;
  /** Offset just past the element. */
  end: number;
}

/** One element at `pos`, within `[pos, limit)`; null for anything but a definite DER length. */
export function readTlv(b: Uint8Array, pos: number, limit: number): Tlv | null {
  if (pos + 2 > limit) return null;
  const tag = b[pos] as number;
  if ((tag & 0x1f) === 0x1f) return null; // multi-byte tags: not in a certificate
  let len = b[pos + 1] as number;
  let body = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 2 || body + n > limit) return null; // indefinite, or longer than a 1 KiB certificate needs
    len = 0;
    for (let i = 0; i < n; i++) len = (len << 8) | (b[body + i] as number);
    body += n;
    if (len < 0x80 || (n === 2 && len < 0x100)) return null; // not minimal: not DER
  }
  const end = body + len;
  if (end > limit) return null;
  return { tag, start: pos, body, end };
}

/** The children of a constructed element; null when they do not exactly fill it. */
export function children(b: Uint8Array, parent: Tlv, max = 64): Tlv[] | null {
  const out: Tlv[] = [];
  let pos = parent.body;
  while (pos < parent.end) {
    if (out.length >= max) return null;
    const t = readTlv(b, pos, parent.end);
    if (t === null) return null;
    out.push(t);
    pos = t.end;
  }
  return out;
}

export interface CertExtension {
  oid: string;
  critical: boolean;
  /** The extnValue's contents (the DER of the extension's own value). */
  value: Uint8Array;
}

export interface CertFields {
  tbs: Uint8Array;
  /** The outer signatureAlgorithm and the tbs `signature` field, as DER. */
  outerAlg: Uint8Array;
  innerAlg: Uint8Array;
  issuer: Uint8Array;
  subject: Uint8Array;
  notBefore: number;
  notAfter: number;
  extensions: CertExtension[];
}

const tagSequence = 0x30;
const tagInteger = 0x02;
const tagBoolean = 0x01;
const tagOctetString = 0x04;
const tagOid = 0x06;
const tagUtcTime = 0x17;
const tagGeneralizedTime = 0x18;
const tagVersion = 0xa0;
const tagExtensions = 0xa3;

/** A v3 certificate's fields, or null when it is not a plain DER v3 certificate (no unique ids). */
export function certFields(b: Uint8Array): CertFields | null {
  const cert = readTlv(b, 0, b.length);
  if (cert === null || cert.tag !== tagSequence || cert.end !== b.length) return null;
  const top = children(b, cert, 3);
  if (top === null || top.length !== 3) return null;
  const [tbsT, algT] = top as [Tlv, Tlv, Tlv];
  if (tbsT.tag !== tagSequence || algT.tag !== tagSequence) return null;
  const tbs = children(b, tbsT, 10);
  // version, serial, signature, issuer, validity, subject, spki, extensions: nothing more, nothing less.
  if (tbs === null || tbs.length !== 8) return null;
  const [ver, serial, innerAlg, issuer, validity, subject, spki, exts] = tbs as [Tlv, Tlv, Tlv, Tlv, Tlv, Tlv, Tlv, Tlv];
  if (ver.tag !== tagVersion || serial.tag !== tagInteger || innerAlg.tag !== tagSequence || issuer.tag !== tagSequence) return null;
  if (validity.tag !== tagSequence || subject.tag !== tagSequence || spki.tag !== tagSequence || exts.tag !== tagExtensions) return null;
  const v = children(b, ver, 1);
  if (v === null || v.length !== 1 || v[0]!.tag !== tagInteger || v[0]!.end - v[0]!.body !== 1 || b[v[0]!.body] !== 2) return null;
  const times = children(b, validity, 2);
  if (times === null || times.length !== 2) return null;
  const notBefore = timeOf(b, times[0]!);
  const notAfter = timeOf(b, times[1]!);
  if (notBefore === null || notAfter === null) return null;
  const extensions = extensionsOf(b, exts);
  if (extensions === null) return null;
  return {
    tbs: b.subarray(tbsT.start, tbsT.end),
    outerAlg: b.subarray(algT.start, algT.end),
    innerAlg: b.subarray(innerAlg.start, innerAlg.end),
    issuer: b.subarray(issuer.start, issuer.end),
    subject: b.subarray(subject.start, subject.end),
    notBefore,
    notAfter,
    extensions,
  };
}

function extensionsOf(b: Uint8Array, wrapper: Tlv): CertExtension[] | null {
  const inner = children(b, wrapper, 1);
  if (inner === null || inner.length !== 1 || inner[0]!.tag !== tagSequence) return null;
  const list = children(b, inner[0]!, 32);
  if (list === null || list.length === 0) return null;
  const out: CertExtension[] = [];
  for (const e of list) {
    if (e.tag !== tagSequence) return null;
    const parts = children(b, e, 3);
    if (parts === null || parts.length < 2) return null;
    const oidT = parts[0]!;
    let critical = false;
    let valueT = parts[1]!;
    if (parts.length === 3) {
      const boolT = parts[1]!;
      // DER: an explicit critical flag is always TRUE (FALSE is the default and must be omitted).
      if (boolT.tag !== tagBoolean || boolT.end - boolT.body !== 1 || b[boolT.body] !== 0xff) return null;
      critical = true;
      valueT = parts[2]!;
    }
    if (oidT.tag !== tagOid || valueT.tag !== tagOctetString) return null;
    const oid = oidText(b.subarray(oidT.body, oidT.end));
    if (oid === null) return null;
    out.push({ oid, critical, value: b.subarray(valueT.body, valueT.end) });
  }
  return out;
}

/** Dotted text of an OID's contents; null when not minimally encoded. */
export function oidText(c: Uint8Array): string | null {
  if (c.length === 0 || c.length > 32) return null;
  const arcs: number[] = [];
  let v = 0;
  for (let i = 0; i < c.length; i++) {
    const byte = c[i] as number;
    if (v === 0 && byte === 0x80) return null; // leading 0x80: not minimal
    v = v * 128 + (byte & 0x7f);
    if (v > 0xffffffff) return null;
    if ((byte & 0x80) === 0) {
      arcs.push(v);
      v = 0;
    } else if (i === c.length - 1) return null; // truncated arc
  }
  const first = arcs[0] as number;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

/** UTCTime YYMMDDHHMMSSZ or GeneralizedTime YYYYMMDDHHMMSSZ, as RFC 5280 requires; ms since the epoch. */
function timeOf(b: Uint8Array, t: Tlv): number | null {
  const text = String.fromCharCode(...b.subarray(t.body, t.end));
  let m: RegExpExecArray | null;
  let year: number;
  if (t.tag === tagUtcTime) {
    m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(text);
    if (m === null) return null;
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (t.tag === tagGeneralizedTime) {
    m = /^(\d\d\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(text);
    if (m === null) return null;
    year = Number(m[1]);
    if (year < 1950) return null; // Date.UTC maps years below 100 to the 1900s; no certificate needs them
  } else return null;
  const [mo, d, h, mi, s] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number];
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59) return null;
  const ms = Date.UTC(year, mo - 1, d, h, mi, s);
  // Date.UTC rolls 31 February over into March; refuse instead.
  if (new Date(ms).getUTCDate() !== d) return null;
  return ms;
}

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLen INTEGER OPTIONAL }; null if not plain DER. */
export function basicConstraintsCa(v: Uint8Array): boolean | null {
  const seq = readTlv(v, 0, v.length);
  if (seq === null || seq.tag !== tagSequence || seq.end !== v.length) return null;
  const parts = children(v, seq, 2);
  if (parts === null) return null;
  let i = 0;
  let ca = false;
  if (parts[i]?.tag === tagBoolean) {
    const p = parts[i]!;
    if (p.end - p.body !== 1 || v[p.body] !== 0xff) return null; // DER: FALSE is omitted
    ca = true;
    i++;
  }
  if (i < parts.length) {
    const p = parts[i]!;
    if (p.tag !== tagInteger || p.end - p.body !== 1 || (v[p.body] as number) > 0x7f) return null;
    i++;
  }
  return i === parts.length ? ca : null;
}

/** The first byte of a KeyUsage BIT STRING's bits (keyCertSign is 0x04); null if not a plain BIT STRING. */
export function keyUsageFirstByte(v: Uint8Array): number | null {
  const t = readTlv(v, 0, v.length);
  if (t === null || t.tag !== 0x03 || t.end !== v.length || t.end - t.body < 2 || t.end - t.body > 3) return null;
  if ((v[t.body] as number) > 7) return null;
  return v[t.body + 1] as number;
}
