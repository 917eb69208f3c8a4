/**
 * The Matrix accounts bound to field kits at the gateway (authenticate-only mode, SECURITY.md
 * "Amateur radio"): on amateur bands every frame is readable by anyone, so neither a password nor
 * an access token may cross the air. Instead the gateway operator binds each kit's authorized
 * static key to one Matrix account (`trickle keys bind`, which logs in at the homeserver itself
 * or takes a token from a file), and the gateway runs every request of that kit with the
 * account's access token. The radio link already proves which kit sent a request (Noise static
 * key, every frame authenticated), so the kit needs no credential of its own on air.
 *
 * FILE `accounts-gateway.json` in the gateway's state directory, mode 0600 (it holds access
 * tokens; refused when group or world readable), written atomically (util/state-file.ts):
 *
 *   { "version": 1, "type": "trickle-bound-accounts",
 *     "accounts": [ { "kitKey": <base64 X25519 public key, as in authorized_keys>,
 *                     "kitName": <its name in authorized_keys>,
 *                     "userId": "@user:server", "deviceId": <string or null>,
 *                     "accessToken": <secret>, "homeserver": <base URL the token was issued by>,
 *                     "via": "password" | "token", "boundAt": <ISO 8601> } ] }
 *
 * Contract:
 *  - At most one account per kit key (one bound account per kit).
 *  - A password is never stored: `via: "password"` means `keys bind` logged in with it and the
 *    device is the gateway's own (ended again by `keys unbind` and `keys revoke`); `via: "token"`
 *    came from --access-token-file and is left alone at the homeserver when unbound.
 *  - A token is used only against the homeserver it was issued by (`sameHomeserver`), so a
 *    gateway pointed elsewhere never hands it to another server.
 * Pure (parse / format); the file is read and watched by cli/keys.ts.
 */
import { TrickleError } from '../errors.ts';

export const BOUND_ACCOUNTS_FILE = 'accounts-gateway.json';
export const BOUND_ACCOUNTS_TYPE = 'trickle-bound-accounts';

export interface BoundAccount {
  readonly kitKey: string;
  readonly kitName: string;
  readonly userId: string;
  readonly deviceId: string | null;
  readonly accessToken: string;
  readonly homeserver: string;
  readonly via: 'password' | 'token';
  readonly boundAt: string;
}

export interface BoundAccountsFile {
  readonly version: 1;
  readonly type: typeof BOUND_ACCOUNTS_TYPE;
  readonly accounts: readonly BoundAccount[];
}

/** A Matrix user id as the spec's grammar allows it, loosely: "@" localpart ":" server name. */
export const USER_ID = /^@[^:\s]{1,255}:[^\s]{1,255}$/;

const MAX_ACCOUNTS = 4096;

function bad(path: string, why: string): TrickleError {
  return new TrickleError('ERR_CONFIG', 'config', `${path}: ${why}; fix the file or bind the kits again (trickle keys bind)`, { path });
}

export function parseBoundAccounts(json: unknown, path: string): BoundAccount[] {
  const f = json as Partial<BoundAccountsFile> | null;
  if (f === null || typeof f !== 'object' || f.version !== 1 || f.type !== BOUND_ACCOUNTS_TYPE || !Array.isArray(f.accounts)) {
    throw bad(path, `not a bound-accounts file of version 1 (type "${BOUND_ACCOUNTS_TYPE}")`);
  }
  if (f.accounts.length > MAX_ACCOUNTS) throw bad(path, `more than ${MAX_ACCOUNTS} accounts`);
  const seen = new Set<string>();
  return f.accounts.map((a, i) => {
    const s = (v: unknown): v is string => typeof v === 'string' && v !== '' && v.length <= 4096;
    if (a === null || typeof a !== 'object') throw bad(path, `account ${i} is not an object`);
    if (!s(a.kitKey) || !/^[A-Za-z0-9+/]{43}=$/.test(a.kitKey)) throw bad(path, `account ${i}: kitKey must be a base64 public key`);
    if (seen.has(a.kitKey)) throw bad(path, `account ${i}: a second account for the same kit`);
    seen.add(a.kitKey);
    if (!s(a.kitName)) throw bad(path, `account ${i}: kitName missing`);
    if (!s(a.userId) || !USER_ID.test(a.userId)) throw bad(path, `account ${i}: userId must be a Matrix user id (@user:server)`);
    if (!(a.deviceId === null || s(a.deviceId))) throw bad(path, `account ${i}: deviceId must be a string or null`);
    if (!s(a.accessToken) || /\s/.test(a.accessToken)) throw bad(path, `account ${i}: accessToken missing`);
    if (!s(a.homeserver) || !/^https?:\/\//.test(a.homeserver)) throw bad(path, `account ${i}: homeserver must be an http(s) URL`);
    if (a.via !== 'password' && a.via !== 'token') throw bad(path, `account ${i}: via must be "password" or "token"`);
    if (!s(a.boundAt)) throw bad(path, `account ${i}: boundAt missing`);
    return { kitKey: a.kitKey, kitName: a.kitName, userId: a.userId, deviceId: a.deviceId, accessToken: a.accessToken, homeserver: a.homeserver, via: a.via, boundAt: a.boundAt };
  });
}

export function formatBoundAccounts(accounts: readonly BoundAccount[]): BoundAccountsFile {
  return { version: 1, type: BOUND_ACCOUNTS_TYPE, accounts: [...accounts] };
}

/** The same homeserver base URL (scheme, host, port and path; a trailing slash does not count). */
export function sameHomeserver(a: string, b: string): boolean {
  const norm = (u: string): string => {
    try {
      const x = new URL(u);
      return `${x.protocol}//${x.host}${x.pathname.replace(/\/+$/, '')}`.toLowerCase();
    } catch { return u; }
  };
  return norm(a) === norm(b);
}
