/**
 * `trickle keys …`: the static keys of a field kit or gateway, the gateway's authorized field
 * kits, and the field kit's pinned gateway key. Also the loaders host/gateway wiring uses
 * (called from cli/main.ts, which passes the results down).
 *
 * State directory (--state-dir, else $TRICKLE_STATE_DIR, else ~/.local/state/trickle), mode 0700:
 *   identity.json          this machine's static key pair (0600)
 *   authorized_keys        gateway: field kits allowed to use it
 *   pinned-gateway.json    host: the gateway key trusted (first contact or `keys trust`)
 *   offered-gateway.json   host: a different key a gateway presented (for `keys trust`)
 *   session-host.json      host: SecureLink snapshot (session keys, 0600)
 *   session-gateway.json   gateway: SecureLink snapshot (session keys, 0600)
 *   accounts-gateway.json  gateway: the Matrix account bound to each field kit, with its access
 *                          token (authenticate-only mode; gateway/bound-accounts.ts; 0600)
 *   local-accounts.json    host: password verifiers of the accounts local clients log in to
 *                          (authenticate-only mode; host/local-accounts.ts; 0600)
 *
 * Passwords (`bind`, `local-account`) are read from the terminal without echo, or from stdin
 * with --password-stdin; they are never written anywhere and never passed on the command line.
 */
import { deriveKitAddress, formatAddress, MAX_KIT_ADDRESS } from '../net/link-address.ts';
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { TrickleError } from '../errors.ts';
import { equalBytes } from '../util/bytes.ts';
import {
  readBoundStateFile, readStateFile, readTextFile, removeStateFile, writeStateFile, writeTextFile,
} from '../util/state-file.ts';
import { type KeyPair, X25519 } from '../secure/dh.ts';
import { decodePublicKey, encodePublicKey, fingerprint, normalizeFingerprint } from '../secure/fingerprint.ts';
import {
  type AuthorizedKey, NAME_PATTERN, OFFERED_FILE_TYPE,
  authorizerFor, formatAuthorizedKeyLine, formatKeyFile, formatPinnedKey, parseAuthorizedKeys, parseKeyFile, parsePinnedKey,
} from '../secure/key-files.ts';
import { withoutResumableState, type SecureLinkRole, type SecureLinkSnapshot } from '../secure/secure-link.ts';
import { parseFlags } from './args.ts';
import { HomeserverClient } from '../gateway/homeserver-client.ts';
import {
  BOUND_ACCOUNTS_FILE, USER_ID, formatBoundAccounts, parseBoundAccounts, type BoundAccount,
} from '../gateway/bound-accounts.ts';
import {
  LOCAL_ACCOUNTS_FILE, MAX_PASSWORD_BYTES, formatLocalAccounts, makeVerifier, parseLocalAccounts, type LocalAccount,
} from '../host/local-accounts.ts';
import { utf8 } from '../util/bytes.ts';

export const KEYS_USAGE = `usage: trickle keys <command> [--state-dir DIR]

  generate [--force]        create this machine's key pair (identity.json)
  show                      print this machine's public key and its fingerprint
                            (and, on a field kit, the pinned gateway key)
  add <public-key> <name>   gateway: allow a field kit (its key as printed by "keys show")
  revoke <name|key|fingerprint>
                            gateway: remove a field kit
  list                      the authorized field kits and their bound accounts (gateway),
                            the local accounts (field kit); never a token or password
  trust <fingerprint|key>   field kit: accept a gateway key (after a "key changed" refusal,
                            compare the fingerprint with the gateway operator first)

 Amateur bands (--security authenticate-only: every frame is readable, so no password or
 access token may cross the air):
  bind <kit> <@user:server> --homeserver URL [--password-stdin | --access-token-file FILE]
                            gateway: bind the Matrix account to the field kit <name|key|
                            fingerprint>. Logs in at the homeserver now (device "Trickle <kit>")
                            with the password, read from the terminal without echo (or from
                            stdin with --password-stdin) and never stored; or takes the access
                            token in FILE (accounts without a password, e.g. SSO). The gateway
                            keeps the token (accounts-gateway.json) and runs the kit's requests
                            as that account
  unbind <kit>              gateway: forget the kit's account (a device "bind" logged in is
                            logged out); "revoke" does this too
  local-account <@user:server> [--password-stdin] [--remove]
                            field kit: set the password local Matrix clients log in with (kept
                            as a scrypt verifier in local-accounts.json; it never leaves the kit
                            and need not be the account's Matrix password). The gateway must have
                            bound the same account to this kit

  --state-dir DIR           default: $TRICKLE_STATE_DIR, else ~/.local/state/trickle

A fingerprint is 20 characters in 5 groups (e.g. 7Q2M-XK4D-0V9B-JH3T-WE8C), made to be read
aloud: compare it over a voice channel before trusting or adding a key.`;

