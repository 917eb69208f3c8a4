/**
 * A preset-dictionary trainer for raw DEFLATE (RFC 1951), written for small messages.
 *
 * Why a preset dictionary helps: DEFLATE may refer back up to 32 KiB (RFC 1951 §3.2.5), and a
 * preset dictionary is treated as output that came before the first byte, so a 60-byte message
 * can copy "m.room.member…" from it as a 3-byte match instead of spelling it out. Nothing in a
 * raw DEFLATE stream names the dictionary: both ends must hold the same bytes (dictionary.ts).
 *
 * The method is in the spirit of zstd's COVER (Liao, Petri, Moffat, Wirth, "Effective
 * Construction of Relative Lempel-Ziv Dictionaries", WWW 2016), reimplemented:
 *
 *  1. Every sample is cut into fragments at its excluded byte ranges (deployment- or
 *     session-specific strings: ids, tokens, server names, user text), so no such byte can ever
 *     reach the dictionary.
 *  2. A d-mer is any run of `dmerBytes` consecutive bytes inside a fragment. Its weight is the
 *     number of DISTINCT samples that contain it (a repeat inside one message is DEFLATE's own
 *     business), or 0 below `minSampleCount`.
 *  3. Greedy selection: the window of `segmentBytes` bytes whose distinct d-mers weigh the most
 *     is taken, keeping only the bytes covered by d-mers that still weigh something (so it may
 *     split into pieces), and the weights of its d-mers are set to 0 — so overlapping or repeated
 *     material is never bought twice. Repeat until the
 *     dictionary is full or nothing left has weight. The weight of a segment of length L whose
 *     content occurs in n samples is about n·(L − d + 1): occurrences × (length − a constant), the
 *     value of a match in a message that would otherwise spell those bytes out.
 *  4. Layout: DEFLATE distance codes grow with the distance (RFC 1951 §3.2.5: distance 1–4 costs
 *     5 bits, 2049–4096 costs 5 + 10), and the stream starts right after the dictionary's last
 *     byte, so the most valuable segment goes LAST and the least valuable first. A dictionary
 *     over its target is cut at the front.
 *
 * `optimizeDictionary` tries a small grid of (dmerBytes, segmentBytes, dictionaryBytes) and keeps
 * the one that makes the validation samples smallest when each message is compressed only if
 * that makes it smaller (the rule of dictionary.ts).
 *
 * Pure and deterministic: the same samples and options give the same bytes (ties go to the
 * earliest window; no randomness, no Map iteration order that depends on anything but input).
 */
import { ConfigError } from '../errors.ts';
import { DEFLATE_WINDOW_BYTES, deflateRaw } from './deflate.ts';
import { encodeTrickleCbor, eventIdToBytes } from './trickle-cbor-v1.ts';

/** One training message, with the byte strings that must never be copied from it. */
export interface TrainingSample {
  readonly bytes: Uint8Array;
  /** Every occurrence of each of these in `bytes` is excluded from the dictionary. */
  readonly exclude?: readonly Uint8Array[];
}

export type DmerBytes = 3 | 4 | 5 | 6;

export interface TrainOptions {
  /** Target size, 1..32768 bytes; the result is at most this long. */
  dictionaryBytes: number;
  /** d-mer length, 3..6; default 5. Shorter finds short CBOR idioms, longer prefers long strings. */
  dmerBytes?: DmerBytes;
  /** Window length of the greedy step, ≥ dmerBytes; default 32. */
  segmentBytes?: number;
  /** A d-mer seen in fewer distinct samples weighs nothing; default 2. */
  minSampleCount?: number;
}

export interface TrainedSegment {
  /** Offset in the final dictionary (-1 if it was cut off entirely by the size bound). */
  offset: number;
  length: number;
  /** Weight when chosen: Σ distinct-sample counts of its d-mers (each distinct d-mer once). */
  score: number;
}

export interface TrainResult {
  dictionary: Uint8Array;
  /** In selection order: the most valuable first (and last in `dictionary`). */
  segments: TrainedSegment[];
  params: Required<TrainOptions>;
}

interface Fragment { sample: number; bytes: Uint8Array; ids: Int32Array }

