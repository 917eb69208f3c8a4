/**
 * The fuzzing engine: a seeded PRNG, byte mutators, an outcome-guided corpus, the per-input
 * oracle wrapper (exceptions, timing) and a delta-debugging minimizer. Pure and synchronous;
 * the hang watchdog lives one level up (campaign.ts runs this in a worker thread).
 *
 * A TARGET (targets.ts) is a function of one input that returns an OUTCOME signature ("ok",
 * "ok:whole", "ERR_CBOR_DECODE", …) and throws only for a violation of the module's contract:
 * an uncoded exception escaping the decoder, or an `OracleError` raised by the target's own
 * checks (round trip, bounds, "never delivers"). Outcomes never seen before promote their input
 * into the corpus, a cheap stand-in for coverage feedback: an input that reaches a new error
 * code or a new success shape is a better parent than one that fails like the rest.
 */
import { performance } from 'node:perf_hooks';
import { mulberry32 } from '../helpers/prng.ts';
import { TrickleError } from '../../src/errors.ts';

// ---------------------------------------------------------------------------------------------
// Randomness

/** A seeded PRNG (mulberry32 underneath), so every campaign replays from its seed. */
export class Rng {
  private readonly next: () => number;
  constructor(seed: number) { this.next = mulberry32(seed); }
  float(): number { return this.next(); }
  /** Integer in [0, n). */
  int(n: number): number { return n <= 0 ? 0 : Math.floor(this.next() * n); }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number { return lo + this.int(hi - lo + 1); }
  bool(p = 0.5): boolean { return this.next() < p; }
  pick<T>(a: readonly T[]): T {
    if (a.length === 0) throw new RangeError('pick from an empty list');
    return a[this.int(a.length)]!;
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
  /** Small numbers much more often than large ones: 1 + floor(2^(u·log2 max)). */
  skewed(max: number): number {
    if (max <= 1) return max;
    return Math.min(max, Math.floor(2 ** (this.float() * Math.log2(max + 1))));
  }
}

/** FNV-1a of a string, for deriving per-target seeds and failure ids. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Mutation

/** Byte values that sit on boundaries of the formats we decode. */
export const INTERESTING_BYTES: readonly number[] = [
  0x00, 0x01, 0x02, 0x07, 0x08, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x20,
  0x3f, 0x40, 0x7e, 0x7f, 0x80, 0x81, 0x9f, 0xbf, 0xc0, 0xc3, 0xdb, 0xdc, 0xdd, 0xe0, 0xef, 0xf0, 0xf4,
  0xf8, 0xfe, 0xff,
];

/** Multi-byte values that are large when read as a length (BE and LE, 16 and 32 bits, varints). */
export const HUGE_LENGTHS: readonly Uint8Array[] = [
  Uint8Array.of(0xff, 0xff), Uint8Array.of(0x7f, 0xff), Uint8Array.of(0x80, 0x00), Uint8Array.of(0x01, 0x00),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff), Uint8Array.of(0x7f, 0xff, 0xff, 0xff), Uint8Array.of(0x00, 0x00, 0x01, 0x00),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f), Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01),
  Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
];

export interface MutationContext {
  readonly rng: Rng;
  /** Largest input the target wants. */
  readonly maxLen: number;
  /** Format tokens worth inserting (CBOR heads, SLIP escapes, option headers …). */
  readonly dictionary: readonly Uint8Array[];
  /** Another corpus entry, for splicing. */
  readonly other: () => Uint8Array;
}

type Mutator = (b: Uint8Array, m: MutationContext) => Uint8Array;

function cat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function insertAt(b: Uint8Array, at: number, ins: Uint8Array): Uint8Array {
  return cat(b.subarray(0, at), ins, b.subarray(at));
}

function overwriteAt(b: Uint8Array, at: number, src: Uint8Array): Uint8Array {
  const out = b.slice();
  for (let i = 0; i < src.length && at + i < out.length; i++) out[at + i] = src[i]!;
  return out;
}

/** A range [start, end) inside b, short ranges more often. */
function range(b: Uint8Array, rng: Rng): [number, number] {
  const start = rng.int(b.length);
  const len = rng.skewed(Math.max(1, Math.min(b.length - start, 64)));
  return [start, start + len];
}