export const FILES = Object.freeze({
  identity: 'identity.json',
  authorizedKeys: 'authorized_keys',
  pinnedGateway: 'pinned-gateway.json',
  offeredGateway: 'offered-gateway.json',
  session: (role: SecureLinkRole): string => (role === 'initiator' ? 'session-host.json' : 'session-gateway.json'),
});

function usage(message: string): TrickleError {
  return new TrickleError('ERR_USAGE', 'cli', `${message}\n\n${KEYS_USAGE}`);
}

function configError(message: string, detail?: Record<string, unknown>): TrickleError {
  return new TrickleError('ERR_CONFIG', 'config', message, detail);
}

/** --state-dir, else $TRICKLE_STATE_DIR, else ~/.local/state/trickle. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env['TRICKLE_STATE_DIR'];
  if (fromEnv !== undefined && fromEnv !== '') return resolve(fromEnv);
  return join(homedir(), '.local', 'state', 'trickle');
}

// ───────────────────────── loaders for host / gateway wiring ─────────────────────────

/** This machine's key pair; a clear error (with the command to run) when there is none. */
export function loadIdentity(stateDir: string): KeyPair {
  const path = join(stateDir, FILES.identity);
  const json = readStateFile(path, { private: true });
  if (json === undefined) throw configError(`no key pair at ${path}: run "trickle keys generate --state-dir ${stateDir}" first`, { path });
  return parseKeyFile(json, path);
}

/** The key pair, created (0600) on first use. */
export function loadOrCreateIdentity(stateDir: string): { keyPair: KeyPair; created: boolean } {
  const path = join(stateDir, FILES.identity);
  if (readStateFile(path, { private: true }) !== undefined) return { keyPair: loadIdentity(stateDir), created: false };
  const keyPair = X25519.generateKeyPair((n) => new Uint8Array(nodeRandomBytes(n)));
  writeStateFile(path, formatKeyFile(keyPair));
  return { keyPair, created: true };
}

export function readAuthorizedKeys(stateDir: string): AuthorizedKey[] {
  const path = join(stateDir, FILES.authorizedKeys);
  const text = readTextFile(path);
  return text === undefined ? [] : parseAuthorizedKeys(text, path);
}

/**
 * Gateway: isAuthorized for SecureLink that follows the authorized_keys file (re-read when its
 * mtime or size changes, so `keys add`/`revoke` act on a running gateway). If the file becomes
 * unreadable or invalid, everyone is refused (fail closed) and `onError` is told.
 */
export function authorizedKeysChecker(stateDir: string, onError?: (e: Error) => void): (remoteStatic: Uint8Array) => string | undefined {
  const path = join(stateDir, FILES.authorizedKeys);
  let stamp = '';
  let check: (rs: Uint8Array) => string | undefined = () => undefined;
  const reload = (): void => {
    let now: string;
    try {
      const st = statSync(path);
      now = `${st.mtimeMs}:${st.size}:${st.ino}`;
    } catch {
      now = 'missing';
    }
    if (now === stamp) return;
    stamp = now;
    try {
      check = authorizerFor(readAuthorizedKeys(stateDir));
    } catch (e) {
      check = () => undefined;
      onError?.(e as Error);
    }
  };
  reload();
  return (rs) => {
    reload();
    return check(rs);
  };
}

/** Host: the pinned gateway key, if any. */
export function loadPinnedGatewayKey(stateDir: string): Uint8Array | undefined {
  const path = join(stateDir, FILES.pinnedGateway);
  const json = readStateFile(path);
  return json === undefined ? undefined : parsePinnedKey(json, path);
}

