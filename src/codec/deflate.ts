/**
 * Raw DEFLATE (RFC 1951: no zlib or gzip wrapper, no checksum) with an optional preset
 * dictionary, and a bounded inflate.
 *
 * Preset dictionary: RFC 1951 §3.2 lets a back-reference reach 32 KiB behind the current byte;
 * both sides pretend the dictionary was the output just before the stream starts. fflate ≥ 0.8
 * supports this with its `dictionary` option on deflateSync and on the streaming Inflate (checked
 * in test/unit/codec/deflate.test.ts against the installed 0.8.x). Both ends must hold the same
 * bytes: a different dictionary gives corrupt output or an invalid distance, never a clean
 * failure, so the dictionary version is agreed in the handshake (ERR_DICTIONARY_MISMATCH lives
 * there, not here). Only the last 32 KiB of a dictionary could ever be used, so a longer one is
 * refused instead of silently cut.
 *
 * Bounded inflate: the input is pushed into fflate's streaming Inflate a few bytes at a time and
 * the output is counted as it appears, so a bomb is stopped after at most one small step past the
 * bound. One input byte can expand to at most 1032 output bytes (a 1-bit length code for 258 plus
 * a 1-bit distance code), so a step of `s` input bytes yields at most 1032·s bytes; we choose
 * s = clamp(⌊maxOutputBytes / 1032⌋, 64, 16384). Peak memory is therefore about
 * maxOutputBytes + 1032·s (≤ 2 × the bound for bounds over 64 KiB) plus fflate's working buffer
 * (32 KiB window + 128 KiB headroom, doubled as it grows), independent of the bomb's real size.
 *
 * Limitation: bytes after the final block are ignored (fflate does not report where the stream
 * ended). A truncated stream is ERR_INFLATE ('unexpected EOF').
 */
import { Inflate, deflateSync, type DeflateOptions } from 'fflate';
import { ConfigError, WireError } from '../errors.ts';

/** RFC 1951 §3.2.5: distances reach back at most 32768 bytes. */
export const DEFLATE_WINDOW_BYTES = 32_768;

/** Upper bound of DEFLATE expansion per input byte (258 bytes per 2 bits). */
const MAX_EXPANSION_PER_BYTE = 1032;

export type DeflateLevel = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;

export interface DeflateRawOptions {
  /** Preset dictionary, at most 32 KiB. */
  dictionary?: Uint8Array;
  /** 0 (store) .. 9 (smallest); default 9, since our payloads are small and airtime is dear. */
  level?: DeflateLevel;
}

export interface InflateRawBoundedOptions {
  /** The dictionary the sender used, if any. */
  dictionary?: Uint8Array;
  /** Output bound; one byte more is ERR_INFLATE_LIMIT. */
  maxOutputBytes: number;
}

function checkDictionary(d: Uint8Array | undefined): Uint8Array | undefined {
  if (d === undefined) return undefined;
  if (!(d instanceof Uint8Array)) throw new ConfigError('dictionary must be a Uint8Array', { key: 'dictionary' });
  if (d.length === 0) return undefined;
  if (d.length > DEFLATE_WINDOW_BYTES) {
    throw new ConfigError(`dictionary of ${d.length} bytes exceeds the ${DEFLATE_WINDOW_BYTES}-byte DEFLATE window`, { key: 'dictionary' });
  }
  return d;
}

/** Compress `bytes` as a raw DEFLATE stream. */
export function deflateRaw(bytes: Uint8Array, opts: DeflateRawOptions = {}): Uint8Array {
  const level = opts.level ?? 9;
  if (!Number.isInteger(level) || level < 0 || level > 9) {
    throw new ConfigError(`level must be an integer from 0 to 9, got ${String(level)}`, { key: 'level' });
  }
  const dictionary = checkDictionary(opts.dictionary);
  const o: DeflateOptions = dictionary ? { level, dictionary } : { level };
  return deflateSync(bytes, o);
}

/**
 * Decompress a raw DEFLATE stream, refusing to produce more than `maxOutputBytes`.
 * WireError ERR_INFLATE_LIMIT as soon as the output passes the bound; ERR_INFLATE on corrupt,
 * truncated or empty input.
 */
export function inflateRawBounded(bytes: Uint8Array, opts: InflateRawBoundedOptions): Uint8Array {
  const max = opts.maxOutputBytes;
  if (!Number.isSafeInteger(max) || max < 0) {
    throw new ConfigError(`maxOutputBytes must be a non-negative integer, got ${String(max)}`, { key: 'maxOutputBytes' });
  }
  const dictionary = checkDictionary(opts.dictionary);
  if (bytes.length === 0) throw new WireError('ERR_INFLATE', 'codec', 'empty input is not a DEFLATE stream');

  const chunks: Uint8Array[] = [];
  let total = 0;
  const inflater = new Inflate(dictionary ? { dictionary } : {}, (data) => {
    total += data.length;
    if (total > max) {
      throw new WireError('ERR_INFLATE_LIMIT', 'codec', `inflated output exceeds maxOutputBytes ${max}`, { maxOutputBytes: max });
    }
    if (data.length > 0) chunks.push(data);
  });

  const step = Math.min(16_384, Math.max(64, Math.floor(max / MAX_EXPANSION_PER_BYTE)));
  try {
    for (let off = 0; off < bytes.length; off += step) {
      const end = Math.min(off + step, bytes.length);
      // The last chunk is never empty and carries final=true, so fflate reports a stream that
      // stops early ('unexpected EOF') instead of returning what it has.
      inflater.push(bytes.subarray(off, end), end === bytes.length);
    }
  } catch (e) {
    if (e instanceof WireError) throw e;
    throw new WireError('ERR_INFLATE', 'codec', `corrupt DEFLATE stream: ${e instanceof Error ? e.message : String(e)}`);
  }

  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(total);
  let pos = 0;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.length;
  }
  return out;
}