/** The strategies named in the brief; each is picked with equal probability by havoc(). */
export const MUTATORS: Readonly<Record<string, Mutator>> = {
  bitFlip: (b, { rng }) => {
    if (b.length === 0) return b;
    const out = b.slice();
    const i = rng.int(out.length);
    out[i] = out[i]! ^ (1 << rng.int(8));
    return out;
  },
  randomByte: (b, { rng }) => {
    if (b.length === 0) return rng.bytes(1);
    const out = b.slice();
    out[rng.int(out.length)] = rng.int(256);
    return out;
  },
  interestingByte: (b, { rng }) => {
    if (b.length === 0) return Uint8Array.of(rng.pick(INTERESTING_BYTES));
    const out = b.slice();
    out[rng.int(out.length)] = rng.pick(INTERESTING_BYTES);
    return out;
  },
  arithmetic: (b, { rng }) => {
    if (b.length === 0) return b;
    const out = b.slice();
    const i = rng.int(out.length);
    out[i] = (out[i]! + (rng.bool() ? 1 : -1) * rng.range(1, 35)) & 0xff;
    return out;
  },
  insertRandom: (b, { rng }) => insertAt(b, rng.int(b.length + 1), rng.bytes(rng.skewed(16))),
  insertInteresting: (b, { rng }) => insertAt(b, rng.int(b.length + 1), Uint8Array.of(rng.pick(INTERESTING_BYTES))),
  insertToken: (b, { rng, dictionary }) => (dictionary.length === 0 ? b : insertAt(b, rng.int(b.length + 1), rng.pick(dictionary))),
  overwriteToken: (b, { rng, dictionary }) => (dictionary.length === 0 || b.length === 0 ? b : overwriteAt(b, rng.int(b.length), rng.pick(dictionary))),
  deleteRange: (b, { rng }) => {
    if (b.length === 0) return b;
    const [s, e] = range(b, rng);
    return cat(b.subarray(0, s), b.subarray(e));
  },
  truncate: (b, { rng }) => b.slice(0, rng.int(b.length + 1)),
  dropHead: (b, { rng }) => b.slice(rng.int(Math.min(b.length, 8) + 1)),
  duplicateRange: (b, { rng }) => {
    if (b.length === 0) return b;
    const [s, e] = range(b, rng);
    return insertAt(b, rng.int(b.length + 1), b.slice(s, e));
  },
  repeatRange: (b, { rng }) => {
    if (b.length === 0) return b;
    const [s, e] = range(b, rng);
    const chunk = b.slice(s, e);
    const n = rng.skewed(64);
    return insertAt(b, e, cat(...Array.from({ length: n }, () => chunk)));
  },
  copyRange: (b, { rng }) => {
    if (b.length < 2) return b;
    const [s, e] = range(b, rng);
    return overwriteAt(b, rng.int(b.length), b.slice(s, e));
  },
  swapRanges: (b, { rng }) => {
    if (b.length < 4) return b;
    const cut = rng.range(1, b.length - 1);
    const a = b.subarray(0, cut);
    const c = b.subarray(cut);
    return rng.bool() ? cat(c, a) : cat(a.subarray(0, a.length >> 1), c, a.subarray(a.length >> 1));
  },
  fillRange: (b, { rng }) => {
    if (b.length === 0) return b;
    const [s, e] = range(b, rng);
    const out = b.slice();
    out.fill(rng.pick([0x00, 0xff, 0x7f, 0x80, rng.int(256)]), s, e);
    return out;
  },
  hugeLength: (b, { rng }) => {
    const v = rng.pick(HUGE_LENGTHS);
    if (b.length === 0 || rng.bool(0.3)) return insertAt(b, rng.int(b.length + 1), v);
    return overwriteAt(b, rng.int(b.length), v);
  },
  lengthNudge: (b, { rng }) => {
    // Make a byte that may be a length slightly wrong: ±1, doubled, or the remaining length.
    if (b.length === 0) return b;
    const out = b.slice();
    const i = rng.int(out.length);
    const choices = [out[i]! + 1, out[i]! - 1, out[i]! * 2, b.length - i - 1, b.length - i, b.length - i + 1];
    out[i] = rng.pick(choices) & 0xff;
    return out;
  },
  spliceOther: (b, m) => {
    const o = m.other();
    return cat(b.subarray(0, m.rng.int(b.length + 1)), o.subarray(m.rng.int(o.length + 1)));
  },
  insertOther: (b, m) => {
    const o = m.other();
    if (o.length === 0) return b;
    const [s, e] = range(o, m.rng);
    return insertAt(b, m.rng.int(b.length + 1), o.slice(s, e));
  },
  appendOther: (b, m) => cat(b, m.other()),
};