/** Host: call on SecureLink's 'pinned' event. */
export function savePinnedGatewayKey(stateDir: string, publicKey: Uint8Array, now = new Date()): void {
  writeStateFile(join(stateDir, FILES.pinnedGateway), formatPinnedKey(publicKey, now));
}

/** Host: call on SecureLink's 'key-changed' event, so `keys trust <fingerprint>` can find the key. */
export function recordOfferedGatewayKey(stateDir: string, publicKey: Uint8Array, now = new Date()): void {
  writeStateFile(join(stateDir, FILES.offeredGateway), formatPinnedKey(publicKey, now, OFFERED_FILE_TYPE));
}

/**
 * The SecureLink snapshot file of a role: `restore` (undefined if none, or unreadable: then
 * `onError` is told and the link starts fresh) and a synchronous, durable `persist`.
 */
export function sessionStore(stateDir: string, role: SecureLinkRole, onError?: (e: Error) => void): {
  path: string;
  restore: SecureLinkSnapshot | undefined;
  persist: (snapshot: SecureLinkSnapshot) => void;
} {
  const path = join(stateDir, FILES.session(role));
  let restore: SecureLinkSnapshot | undefined;
  try {
    const read = readBoundStateFile(path, { private: true });
    if (read !== undefined) {
      restore = read.value as SecureLinkSnapshot;
      if (read.copied) {
        // A copy (restored backup, cloned state dir): resuming it could reuse nonces, and an old
        // resumption secret would accept IK1s recorded since. Keep the pins, drop the rest.
        restore = withoutResumableState(restore);
        onError?.(new Error(`${path} is not the file this program wrote (copied or restored from a backup?): `
          + 'not resuming its session, which could reuse nonces; a new handshake follows'));
      }
    }
  } catch (e) {
    onError?.(e as Error);
  }
  return { path, restore, persist: (snapshot) => writeStateFile(path, snapshot, { bindToFile: true }) };
}

// ───────────────────────── accounts (authenticate-only mode) ─────────────────────────

/** Gateway: the bound accounts (accounts-gateway.json; refused when others can read it). */
export function readBoundAccounts(stateDir: string): BoundAccount[] {
  const path = join(stateDir, BOUND_ACCOUNTS_FILE);
  const json = readStateFile(path, { private: true });
  return json === undefined ? [] : parseBoundAccounts(json, path);
}

/** Host: the local accounts (local-accounts.json; refused when others can read it). */
export function readLocalAccounts(stateDir: string): LocalAccount[] {
  const path = join(stateDir, LOCAL_ACCOUNTS_FILE);
  const json = readStateFile(path, { private: true });
  return json === undefined ? [] : parseLocalAccounts(json, path);
}

/**
 * A file's parsed content, read again when its mtime, size or inode change (so `keys bind` and
 * `keys local-account` act on a running gateway or kit). Unreadable or invalid: `empty` (fail
 * closed: no account), and `onError` is told.
 */
function watched<T>(path: string, read: () => T, empty: T, onError?: (e: Error) => void): () => T {
  let stamp = '';
  let value = empty;
  return () => {
    let now: string;
    try {
      const st = statSync(path);
      now = `${st.mtimeMs}:${st.size}:${st.ino}:${st.mode}`;
    } catch {
      now = 'missing';
    }
    if (now !== stamp) {
      stamp = now;
      try { value = read(); } catch (e) { value = empty; onError?.(e as Error); }
    }
    return value;
  };
}

/** Gateway: the account bound to a kit's static key, following accounts-gateway.json. */
export function boundAccountsLookup(stateDir: string, onError?: (e: Error) => void): (kitStatic: Uint8Array) => BoundAccount | undefined {
  const current = watched(join(stateDir, BOUND_ACCOUNTS_FILE), () => readBoundAccounts(stateDir), [] as BoundAccount[], onError);
  return (kit) => {
    const key = encodePublicKey(kit);
    return current().find((a) => a.kitKey === key);
  };
}

