/**
 * Preset DEFLATE dictionaries for message bodies, and per-message compression with them.
 *
 * A dictionary is frozen wire context like keymap-v1 or values-v1: `matrix-v1` is trained from
 * real Trickle CBOR v1 traffic (scripts/train-dictionary.ts, trainer in dictionary-train.ts) and
 * embedded as a generated module (dictionaries/matrix-v1.ts: base64 + id + sha256), so nothing is
 * read from disk at run time. A retrained dictionary is a new id (`matrix-v2`), never new bytes
 * under an old id.
 *
 * Agreement: raw DEFLATE carries no dictionary id (RFC 1951 has no FDICT; that is zlib's
 * RFC 1950 §2.2 header, which we do not send), and a stream inflated with the wrong dictionary
 * yields garbage or an invalid distance, not a clean error. So the two ends must bind
 * `dictionaryContext(dict)` (id + sha256) into the session context — e.g. the Noise prologue —
 * so that different dictionaries fail the handshake instead of corrupting messages;
 * `assertSameDictionary` gives the clear ERR_DICTIONARY_MISMATCH when the ids are exchanged.
 *
 * Integrity: the embedded bytes are checked against their sha256 the first time they are
 * loaded; a mismatch (a hand-edited or truncated data module) throws ERR_DICTIONARY_MISMATCH
 * naming the dictionary, before any message is compressed with it.
 *
 * Per message: `compressBody` returns the deflated bytes only when they are strictly smaller
 * than the input, so compression never costs airtime; the caller marks which form it sent.
 * `decompressBody` is bounded (deflate.ts, inflateRawBounded): a bomb stops at maxOutputBytes.
 *
 * Pure: no I/O, no logging.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { TrickleError } from '../errors.ts';
import { toHex } from '../util/bytes.ts';
import { DEFLATE_WINDOW_BYTES, deflateRaw, inflateRawBounded } from './deflate.ts';
import * as matrixV1 from './dictionaries/matrix-v1.ts';

/** A preset dictionary as both ends hold it. */
export interface PresetDictionary {
  /** Versioned name, e.g. 'matrix-v1'. */
  readonly id: string;
  /** Lower-case hex SHA-256 of `bytes`. */
  readonly sha256: string;
  readonly bytes: Uint8Array;
}

/** The generated data module's shape (dictionaries/*.ts). */
export interface DictionaryData {
  readonly DICTIONARY_ID: string;
  readonly DICTIONARY_SHA256: string;
  readonly DICTIONARY_BASE64: string;
}

const ID = /^[a-z0-9][a-z0-9.-]{0,31}$/;
const HEX64 = /^[0-9a-f]{64}$/;

function mismatch(message: string, detail: Record<string, unknown>): TrickleError {
  return new TrickleError('ERR_DICTIONARY_MISMATCH', 'codec', message, detail);
}

/**
 * Decode and verify a dictionary: the id must be a short lower-case name, the bytes 1..32768
 * long (only the last 32 KiB can ever be reached, RFC 1951 §3.2.5), and their SHA-256 must be
 * the declared one. Any failure is ERR_DICTIONARY_MISMATCH naming the dictionary.
 */
export function loadDictionary(data: DictionaryData): PresetDictionary {
  const id = data.DICTIONARY_ID;
  if (!ID.test(id)) throw mismatch(`preset dictionary id ${JSON.stringify(id)} is not a short lower-case name like "matrix-v1"`, { dictionary: id });
  const declared = data.DICTIONARY_SHA256.toLowerCase();
  if (!HEX64.test(declared)) throw mismatch(`preset dictionary ${id}: declared sha256 is not 64 hex digits`, { dictionary: id });
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(data.DICTIONARY_BASE64) || data.DICTIONARY_BASE64.length % 4 !== 0) {
    throw mismatch(`preset dictionary ${id}: the embedded data is not valid base64; regenerate it with "npx tsx scripts/train-dictionary.ts"`, { dictionary: id });
  }
  const bytes = new Uint8Array(Buffer.from(data.DICTIONARY_BASE64, 'base64'));
  if (bytes.length === 0 || bytes.length > DEFLATE_WINDOW_BYTES) {
    throw mismatch(`preset dictionary ${id} has ${bytes.length} bytes; it must have 1 to ${DEFLATE_WINDOW_BYTES}`, { dictionary: id, bytes: bytes.length });
  }
  const actual = toHex(sha256(bytes));
  if (actual !== declared) {
    throw mismatch(
      `preset dictionary ${id} is corrupt: its bytes hash to sha256 ${actual}, but ${declared} is declared; ` +
        'restore src/codec/dictionaries/ from the release or regenerate it with a new id',
      { dictionary: id, expectedSha256: declared, actualSha256: actual },
    );
  }
  return Object.freeze({ id, sha256: declared, bytes });
}

let defaultDictionary: PresetDictionary | undefined;

/** The dictionary Trickle uses by default (matrix-v1), verified once on first use. */
export function matrixDictionaryV1(): PresetDictionary {
  defaultDictionary ??= loadDictionary(matrixV1);
  return defaultDictionary;
}

/** Id of the default dictionary, e.g. 'matrix-v1'. */
export function dictionaryId(dict: PresetDictionary = matrixDictionaryV1()): string {
  return dict.id;
}

/** Lower-case hex SHA-256 of the default dictionary's bytes. */
export function dictionarySha256(dict: PresetDictionary = matrixDictionaryV1()): string {
  return dict.sha256;
}

/**
 * What a session binds (Noise prologue, session context): "trickle-dictionary:<id>:<sha256>".
 * Two ends with different bytes under the same id still differ here.
 */
export function dictionaryContext(dict: PresetDictionary = matrixDictionaryV1()): string {
  return `trickle-dictionary:${dict.id}:${dict.sha256}`;
}

/** ERR_DICTIONARY_MISMATCH unless the peer announced the same dictionary as ours. */
export function assertSameDictionary(local: PresetDictionary, peer: { id: string; sha256: string }): void {
  if (local.id === peer.id && local.sha256 === peer.sha256.toLowerCase()) return;
  throw mismatch(
    `preset dictionary mismatch: this end has ${local.id} (sha256 ${local.sha256.slice(0, 16)}…), ` +
      `the peer has ${peer.id} (sha256 ${peer.sha256.slice(0, 16)}…); run the same Trickle release at both ends`,
    { local: local.id, localSha256: local.sha256, peer: peer.id, peerSha256: peer.sha256 },
  );
}

/**
 * Raw DEFLATE of `bytes` with the preset dictionary (level 9), or undefined when that would not
 * be strictly smaller than `bytes` (send them as they are).
 */
export function compressBody(bytes: Uint8Array, dict: PresetDictionary = matrixDictionaryV1()): Uint8Array | undefined {
  if (bytes.length === 0) return undefined;
  const z = deflateRaw(bytes, { dictionary: dict.bytes, level: 9 });
  return z.length < bytes.length ? z : undefined;
}

/**
 * Inverse of compressBody: at most `maxOutputBytes` bytes, else WireError ERR_INFLATE_LIMIT;
 * corrupt input (or another dictionary's stream, when it happens to fail) is ERR_INFLATE.
 */
export function decompressBody(bytes: Uint8Array, dict: PresetDictionary, maxOutputBytes: number): Uint8Array {
  return inflateRawBounded(bytes, { dictionary: dict.bytes, maxOutputBytes });
}