const MUTATOR_LIST = Object.values(MUTATORS);

/** AFL's havoc: a stack of 1..16 random mutations (fewer much more often). */
export function havoc(b: Uint8Array, m: MutationContext, extra?: (b: Uint8Array) => Uint8Array): Uint8Array {
  let out = b;
  const n = 1 << m.rng.int(4);
  for (let i = 0; i < n; i++) {
    out = extra !== undefined && m.rng.bool(0.15) ? extra(out) : m.rng.pick(MUTATOR_LIST)(out, m);
    if (out.length > m.maxLen) out = out.slice(0, m.maxLen);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Targets and oracles

/** A contract violation found by a target's own checks (not an exception of the module). */
export class OracleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OracleError';
  }
}

export function check(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new OracleError(typeof message === 'string' ? message : message());
}

/**
 * Run `fn`; its result is the outcome "ok…". A thrown error whose code is one the contract
 * allows becomes the outcome (its code, plus detail.reason when there is one); anything else
 * escapes as a failure.
 */
export function expectCoded<T>(fn: () => T, allowed: (e: TrickleError) => boolean): { ok: true; value: T } | { ok: false; outcome: string } {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof TrickleError && e.code.startsWith('ERR_') && allowed(e)) {
      const reason = e.detail?.['reason'];
      return { ok: false, outcome: typeof reason === 'string' ? `${e.code}:${reason}` : e.code };
    }
    throw e;
  }
}

export interface FuzzTarget {
  readonly name: string;
  /** One line: which decoder, and what the oracle checks. */
  readonly description: string;
  /** Valid inputs made by the real encoders (and vectors). Built once per worker, lazily. */
  seeds(): Uint8Array[];
  /** Decode one input and check the contract. Returns an outcome signature; throws on a violation. */
  run(input: Uint8Array): string;
  /** Largest input to generate (default 512). */
  readonly maxLen?: number;
  readonly dictionary?: readonly Uint8Array[];
  /** A structure-aware mutation, mixed into havoc (e.g. JSON-aware for state files). */
  readonly mutate?: (b: Uint8Array, rng: Rng) => Uint8Array;
  /** A call slower than this is a failure once it is reproducibly slow (default: the campaign's slowMs). */
  readonly slowMs?: number;
  /** Relative cost: the smoke test runs `smokeInputs / cost` inputs (default 1). */
  readonly cost?: number;
}

// ---------------------------------------------------------------------------------------------
// Running one target

export type FailureKind = 'exception' | 'oracle' | 'slow' | 'hang' | 'crash';

export interface FuzzFailure {
  readonly target: string;
  readonly kind: FailureKind;
  /** Stable signature used to count distinct failures. */
  readonly signature: string;
  readonly error: string;
  readonly stack?: string;
  /** The (minimized, when possible) failing input, hex. */
  readonly inputHex: string;
  /** Inputs that hit this signature in this run. */
  count: number;
  /** Slow failures: the minimum of the re-timed runs. */
  readonly ms?: number;
}

export interface TargetStats {
  target: string;
  inputs: number;
  ms: number;
  slowestMs: number;
  slowestInputHex: string;
  outcomes: Record<string, number>;
  corpus: number;
  failures: FuzzFailure[];
}

export interface RunOptions {
  readonly seed: number;
  /** Stop after this many inputs (seeds included)… */
  readonly maxInputs?: number;
  /** …or at this performance.now() deadline, whichever comes first. */
  readonly deadline?: number;
  /** Calls slower than this are re-timed and reported when reproducibly slow. */
  readonly slowMs: number;
  /** Called before each call with the input (the watchdog copies it). */
  readonly beforeCall?: (input: Uint8Array) => void;
  readonly afterCall?: () => void;
  readonly onProgress?: (s: TargetStats) => void;
  readonly onFailure?: (f: FuzzFailure) => void;
  /** Minimize new failures (default true). */
  readonly minimize?: boolean;
  /** Replay exactly these inputs (no seeds, no generation). */
  readonly inputs?: readonly Uint8Array[];
}