/** Host: the local accounts, following local-accounts.json. */
export function localAccountsReader(stateDir: string, onError?: (e: Error) => void): () => readonly LocalAccount[] {
  return watched(join(stateDir, LOCAL_ACCOUNTS_FILE), () => readLocalAccounts(stateDir), [] as LocalAccount[], onError);
}

/** How `bind` and `local-account` read a password. */
export interface PasswordReader {
  /** From the terminal without echo (`fromStdin` false), or all of stdin (`fromStdin` true). */
  readPassword(prompt: string, fromStdin: boolean): Promise<string>;
}

/** The real terminal / stdin. */
export const terminalPasswordReader: PasswordReader = {
  async readPassword(prompt, fromStdin) {
    const stdin = process.stdin;
    if (fromStdin) {
      const chunks: Buffer[] = [];
      for await (const c of stdin) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
    }
    if (!stdin.isTTY) throw new TrickleError('ERR_USAGE', 'cli', 'stdin is not a terminal: pass --password-stdin to read the password from it');
    return readHidden(prompt);
  },
};

/** One line from the terminal with echo off (raw mode): Enter ends it, Backspace deletes, Ctrl-C cancels. */
function readHidden(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(prompt);
    let chars: string[] = [];
    const finish = (err?: Error): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err); else resolve(chars.join(''));
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') { finish(); return; }
        if (ch === '\u0003') { finish(new TrickleError('ERR_USAGE', 'cli', 'cancelled')); return; }
        if (ch === '\u007f' || ch === '\b') chars = chars.slice(0, -1);
        else chars.push(ch);
      }
    };
    stdin.setEncoding('utf8');
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('data', onData);
  });
}

function checkPasswordText(password: string): string {
  if (password === '') throw configError('the password is empty');
  if (utf8.encode(password).length > MAX_PASSWORD_BYTES) throw configError(`the password is longer than ${MAX_PASSWORD_BYTES} bytes`);
  return password;
}

function matrixFailure(res: { status: number; body: Uint8Array }): string {
  try {
    const e = JSON.parse(utf8.decode(res.body)) as { errcode?: unknown; error?: unknown };
    return `${res.status} ${String(e.errcode ?? '')}: ${String(e.error ?? '')}`;
  } catch { return `HTTP ${res.status}`; }
}

function jsonBody(res: { body: Uint8Array }): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(utf8.decode(res.body));
    return v && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : {};
  } catch { return {}; }
}

const HS_TIMEOUT_MS = 30_000;

/** Best effort: log out a device `bind` logged in (its token is being forgotten). Returns what happened. */
async function endBoundDevice(a: BoundAccount): Promise<string> {
  if (a.via !== 'password') return `the access token given with --access-token-file is left valid at ${a.homeserver}`;
  const hs = new HomeserverClient({ baseUrl: a.homeserver, requestTimeoutMs: HS_TIMEOUT_MS });
  const r = await hs.perform({ method: 'POST', path: '/_matrix/client/v3/logout', query: '', accessToken: a.accessToken, contentType: 'application/json', body: utf8.encode('{}') });
  if (r.status === 200) return `logged out device ${a.deviceId ?? '(unknown)'} of ${a.userId}`;
  return `could not log out device ${a.deviceId ?? '(unknown)'} of ${a.userId} (${matrixFailure(r)}); remove it from the account's sessions by hand`;
}

function writeBoundAccounts(stateDir: string, accounts: readonly BoundAccount[]): string {
  const path = join(stateDir, BOUND_ACCOUNTS_FILE);
  writeStateFile(path, formatBoundAccounts(accounts));
  return path;
}

/** The bound accounts `which` (kit name, base64 key or fingerprint) names. */
function boundMatching(accounts: readonly BoundAccount[], which: string): BoundAccount[] {
  const fp = normalizeFingerprint(which);
  return accounts.filter((a) => a.kitName === which || a.kitKey === which || (fp !== undefined && fingerprint(decodePublicKey(a.kitKey)) === fp));
}

