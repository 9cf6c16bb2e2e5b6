/**
 * The sealed-blob store's wire protocol, spoken between the enclave (client,
 * enclave/seal/blob-client.ts) and the host (server, host/blob-store.ts) over a
 * path unix socket (`host-8001.sock`). Frames are `u32 BE length || CBOR map`
 * (protocol/frame.ts); every request carries an `id` that its response echoes,
 * so a client may pipeline. The blobs are opaque to the host: the enclave seals
 * them before `put` and authenticates them after `get`.
 *
 *   request  { id: uint, op: 'put', name, data } | { id, op: 'get', name }
 *            | { id, op: 'list', prefix } | { id, op: 'delete', name }
 *            | { id, op: 'append', name, data, create: bool }   (the sealed log's segments, docs/durability.md T1-T6:
 *              create starts the file anew; otherwise data goes at its end; answered once fdatasync returned)
 *   response { id, ok: true, data?: bytes | null, names?: string[] }
 *            | { id, ok: false, code: BlobWireCode, message: string }
 */
import { Encoder } from 'cbor-x';
import { decodeUntrustedCbor } from '../verifier/strict-cbor.ts';
import { encodeFrame } from './frame.ts';

/** Blob names: lower-case letters, digits, '.', '_', '-', not starting with '.' (no hidden or `..` names). */
export const blobNamePattern = /^[a-z0-9][a-z0-9._-]*$/;
export const blobNameBytesMax = 96;
/** One blob (a WAL segment or a snapshot chunk); the sealing layer splits larger payloads. */
export const blobBytesMax = 8 * 1024 * 1024;
/** Names one `list` may return; the sealing layer compacts long before this. */
export const blobListNamesMax = 65_536;
/** A frame holds one blob plus CBOR overhead, or a full name list. */
export const blobFrameBytesMax = Math.max(blobBytesMax + 4096, blobListNamesMax * (blobNameBytesMax + 4) + 4096);

export type BlobOp = 'put' | 'get' | 'list' | 'delete' | 'append';
export type BlobWireCode = 'BAD_REQUEST' | 'BAD_NAME' | 'TOO_LARGE' | 'TOO_MANY' | 'IO';

export interface BlobRequest {
  id: number;
  op: BlobOp;
  name?: string;
  prefix?: string;
  data?: Uint8Array;
  create?: boolean;
}

export interface BlobResponse {
  id: number;
  ok: boolean;
  data?: Uint8Array | null;
  names?: string[];
  code?: BlobWireCode;
  message?: string;
}

export function isValidBlobName(name: unknown): name is string {
  return typeof name === 'string' && name.length <= blobNameBytesMax && blobNamePattern.test(name);
}

/** A prefix may be empty; otherwise the same alphabet as names. */
export function isValidBlobPrefix(prefix: unknown): prefix is string {
  return typeof prefix === 'string' && (prefix === '' || isValidBlobName(prefix));
}

// Explicit options: plain maps as objects, no record extension, byte strings untagged.
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

export function encodeBlobMessage(msg: BlobRequest | BlobResponse): Buffer {
  return encodeFrame(cbor.encode(msg));
}

/** Decodes one frame body; returns null when it is not CBOR or not a map (the caller answers BAD_REQUEST). */
export function decodeBlobMessage(body: Uint8Array): Record<string, unknown> | null {
  let value: unknown;
  try {
    value = decodeUntrustedCbor(body, { maps: 'object', depthMax: 4 });
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array) return null;
  return value as Record<string, unknown>;
}

export function isRequestId(id: unknown): id is number {
  return typeof id === 'number' && Number.isSafeInteger(id) && id >= 0;
}

if (blobFrameBytesMax < blobBytesMax + 1024) throw new Error('blobFrameBytesMax too small');