function describeError(e: unknown): { name: string; code: string; message: string; stack: string } {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return { name: e.name, code: typeof code === 'string' ? code : '', message: e.message, stack: e.stack ?? '' };
  }
  return { name: typeof e, code: '', message: String(e), stack: '' };
}

/** Where in src/ (or the target) an error was thrown: the first project frame of the stack. */
function origin(stack: string): string {
  for (const line of stack.split('\n').slice(1)) {
    const m = /(src\/[^\s:()]+):(\d+)/.exec(line) ?? /(test\/fuzz\/[^\s:()]+):(\d+)/.exec(line);
    if (m) return `${m[1]}:${m[2]}`;
  }
  return '?';
}

/** Messages with their numbers and hex blobs folded, so one bug is one signature. */
function normalise(message: string): string {
  return message.replace(/"(?:[^"\\]|\\.)*"/g, 'S').replace(/0x[0-9a-f]+/gi, 'X').replace(/[0-9a-f]{8,}/gi, 'H').replace(/\d+/g, 'N').slice(0, 120);
}

export function signatureOf(target: string, kind: FailureKind, e: unknown): string {
  const d = describeError(e);
  if (kind === 'oracle') return `${target}|oracle|${normalise(d.message)}`;
  return `${target}|${kind}|${d.name}${d.code ? `(${d.code})` : ''}|${normalise(d.message)}|${origin(d.stack)}`;
}

/** Run one input: undefined when it behaved, else the failure's kind, signature and error. */
export function classify(target: FuzzTarget, input: Uint8Array): { outcome: string } | { kind: FailureKind; signature: string; error: unknown } {
  try {
    return { outcome: target.run(input) };
  } catch (e) {
    const kind: FailureKind = e instanceof OracleError ? 'oracle' : 'exception';
    return { kind, signature: signatureOf(target.name, kind, e), error: e };
  }
}

const toHexStr = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

/**
 * Shrink a failing input while it keeps failing with the same signature: delete chunks of
 * halving size (ddmin-like), then try simplifying bytes to 0. Bounded by `budget` runs.
 */
export function minimize(target: FuzzTarget, input: Uint8Array, signature: string, budget = 400,
  exec: (input: Uint8Array) => ReturnType<typeof classify> = (i) => classify(target, i)): Uint8Array {
  let best = input;
  let runs = 0;
  const still = (cand: Uint8Array): boolean => {
    runs++;
    const r = exec(cand);
    return 'signature' in r && r.signature === signature;
  };
  for (let chunk = Math.max(1, best.length >> 1); chunk >= 1 && runs < budget; chunk >>= 1) {
    let i = 0;
    while (i < best.length && runs < budget) {
      const cand = cat(best.subarray(0, i), best.subarray(i + chunk));
      if (still(cand)) best = cand; else i += chunk;
    }
  }
  for (let i = 0; i < best.length && runs < budget; i++) {
    if (best[i] === 0) continue;
    const cand = best.slice();
    cand[i] = 0;
    if (still(cand)) best = cand;
  }
  return best;
}

/** Re-time a slow input: the minimum over three runs (GC pauses and scheduling fall away). */
function retime(exec: (input: Uint8Array) => unknown, input: Uint8Array): number {
  let min = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    exec(input);
    min = Math.min(min, performance.now() - t0);
  }
  return min;
}

const MAX_CORPUS = 512;
const MAX_OUTCOMES = 4096;

/**
 * Fuzz one target: every seed first (valid inputs must pass the oracle too), then a mix of
 * mutated corpus entries (90 %) and purely random inputs (10 %).
 */