async function bindCommand(stateDir: string, positionals: string[], flags: Record<string, unknown>, io: PasswordReader, out: (s: string) => void): Promise<number> {
  const which = positional(positionals, 0, '<kit name|key|fingerprint>');
  const wanted = positional(positionals, 1, '<@user:server>');
  noMore(positionals, 2);
  if (!USER_ID.test(wanted)) throw configError(`${JSON.stringify(wanted)} is not a Matrix user id; give it in full, e.g. @alice:example.org`);
  const homeserver = flags['homeserver'];
  if (typeof homeserver !== 'string' || homeserver === '') throw usage('bind needs --homeserver URL (the homeserver the gateway uses)');
  let hsUrl: URL;
  try { hsUrl = new URL(homeserver); } catch { throw configError(`--homeserver must be a URL such as https://matrix.example.org, got ${JSON.stringify(homeserver)}`); }
  if (hsUrl.protocol !== 'http:' && hsUrl.protocol !== 'https:') throw configError(`--homeserver must be an http:// or https:// URL, got ${homeserver}`);
  const tokenFile = flags['access-token-file'];
  if (tokenFile !== undefined && flags['password-stdin'] === true) throw usage('give either --password-stdin or --access-token-file, not both');

  const keysPath = join(stateDir, FILES.authorizedKeys);
  const fp = normalizeFingerprint(which);
  const kits = readAuthorizedKeys(stateDir).filter((k) => k.name === which || encodePublicKey(k.publicKey) === which || (fp !== undefined && k.fingerprint === fp));
  if (kits.length === 0) throw configError(`no authorized field kit matches ${JSON.stringify(which)} in ${keysPath}; authorize it first (trickle keys add <public key> <name>), see "trickle keys list"`);
  const kit = kits[0]!;
  const hs = new HomeserverClient({ baseUrl: homeserver, requestTimeoutMs: HS_TIMEOUT_MS });

  let account: BoundAccount;
  const base = { kitKey: encodePublicKey(kit.publicKey), kitName: kit.name, homeserver: hs.baseUrl, boundAt: new Date().toISOString() };
  if (typeof tokenFile === 'string') {
    let token: string;
    try { token = readFileSync(tokenFile, 'utf8').trim(); } catch (e) { throw configError(`cannot read ${tokenFile}: ${(e as Error).message}`); }
    if (token === '' || /\s/.test(token)) throw configError(`${tokenFile} must hold one access token and nothing else`);
    const r = await hs.perform({ method: 'GET', path: '/_matrix/client/v3/account/whoami', query: '', accessToken: token, body: new Uint8Array(0) });
    if (r.status !== 200) throw configError(`the homeserver at ${hs.baseUrl} did not accept the access token in ${tokenFile}: ${matrixFailure(r)}`);
    const who = jsonBody(r);
    if (who['user_id'] !== wanted) throw configError(`the access token in ${tokenFile} belongs to ${String(who['user_id'])}, not ${wanted}`);
    account = { ...base, userId: wanted, deviceId: typeof who['device_id'] === 'string' ? who['device_id'] : null, accessToken: token, via: 'token' };
  } else {
    const password = checkPasswordText(await io.readPassword(`Matrix password of ${wanted} (used once to log in, never stored): `, flags['password-stdin'] === true));
    const r = await hs.perform({
      method: 'POST', path: '/_matrix/client/v3/login', query: '', contentType: 'application/json',
      body: utf8.encode(JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: wanted }, password, initial_device_display_name: `Trickle ${kit.name}` })),
    });
    if (r.status !== 200) throw configError(`the homeserver at ${hs.baseUrl} refused the login of ${wanted}: ${matrixFailure(r)}`);
    const login = jsonBody(r);
    const token = login['access_token'];
    const userId = login['user_id'];
    if (typeof token !== 'string' || token === '' || typeof userId !== 'string') throw configError(`the homeserver's login answer has no access token or user id`);
    account = { ...base, userId, deviceId: typeof login['device_id'] === 'string' ? login['device_id'] : null, accessToken: token, via: 'password' };
    if (userId.toLowerCase() !== wanted.toLowerCase()) {
      out(await endBoundDevice(account));
      throw configError(`the homeserver logged in ${userId}, not ${wanted}`);
    }
  }
  const accounts = readBoundAccounts(stateDir);
  const previous = accounts.find((a) => a.kitKey === account.kitKey);
  const path = writeBoundAccounts(stateDir, [...accounts.filter((a) => a.kitKey !== account.kitKey), account]);
  out(`bound ${kit.name} (${kit.fingerprint}) to ${account.userId}, device ${account.deviceId ?? '(none)'}, at ${account.homeserver}`);
  out(`the access token is kept in ${path} (mode 0600) and never crosses the air; the running gateway uses it from its next request`);
  if (previous && previous.accessToken !== account.accessToken) out(`replaced ${previous.userId}: ${await endBoundDevice(previous)}`);
  return 0;
}

