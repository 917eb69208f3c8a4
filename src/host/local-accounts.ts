/**
 * The field kit's local accounts (authenticate-only mode, SECURITY.md "Amateur radio"): the
 * password a local Matrix client types at login is checked HERE, against a verifier set with
 * `trickle keys local-account`, and never leaves the kit (on amateur bands every frame is
 * readable by anyone). The gateway holds the account's real access token (gateway/bound-accounts.ts).
 *
 * FILE `local-accounts.json` in the kit's state directory, mode 0600, written atomically:
 *
 *   { "version": 1, "type": "trickle-local-accounts",
 *     "accounts": [ { "userId": "@user:server",
 *                     "scrypt": { "N": 32768, "r": 8, "p": 3, "salt": <base64, 16 bytes>,
 *                                 "hash": <base64, 32 bytes> },
 *                     "setAt": <ISO 8601> } ] }
 *
 * The verifier is scrypt (RFC 7914) of the UTF-8 password (NFC-normalised, as a person may type
 * it on another keyboard) with a random 128-bit salt, N = 2^15, r = 8, p = 3: one of the
 * settings the OWASP Password Storage Cheat Sheet lists as equivalent to its scrypt minimum
 * (N = 2^17, r = 8, p = 1), chosen for its 32 MiB instead of 128 MiB on a small kit; about 0.3 s
 * a guess on a laptop core. The parameters are stored with each verifier, so they can be raised
 * later; a file asking for more than N = 2^20, r = 16 or p = 16 is refused (bounded cost).
 * Comparison is constant time (crypto.timingSafeEqual). The password is never stored or logged.
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { TrickleError } from '../errors.ts';

export const LOCAL_ACCOUNTS_FILE = 'local-accounts.json';
export const LOCAL_ACCOUNTS_TYPE = 'trickle-local-accounts';

export interface ScryptVerifier {
  readonly N: number;
  readonly r: number;
  readonly p: number;
  /** base64 */
  readonly salt: string;
  /** base64 */
  readonly hash: string;
}

export interface LocalAccount {
  readonly userId: string;
  readonly scrypt: ScryptVerifier;
  readonly setAt: string;
}

export interface LocalAccountsFile {
  readonly version: 1;
  readonly type: typeof LOCAL_ACCOUNTS_TYPE;
  readonly accounts: readonly LocalAccount[];
}

export const SCRYPT_DEFAULTS = Object.freeze({ N: 2 ** 15, r: 8, p: 3 });
const SALT_BYTES = 16;
const HASH_BYTES = 32;
const MAX_N = 2 ** 20;
const MAX_R = 16;
const MAX_P = 16;
const MAX_ACCOUNTS = 256;
/** Longest password accepted (bytes of UTF-8): scrypt's input is hashed once, but a bound anyway. */
export const MAX_PASSWORD_BYTES = 1024;
const USER_ID = /^@[^:\s]{1,255}:[^\s]{1,255}$/;

function scrypt(password: string, salt: Buffer, keyLen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(Buffer.from(password.normalize('NFC'), 'utf8'), salt, keyLen, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** Node refuses scrypt above `maxmem` (default 32 MiB, exactly 128·N·r at the defaults): give it room. */
function scryptOptions(v: { N: number; r: number; p: number }): ScryptOptions {
  return { N: v.N, r: v.r, p: v.p, maxmem: 128 * v.N * v.r * 2 + 1024 * 1024 };
}

/** A new verifier for `password` (random salt, SCRYPT_DEFAULTS unless given). */
export async function makeVerifier(password: string, params: { N: number; r: number; p: number } = SCRYPT_DEFAULTS): Promise<ScryptVerifier> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await scrypt(password, salt, HASH_BYTES, scryptOptions(params));
  return { N: params.N, r: params.r, p: params.p, salt: salt.toString('base64'), hash: hash.toString('base64') };
}

/** Whether `password` matches the verifier (constant-time comparison). */
export async function checkPassword(password: string, v: ScryptVerifier): Promise<boolean> {
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) return false;
  const want = Buffer.from(v.hash, 'base64');
  const got = await scrypt(password, Buffer.from(v.salt, 'base64'), want.length, scryptOptions(v));
  return got.length === want.length && timingSafeEqual(got, want);
}

function bad(path: string, why: string): TrickleError {
  return new TrickleError('ERR_CONFIG', 'config', `${path}: ${why}; fix the file or set the account again (trickle keys local-account)`, { path });
}

export function parseLocalAccounts(json: unknown, path: string): LocalAccount[] {
  const f = json as Partial<LocalAccountsFile> | null;
  if (f === null || typeof f !== 'object' || f.version !== 1 || f.type !== LOCAL_ACCOUNTS_TYPE || !Array.isArray(f.accounts)) {
    throw bad(path, `not a local-accounts file of version 1 (type "${LOCAL_ACCOUNTS_TYPE}")`);
  }
  if (f.accounts.length > MAX_ACCOUNTS) throw bad(path, `more than ${MAX_ACCOUNTS} accounts`);
  const seen = new Set<string>();
  return f.accounts.map((a, i) => {
    if (a === null || typeof a !== 'object') throw bad(path, `account ${i} is not an object`);
    if (typeof a.userId !== 'string' || !USER_ID.test(a.userId)) throw bad(path, `account ${i}: userId must be a Matrix user id (@user:server)`);
    if (seen.has(a.userId)) throw bad(path, `account ${i}: ${a.userId} appears twice`);
    seen.add(a.userId);
    const v = a.scrypt as Partial<ScryptVerifier> | undefined;
    const pow2 = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 2 && (n & (n - 1)) === 0;
    const int = (n: unknown, max: number): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= max;
    if (!v || typeof v !== 'object' || !pow2(v.N) || v.N > MAX_N || !int(v.r, MAX_R) || !int(v.p, MAX_P)) {
      throw bad(path, `account ${i}: scrypt parameters missing or beyond N ≤ 2^20, r ≤ ${MAX_R}, p ≤ ${MAX_P}`);
    }
    const b64 = (s: unknown, min: number): s is string => typeof s === 'string' && /^[A-Za-z0-9+/]+={0,2}$/.test(s) && Buffer.from(s, 'base64').length >= min && s.length <= 128;
    if (!b64(v.salt, SALT_BYTES) || !b64(v.hash, HASH_BYTES)) throw bad(path, `account ${i}: scrypt salt or hash malformed`);
    return { userId: a.userId, scrypt: { N: v.N, r: v.r, p: v.p, salt: v.salt, hash: v.hash }, setAt: typeof a.setAt === 'string' ? a.setAt : '' };
  });
}

export function formatLocalAccounts(accounts: readonly LocalAccount[]): LocalAccountsFile {
  return { version: 1, type: LOCAL_ACCOUNTS_TYPE, accounts: [...accounts] };
}