function normalizeOptions(opts: TrainOptions): Required<TrainOptions> {
  const dictionaryBytes = opts.dictionaryBytes;
  const dmerBytes = opts.dmerBytes ?? 5;
  const segmentBytes = opts.segmentBytes ?? 32;
  const minSampleCount = opts.minSampleCount ?? 2;
  if (!Number.isInteger(dictionaryBytes) || dictionaryBytes < 1 || dictionaryBytes > DEFLATE_WINDOW_BYTES) {
    throw new ConfigError(`dictionaryBytes must be an integer from 1 to ${DEFLATE_WINDOW_BYTES}, got ${String(dictionaryBytes)}`, { key: 'dictionaryBytes' });
  }
  if (![3, 4, 5, 6].includes(dmerBytes)) throw new ConfigError(`dmerBytes must be 3, 4, 5 or 6, got ${String(dmerBytes)}`, { key: 'dmerBytes' });
  if (!Number.isInteger(segmentBytes) || segmentBytes < dmerBytes || segmentBytes > 1024) {
    throw new ConfigError(`segmentBytes must be an integer from dmerBytes (${dmerBytes}) to 1024, got ${String(segmentBytes)}`, { key: 'segmentBytes' });
  }
  if (!Number.isInteger(minSampleCount) || minSampleCount < 1) {
    throw new ConfigError(`minSampleCount must be a positive integer, got ${String(minSampleCount)}`, { key: 'minSampleCount' });
  }
  return { dictionaryBytes, dmerBytes, segmentBytes, minSampleCount };
}