async function unbind(stateDir: string, matching: (accounts: readonly BoundAccount[]) => BoundAccount[], out: (s: string) => void): Promise<BoundAccount[]> {
  const accounts = readBoundAccounts(stateDir);
  const gone = matching(accounts);
  if (gone.length === 0) return [];
  writeBoundAccounts(stateDir, accounts.filter((a) => !gone.includes(a)));
  for (const a of gone) out(`unbound ${a.kitName} from ${a.userId}: ${await endBoundDevice(a)}`);
  return gone;
}

async function localAccountCommand(stateDir: string, positionals: string[], flags: Record<string, unknown>, io: PasswordReader, out: (s: string) => void): Promise<number> {
  const userId = positional(positionals, 0, '<@user:server>');
  noMore(positionals, 1);
  if (!USER_ID.test(userId)) throw configError(`${JSON.stringify(userId)} is not a Matrix user id; give it in full, e.g. @alice:example.org`);
  const path = join(stateDir, LOCAL_ACCOUNTS_FILE);
  const accounts = readLocalAccounts(stateDir);
  if (flags['remove'] === true) {
    if (!accounts.some((a) => a.userId === userId)) throw configError(`${userId} is not a local account of this kit (${path})`);
    writeStateFile(path, formatLocalAccounts(accounts.filter((a) => a.userId !== userId)));
    out(`removed the local account ${userId}; tokens this kit issued for it stay valid until logged out`);
    return 0;
  }
  const fromStdin = flags['password-stdin'] === true;
  const password = checkPasswordText(await io.readPassword(`password local clients log in to ${userId} with: `, fromStdin));
  if (!fromStdin && (await io.readPassword('the same password again: ', false)) !== password) throw configError('the two passwords differ; nothing was changed');
  const account: LocalAccount = { userId, scrypt: await makeVerifier(password), setAt: new Date().toISOString() };
  writeStateFile(path, formatLocalAccounts([...accounts.filter((a) => a.userId !== userId), account]));
  out(`set the local account ${userId} (scrypt verifier in ${path}, mode 0600; the password is not stored)`);
  out('local clients log in to this kit with it when it runs with --security authenticate-only; the gateway must have this account bound to the kit (trickle keys bind, on the gateway)');
  return 0;
}

// ───────────────────────── the command ─────────────────────────

function positional(positionals: string[], i: number, what: string): string {
  const v = positionals[i];
  if (v === undefined || v === '') throw usage(`missing ${what}`);
  return v;
}

function noMore(positionals: string[], n: number): void {
  if (positionals.length > n) throw usage(`unexpected argument ${JSON.stringify(positionals[n])}`);
}

/** Parse a key typed by a user (base64 as printed by "keys show"). */
function userKey(text: string): Uint8Array {
  try {
    return decodePublicKey(text);
  } catch (e) {
    throw configError((e as Error).message);
  }
}

/**
 * `trickle keys …`. Returns the exit code (0); bad input throws TrickleError (ERR_USAGE or
 * ERR_CONFIG) with a message that says what was wrong, for main.ts to print.
 */