export function runTarget(target: FuzzTarget, o: RunOptions): TargetStats {
  const rng = new Rng(o.seed ^ hash32(target.name));
  const maxLen = target.maxLen ?? 512;
  const slowMs = target.slowMs ?? o.slowMs;
  const stats: TargetStats = { target: target.name, inputs: 0, ms: 0, slowestMs: 0, slowestInputHex: '', outcomes: {}, corpus: 0, failures: [] };
  const bySig = new Map<string, FuzzFailure>();
  const started = performance.now();
  const seeds = o.inputs !== undefined ? [] : target.seeds().filter((s) => s.length <= maxLen);
  const corpus: Uint8Array[] = seeds.length > 0 ? [...seeds] : [new Uint8Array(0)];
  const mctx: MutationContext = { rng, maxLen, dictionary: target.dictionary ?? [], other: () => rng.pick(corpus) };
  const extra = target.mutate ? (b: Uint8Array) => target.mutate!(b, rng) : undefined;
  let lastProgress = performance.now();

  /** Every run of the target goes through here, so the watchdog sees minimization and re-timing too. */
  const exec = (input: Uint8Array): ReturnType<typeof classify> => {
    o.beforeCall?.(input);
    try { return classify(target, input); } finally { o.afterCall?.(); }
  };

  const done = (): boolean => (o.maxInputs !== undefined && stats.inputs >= o.maxInputs) || (o.deadline !== undefined && performance.now() >= o.deadline);

  const record = (input: Uint8Array, kind: FailureKind, signature: string, error: unknown, ms?: number): void => {
    const known = bySig.get(signature);
    if (known) { known.count++; return; }
    const small = o.minimize === false || kind === 'slow' ? input : minimize(target, input, signature, 400, exec);
    const d = describeError(error);
    const f: FuzzFailure = {
      target: target.name, kind, signature, error: `${d.name}${d.code ? ` ${d.code}` : ''}: ${d.message}`,
      ...(d.stack ? { stack: d.stack.split('\n').slice(0, 8).join('\n') } : {}),
      inputHex: toHexStr(small), count: 1, ...(ms !== undefined ? { ms: Math.round(ms * 10) / 10 } : {}),
    };
    bySig.set(signature, f);
    stats.failures.push(f);
    o.onFailure?.(f);
  };

  const one = (input: Uint8Array, fromSeed: boolean): void => {
    const t0 = performance.now();
    const r = exec(input);
    const ms = performance.now() - t0;
    stats.inputs++;
    if (ms > stats.slowestMs) { stats.slowestMs = ms; stats.slowestInputHex = toHexStr(input.subarray(0, 256)); }
    if ('signature' in r) {
      record(input, r.kind, r.signature, r.error);
      return;
    }
    if (ms > slowMs) {
      const again = retime(exec, input);
      if (again > slowMs) record(input, 'slow', `${target.name}|slow|${r.outcome}`, new Error(`call took ${again.toFixed(1)} ms (over ${slowMs} ms) with outcome ${r.outcome}`), again);
    }
    const seen = stats.outcomes[r.outcome];
    if (seen === undefined && Object.keys(stats.outcomes).length < MAX_OUTCOMES) {
      stats.outcomes[r.outcome] = 1;
      if (!fromSeed) {
        if (corpus.length < MAX_CORPUS) corpus.push(input);
        else corpus[seeds.length + rng.int(MAX_CORPUS - seeds.length)] = input;
      }
    } else if (seen !== undefined) {
      stats.outcomes[r.outcome] = seen + 1;
    }
  };

  if (o.inputs !== undefined) {
    for (const input of o.inputs) one(input, true);
    stats.ms = performance.now() - started;
    return stats;
  }
  for (const s of seeds) {
    if (done()) break;
    one(s, true);
  }
  while (!done()) {
    let input: Uint8Array;
    if (rng.bool(0.1)) input = rng.bytes(rng.bool(0.8) ? rng.skewed(Math.min(64, maxLen)) : rng.int(maxLen + 1));
    else input = havoc(rng.pick(corpus), mctx, extra);
    one(input, false);
    if (o.onProgress && performance.now() - lastProgress > 1000) {
      lastProgress = performance.now();
      stats.ms = lastProgress - started;
      stats.corpus = corpus.length;
      o.onProgress(stats);
    }
  }
  stats.ms = performance.now() - started;
  stats.corpus = corpus.length;
  return stats;
}