function asSample(s: Uint8Array | TrainingSample): TrainingSample {
  return s instanceof Uint8Array ? { bytes: s } : s;
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0]!;
  const last = hay.length - needle.length;
  outer: for (let i = hay.indexOf(first, from); i !== -1 && i <= last; i = hay.indexOf(first, i + 1)) {
    for (let j = 1; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** The unexcluded runs of a sample that are long enough to hold one d-mer. */
function fragmentsOf(sample: TrainingSample, d: number): Uint8Array[] {
  const { bytes } = sample;
  const masked = new Uint8Array(bytes.length);
  for (const ex of sample.exclude ?? []) {
    if (ex.length === 0) continue;
    for (let i = indexOf(bytes, ex, 0); i !== -1; i = indexOf(bytes, ex, i + 1)) masked.fill(1, i, i + ex.length);
  }
  const out: Uint8Array[] = [];
  let start = -1;
  for (let i = 0; i <= bytes.length; i++) {
    const free = i < bytes.length && masked[i] === 0;
    if (free && start < 0) start = i;
    if (!free && start >= 0) {
      if (i - start >= d) out.push(bytes.subarray(start, i));
      start = -1;
    }
  }
  return out;
}

/**
 * Train a dictionary of at most `opts.dictionaryBytes` bytes. An empty dictionary comes back when
 * nothing repeats across `minSampleCount` samples.
 */
export function trainDictionary(samples: readonly (Uint8Array | TrainingSample)[], opts: TrainOptions): TrainResult {
  const params = normalizeOptions(opts);
  const { dmerBytes: d, segmentBytes: k, dictionaryBytes: target, minSampleCount } = params;

  // d-mer ids (d ≤ 6, so the d bytes themselves are an exact key below 2^48) and their weights.
  const idOf = new Map<number, number>();
  const docCount: number[] = [];
  const lastSample: number[] = [];
  const fragments: Fragment[] = [];
  samples.forEach((raw, sampleIndex) => {
    for (const bytes of fragmentsOf(asSample(raw), d)) {
      const ids = new Int32Array(bytes.length - d + 1);
      for (let p = 0; p < ids.length; p++) {
        let key = 0;
        for (let j = 0; j < d; j++) key = key * 256 + bytes[p + j]!;
        let id = idOf.get(key);
        if (id === undefined) { id = docCount.length; idOf.set(key, id); docCount.push(0); lastSample.push(-1); }
        if (lastSample[id] !== sampleIndex) { lastSample[id] = sampleIndex; docCount[id]!++; }
        ids[p] = id;
      }
      fragments.push({ sample: sampleIndex, bytes, ids });
    }
  });
  const weight = new Float64Array(docCount.length);
  docCount.forEach((n, id) => { weight[id] = n >= minSampleCount ? n : 0; });

  // Greedy selection. `inWindow` counts each d-mer's occurrences in the current window so a
  // d-mer repeated inside one window is paid for once; it is back to all zeros after each fragment.
  const inWindow = new Int32Array(docCount.length);
  const dmersPerWindow = k - d + 1;
  const chosen: { bytes: Uint8Array; score: number }[] = [];
  let total = 0;
  while (total < target) {
    let best = { score: 0, frag: -1, first: 0, count: 0 };
    fragments.forEach((f, fi) => {
      const n = f.ids.length;
      const w = Math.min(dmersPerWindow, n);
      let score = 0;
      for (let p = 0; p < w; p++) {
        const id = f.ids[p]!;
        const c = inWindow[id]!;
        inWindow[id] = c + 1;
        if (c === 0) score += weight[id]!;
      }
      if (score > best.score) best = { score, frag: fi, first: 0, count: w };
      for (let s = 1; s + w <= n; s++) {
        const out = f.ids[s - 1]!;
        const co = inWindow[out]! - 1;
        inWindow[out] = co;
        if (co === 0) score -= weight[out]!;
        const inc = f.ids[s + w - 1]!;
        const ci = inWindow[inc]!;
        inWindow[inc] = ci + 1;
        if (ci === 0) score += weight[inc]!;
        if (score > best.score) best = { score, frag: fi, first: s, count: w };
      }
      for (let p = n - w; p < n; p++) { const id = f.ids[p]!; inWindow[id] = inWindow[id]! - 1; }
    });
    if (best.frag < 0) break;
    // Keep only the bytes of the window's weighted d-mers: material already in the dictionary
    // (zero weight) is cut out instead of being bought twice, which may split the window in pieces.
    const f = fragments[best.frag]!;
    const pieces: { start: number; end: number; score: number }[] = [];
    for (let p = best.first; p < best.first + best.count; p++) {
      const id = f.ids[p]!;
      const wgt = weight[id]!;
      if (wgt === 0) continue;
      weight[id] = 0;
      const last = pieces[pieces.length - 1];
      if (last && p <= last.end) { last.end = p + d; last.score += wgt; } else pieces.push({ start: p, end: p + d, score: wgt });
    }
    for (const piece of pieces) {
      chosen.push({ bytes: f.bytes.slice(piece.start, piece.end), score: piece.score });
      total += piece.end - piece.start;
    }
  }

  // Most valuable last; cut at the front if over the target.
  const full = new Uint8Array(total);
  let pos = total;
  const starts: number[] = [];
  for (const c of chosen) { pos -= c.bytes.length; full.set(c.bytes, pos); starts.push(pos); }
  const cut = Math.max(0, total - target);
  const dictionary = full.slice(cut);
  const segments = chosen.map((c, i) => {
    const start = starts[i]! - cut;
    const end = start + c.bytes.length;
    return end <= 0 ? { offset: -1, length: 0, score: c.score } : { offset: Math.max(0, start), length: end - Math.max(0, start), score: c.score };
  });
  return { dictionary, segments, params };
}

/** Total bytes of `samples` when each is deflated (with `dictionary`) only if that makes it smaller. */
export function compressedSize(samples: readonly Uint8Array[], dictionary?: Uint8Array): number {
  let sum = 0;
  for (const s of samples) {
    const z = deflateRaw(s, dictionary && dictionary.length > 0 ? { dictionary, level: 9 } : { level: 9 });
    sum += Math.min(s.length, z.length);
  }
  return sum;
}

export interface OptimizeOptions {
  /** Candidate sizes; default [2048, 4096]. */
  dictionaryBytes?: readonly number[];
  dmerBytes?: readonly DmerBytes[];
  segmentBytes?: readonly number[];
  minSampleCount?: number;
  /** Samples to judge candidates on; default every fifth of `samples` (held out from training). */
  validation?: readonly Uint8Array[];
  /**
   * A candidate earlier in the grid (smaller dictionary first) wins when it is within this fraction
   * of the best; default 0.005. A bigger dictionary that saves nothing is only more to agree on.
   */
  tolerance?: number;
}

export interface OptimizeResult extends TrainResult {
  /** compressedSize() of the validation samples with each candidate, in grid order. */
  trials: { params: Required<TrainOptions>; validationBytes: number }[];
}

/**
 * Grid search over the trainer's parameters, judged by compressedSize() on validation samples.
 * The winner (the first in grid order, smaller dictionaries first, within `tolerance` of the best) is retrained on all samples
 * when `validation` was not given, so nothing is thrown away.
 */
export function optimizeDictionary(samples: readonly (Uint8Array | TrainingSample)[], opts: OptimizeOptions = {}): OptimizeResult {
  const sizes = [...(opts.dictionaryBytes ?? [2048, 4096])].sort((a, b) => a - b);
  const tolerance = opts.tolerance ?? 0.005;
  const dmers = opts.dmerBytes ?? [4, 5, 6];
  const segs = opts.segmentBytes ?? [16, 32, 64];
  const minSampleCount = opts.minSampleCount ?? 2;
  const heldOut = opts.validation === undefined;
  const train = heldOut ? samples.filter((_, i) => i % 5 !== 4) : samples;
  const validation = opts.validation ?? samples.filter((_, i) => i % 5 === 4).map((s) => asSample(s).bytes);
  const trials: OptimizeResult['trials'] = [];
  const results: { params: Required<TrainOptions>; validationBytes: number; result: TrainResult }[] = [];
  for (const dictionaryBytes of sizes) {
    for (const dmerBytes of dmers) {
      for (const segmentBytes of segs) {
        if (segmentBytes < dmerBytes) continue;
        const result = trainDictionary(train, { dictionaryBytes, dmerBytes, segmentBytes, minSampleCount });
        const validationBytes = compressedSize(validation, result.dictionary);
        trials.push({ params: result.params, validationBytes });
        results.push({ params: result.params, validationBytes, result });
      }
    }
  }
  if (results.length === 0) throw new ConfigError('optimizeDictionary: the parameter grid is empty', { key: 'segmentBytes' });
  const smallest = Math.min(...results.map((r) => r.validationBytes));
  const best = results.find((r) => r.validationBytes <= smallest * (1 + tolerance))!;
  const final = heldOut ? trainDictionary(samples, best.params) : best.result;
  return { ...final, trials };
}

// ---------------------------------------------------------------------------------------------
// Matrix traffic → training samples

const SIGIL = /^[!@$#+][^\s]{1,254}$/;
/** Keys whose string values are per-session tokens or ids. */
const VOLATILE_KEYS: ReadonlySet<string> = new Set([
  'next_batch', 'prev_batch', 'since', 'start', 'end', 'from', 'to', 'filter_id', 'txn_id', 'transaction_id',
  'access_token', 'refresh_token', 'device_id', 'password', 'session', 'token', 'nonce', 'mac', 'well_known',
  'base_url', 'user', 'user_id', 'room_id', 'event_id', 'sender', 'state_key', 'redacts', 'replaces_state',
  'origin', 'avatar_url', 'url', 'home_server',
]);
/** Keys whose string values are what people typed: their content belongs to no dictionary. */
const USER_TEXT_KEYS: ReadonlySet<string> = new Set([
  'body', 'formatted_body', 'displayname', 'display_name', 'initial_device_display_name', 'name', 'topic', 'alias',
  'status_msg', 'reason', 'room_alias_name', 'last_seen_ip', 'last_seen_user_agent',
]);

/**
 * A Trickle CBOR v1 training sample for one JSON body, with the strings that must not be learnt
 * excluded: every sigil id (room, user, event, alias) as a key or a value and its 32-byte binary
 * form for event ids, every string containing one of `volatile` in any case (the server name,
 * local parts, a homeserver URL), values of token and id keys, and user-typed text (message bodies, names,
 * topics). What remains is the structure every deployment shares.
 */
export function matrixTrainingSample(value: unknown, volatile: readonly string[] = []): TrainingSample {
  const te = new TextEncoder();
  const bytes = encodeTrickleCbor(value);
  const excluded = new Set<string>();
  const lowered = volatile.filter((v) => v.length > 0).map((v) => v.toLowerCase());
  const isVolatile = (s: string): boolean => SIGIL.test(s) || lowered.some((v) => s.toLowerCase().includes(v));
  const visit = (v: unknown, key: string | undefined): void => {
    if (typeof v === 'string') {
      if (isVolatile(v) || (key !== undefined && (VOLATILE_KEYS.has(key) || USER_TEXT_KEYS.has(key)))) excluded.add(v);
      return;
    }
    if (Array.isArray(v)) { for (const x of v) visit(x, key); return; }
    if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        if (isVolatile(k)) excluded.add(k);
        visit(x, k);
      }
    }
  };
  visit(value, undefined);
  const exclude: Uint8Array[] = [];
  for (const s of [...excluded].sort()) {
    if (s.length < 3) continue; // 1–2 byte strings would mask half of every message
    exclude.push(te.encode(s));
    const id = eventIdToBytes(s);
    if (id) exclude.push(id);
  }
  return { bytes, exclude };
}
