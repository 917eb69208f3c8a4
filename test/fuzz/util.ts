/** Helpers shared by the fuzz targets: vectors, equality, input sequences, a JSON-aware mutator. */
import { readFileSync } from 'node:fs';
import { fromHex } from '../../src/util/bytes.ts';
import type { Rng } from './engine.ts';

export const repoFile = (rel: string): string => new URL(`../../${rel}`, import.meta.url).pathname;

export function readJson<T = unknown>(rel: string): T {
  return JSON.parse(readFileSync(repoFile(rel), 'utf8')) as T;
}

export const hex = fromHex;
export const utf8Bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Deep equality over JSON-ish values, Uint8Arrays and Maps. `zeroSign`: distinguish −0 from 0. */
export function deepEqual(a: unknown, b: unknown, zeroSign = true): boolean {
  if (typeof a === 'number' && typeof b === 'number') {
    if (Number.isNaN(a) && Number.isNaN(b)) return true;
    return zeroSign ? Object.is(a, b) : a === b;
  }
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map && b instanceof Map) || a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !deepEqual(v, b.get(k), zeroSign)) return false;
    return true;
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    if (a.length !== bb.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], bb[i], zeroSign)) return false;
    return true;
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) return false;
    if (!deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], zeroSign)) return false;
  }
  return true;
}

/** A short printable form of a value for oracle messages. */
export function show(v: unknown, max = 200): string {
  let s: string;
  try {
    s = JSON.stringify(v, (_k, x: unknown) => (x instanceof Uint8Array ? `0x${Buffer.from(x).toString('hex')}` : typeof x === 'bigint' ? `${x}n` : x));
  } catch { s = String(v); }
  s ??= String(v);
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/**
 * Several frames in one input: each is `len(1) ‖ bytes(len)`; a zero length or a length past the
 * end makes the rest of the input the last frame. At most `max` frames. Lenient on purpose, so
 * every mutation still yields a sequence.
 */
export function splitSeq(input: Uint8Array, max = 8): Uint8Array[] {
  const out: Uint8Array[] = [];
  let o = 0;
  while (o < input.length && out.length < max - 1) {
    const len = input[o]!;
    if (len === 0 || o + 1 + len > input.length) break;
    out.push(input.subarray(o + 1, o + 1 + len));
    o += 1 + len;
  }
  if (o < input.length) {
    // The rest is the last frame (without its zero marker, if that is what stopped us).
    const rest = input[o] === 0 ? input.subarray(o + 1) : input.subarray(o);
    if (rest.length > 0) out.push(rest);
  }
  return out;
}

/** Inverse of splitSeq for frames of 1..255 bytes (seeds). */
export function joinSeq(frames: readonly Uint8Array[]): Uint8Array {
  const parts: number[] = [];
  for (const f of frames) {
    if (f.length === 0 || f.length > 255) throw new RangeError(`joinSeq frame of ${f.length} bytes`);
    parts.push(f.length, ...f);
  }
  return Uint8Array.from(parts);
}

// ---------------------------------------------------------------------------------------------
// JSON-aware mutation, for the state-file targets

const JSON_PALETTE: readonly unknown[] = [
  null, true, false, 0, -0, 1, -1, 2, 7, 8, 62, 63, 64, 96, 97, 128, 129, 255, 256, 65535, 65536,
  2 ** 21, 2 ** 21 - 1, 2 ** 31, 2 ** 32, 2 ** 32 - 1, 2 ** 53, 2 ** 53 - 1, -(2 ** 53), 1e21, 1e300, 0.5, -0.5,
  '', 'x', '0', '-1', '-2', '1', '255', '18446744073709551615', '18446744073709551614', '99999999999999999999',
  '-99999999999999999999', '1e3', ' 1', '0x10', 'ff'.repeat(32), '00'.repeat(32), 'FF'.repeat(32), 'ff'.repeat(31),
  'ff'.repeat(16), 'encrypt', 'authenticate', 'initiator', 'responder', 'host', 'gateway', 'XX', 'IK', 'XXfallback',
  '__proto__', 'constructor', '~1', '!room:hs', [], {}, [[]], [0], [0, 'x'], [0, 'x', 0], { a: 1 }, [null],
];

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function nodes(v: Json, path: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(path);
  if (Array.isArray(v)) v.forEach((x, i) => nodes(x, [...path, i], out));
  else if (v !== null && typeof v === 'object') for (const k of Object.keys(v)) nodes(v[k]!, [...path, k], out);
  return out;
}

function getAt(v: Json, path: readonly (string | number)[]): Json {
  let x: Json = v;
  for (const p of path) x = (x as Record<string | number, Json>)[p]!;
  return x;
}

function mutateNode(x: Json, rng: Rng): Json | undefined {
  const r = rng.int(10);
  if (r < 4) return structuredClone(rng.pick(JSON_PALETTE)) as Json;
  if (typeof x === 'number' && r < 7) return rng.pick([x + 1, x - 1, -x, x * 2, x * 256, Math.floor(x / 2), x + 2 ** 32, String(x)]) as Json;
  if (typeof x === 'string' && r < 7) {
    const big = rng.pick(['9', '99999999999', '18446744073709551615', '-', '00']);
    return rng.pick([x.slice(1), `${x}0`, x.slice(0, -1), big + x, x.toUpperCase(), `${x}${x}`, `-${x}`, Number(x)]) as Json;
  }
  if (Array.isArray(x) && r < 8) {
    const c = x.slice();
    if (c.length > 0 && rng.bool()) c.splice(rng.int(c.length), 1);
    else if (c.length > 0) c.splice(rng.int(c.length + 1), 0, structuredClone(c[rng.int(c.length)]!));
    else c.push(structuredClone(rng.pick(JSON_PALETTE)) as Json);
    return c;
  }
  if (x !== null && typeof x === 'object' && !Array.isArray(x) && r < 8) {
    const c: { [k: string]: Json } = { ...x };
    const keys = Object.keys(c);
    if (keys.length > 0 && rng.bool()) delete c[rng.pick(keys)];
    else c[rng.pick(['extra', 'v', 'version', 'role', 'next', 'seen', 'send', 'receive', 'session', '__proto__'])] = structuredClone(rng.pick(JSON_PALETTE)) as Json;
    return c;
  }
  if (r === 9) return undefined; // delete
  return structuredClone(rng.pick(JSON_PALETTE)) as Json;
}

/** Parse, change one node (replace, tweak, delete, duplicate), stringify. Bytes that are not JSON pass unchanged. */
export function mutateJson(b: Uint8Array, rng: Rng): Uint8Array {
  let root: Json;
  try { root = JSON.parse(new TextDecoder().decode(b)) as Json; } catch { return b; }
  const n = 1 + rng.int(3);
  for (let i = 0; i < n; i++) {
    const all = nodes(root);
    const path = rng.pick(all);
    const next = mutateNode(getAt(root, path), rng);
    if (path.length === 0) { root = next ?? null; continue; }
    const parent = getAt(root, path.slice(0, -1)) as Record<string | number, Json> | Json[];
    const last = path[path.length - 1]!;
    if (next === undefined) {
      if (Array.isArray(parent)) parent.splice(last as number, 1);
      else delete (parent as Record<string, Json>)[last];
    } else if (Array.isArray(parent)) parent[last as number] = next;
    else (parent as Record<string, Json>)[last] = next;
  }
  return utf8Bytes(JSON.stringify(root));
}

export const textOf = (b: Uint8Array): string => new TextDecoder().decode(b);