export async function runKeysCommand(argv: string[], out: (s: string) => void, io: PasswordReader = terminalPasswordReader): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h') {
    out(KEYS_USAGE);
    return sub === undefined ? 2 : 0;
  }
  const { flags, positionals } = parseFlags(rest, {
    'state-dir': { type: 'string' },
    force: { type: 'boolean' },
    homeserver: { type: 'string' },
    'password-stdin': { type: 'boolean' },
    'access-token-file': { type: 'string' },
    remove: { type: 'boolean' },
  }, KEYS_USAGE);
  const dirFlag = flags['state-dir'];
  if (dirFlag === '') throw usage('--state-dir needs a directory');
  const stateDir = typeof dirFlag === 'string' ? resolve(dirFlag) : defaultStateDir();
  if (flags['force'] === true && sub !== 'generate') throw usage('--force applies to "generate" only');
  const only = (flag: string, subs: string[]): void => {
    if (flags[flag] !== undefined && !subs.includes(sub)) throw usage(`--${flag} applies to "${subs.join('" and "')}" only`);
  };
  only('homeserver', ['bind']);
  only('access-token-file', ['bind']);
  only('password-stdin', ['bind', 'local-account']);
  only('remove', ['local-account']);

  switch (sub) {
    case 'generate': {
      noMore(positionals, 0);
      const path = join(stateDir, FILES.identity);
      if (readTextFile(path) !== undefined && flags['force'] !== true) {
        throw configError(`${path} already exists; keep it, or pass --force to replace it (peers that trust the old key will refuse the new one until they re-trust it)`, { path });
      }
      const kp = X25519.generateKeyPair((n) => new Uint8Array(nodeRandomBytes(n)));
      writeStateFile(path, formatKeyFile(kp));
      out(`wrote ${path}`);
      out(`public key:  ${encodePublicKey(kp.publicKey)}`);
      out(`fingerprint: ${fingerprint(kp.publicKey)}`);
      return 0;
    }
    case 'show': {
      noMore(positionals, 0);
      const kp = loadIdentity(stateDir);
      out(`public key:  ${encodePublicKey(kp.publicKey)}`);
      out(`fingerprint: ${fingerprint(kp.publicKey)}`);
      out(`link address: ${formatAddress(deriveKitAddress(kp.publicKey))} (a field kit's, on a gateway started with --network shared; --link-address N overrides)`);
      const pinned = loadPinnedGatewayKey(stateDir);
      if (pinned !== undefined) out(`pinned gateway: ${encodePublicKey(pinned)} (${fingerprint(pinned)})`);
      return 0;
    }
    case 'add': {
      const key = userKey(positional(positionals, 0, '<public-key>'));
      const name = positional(positionals, 1, '<name>');
      noMore(positionals, 2);
      if (!NAME_PATTERN.test(name)) throw configError(`name ${JSON.stringify(name)} must be 1–64 of A–Z a–z 0–9 . _ @ + -`);
      const path = join(stateDir, FILES.authorizedKeys);
      const text = readTextFile(path) ?? '# Trickle gateway: field kits allowed to use it. One per line: <base64 public key> <name>\n';
      const existing = parseAuthorizedKeys(text, path);
      const sameKey = existing.find((k) => equalBytes(k.publicKey, key));
      if (sameKey !== undefined) throw configError(`that key is already authorized as "${sameKey.name}" (${path}:${sameKey.line})`);
      const sameName = existing.find((k) => k.name === name);
      if (sameName !== undefined) throw configError(`the name "${name}" is already used (${path}:${sameName.line}); revoke it first or pick another`);
      writeTextFile(path, `${text}${text.endsWith('\n') || text === '' ? '' : '\n'}${formatAuthorizedKeyLine(key, name)}\n`);
      out(`authorized ${name}: ${fingerprint(key)}`);
      return 0;
    }
    case 'revoke': {
      const which = positional(positionals, 0, '<name|key|fingerprint>');
      noMore(positionals, 1);
      const path = join(stateDir, FILES.authorizedKeys);
      const text = readTextFile(path);
      if (text === undefined) throw configError(`no authorized keys at ${path}: nothing to revoke`, { path });
      const keys = parseAuthorizedKeys(text, path);
      const fp = normalizeFingerprint(which);
      const match = keys.filter((k) => k.name === which || encodePublicKey(k.publicKey) === which || (fp !== undefined && k.fingerprint === fp));
      if (match.length === 0) throw configError(`no authorized key matches ${JSON.stringify(which)} (see "trickle keys list")`);
      const drop = new Set(match.map((k) => k.line));
      const lines = text.split(/\r?\n/);
      const kept = lines.filter((_, i) => !drop.has(i + 1));
      writeTextFile(path, kept.join('\n'));
      for (const k of match) out(`revoked ${k.name}: ${k.fingerprint}`);
      // Its Matrix account goes with it (authenticate-only mode): the gateway no longer acts for it.
      const revokedKeys = new Set(match.map((k) => encodePublicKey(k.publicKey)));
      await unbind(stateDir, (accounts) => accounts.filter((a) => revokedKeys.has(a.kitKey)), out);
      return 0;
    }
    case 'list': {
      noMore(positionals, 0);
      const keys = readAuthorizedKeys(stateDir);
      const bound = readBoundAccounts(stateDir);
      const boundText = (key: string): string => {
        const a = bound.find((b) => b.kitKey === key);
        return a ? `\tbound to ${a.userId} (device ${a.deviceId ?? '(none)'}, ${a.homeserver})` : '';
      };
      if (keys.length === 0) out(`no authorized field kits (${join(stateDir, FILES.authorizedKeys)})`);
      const addressOf = (k: { publicKey: Uint8Array }): number => deriveKitAddress(k.publicKey);
      for (const k of keys) {
        const a = addressOf(k);
        const twin = keys.filter((o) => o !== k && addressOf(o) === a).map((o) => o.name);
        const shared = twin.length > 0 ? ` (also ${twin.join(', ')}: on a shared channel start all but one of them with --link-address N, a free N from 0 to ${MAX_KIT_ADDRESS})` : '';
        out(`${k.name}\t${k.fingerprint}\t${encodePublicKey(k.publicKey)}\tlink address ${formatAddress(a)}${shared}${boundText(encodePublicKey(k.publicKey))}`);
      }
      for (const a of bound) {
        if (!keys.some((k) => encodePublicKey(k.publicKey) === a.kitKey)) out(`${a.kitName}\t(not authorized)\t${a.kitKey}\tbound to ${a.userId}: unbind it with "trickle keys unbind ${a.kitName}"`);
      }
      for (const a of readLocalAccounts(stateDir)) out(`local account ${a.userId} (set ${a.setAt})`);
      return 0;
    }
    case 'bind':
      return bindCommand(stateDir, positionals, flags, io, out);
    case 'unbind': {
      const which = positional(positionals, 0, '<kit name|key|fingerprint>');
      noMore(positionals, 1);
      const gone = await unbind(stateDir, (accounts) => boundMatching(accounts, which), out);
      if (gone.length === 0) throw configError(`no bound account matches ${JSON.stringify(which)} (see "trickle keys list")`);
      return 0;
    }
    case 'local-account':
      return localAccountCommand(stateDir, positionals, flags, io, out);
    case 'trust': {
      const which = positional(positionals, 0, '<fingerprint|key>');
      noMore(positionals, 1);
      let key: Uint8Array;
      const fp = normalizeFingerprint(which);
      if (fp !== undefined) {
        const offeredPath = join(stateDir, FILES.offeredGateway);
        const offeredJson = readStateFile(offeredPath);
        const offered = offeredJson === undefined ? undefined : parsePinnedKey(offeredJson, offeredPath, OFFERED_FILE_TYPE);
        const pinned = loadPinnedGatewayKey(stateDir);
        if (pinned !== undefined && fingerprint(pinned) === fp) {
          out(`already trusted: ${fp}`);
          return 0;
        }
        if (offered === undefined) throw configError(`no gateway has offered a key with fingerprint ${fp}; pass the gateway's full public key instead (as printed by "trickle keys show" on the gateway)`);
        if (fingerprint(offered) !== fp) {
          throw configError(`fingerprint ${fp} does not match the key the gateway offered (${fingerprint(offered)}); do not trust it unless the gateway operator confirms, then pass the full key`);
        }
        key = offered;
      } else if (/^[A-Za-z0-9+/=]{40,}$/.test(which.trim())) {
        key = userKey(which);
      } else {
        throw configError(`${JSON.stringify(which)} is neither a fingerprint (20 characters, e.g. 7Q2M-XK4D-0V9B-JH3T-WE8C) nor a base64 public key`);
      }
      savePinnedGatewayKey(stateDir, key);
      removeStateFile(join(stateDir, FILES.offeredGateway));
      out(`trusted gateway key ${fingerprint(key)}; restart "trickle host" to use it`);
      return 0;
    }
    default:
      throw usage(`unknown keys command ${JSON.stringify(sub)}`);
  }
}
