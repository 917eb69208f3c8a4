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
 */
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
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

export const KEYS_USAGE = `usage: trickle keys <command> [--state-dir DIR]

  generate [--force]        create this machine's key pair (identity.json)
  show                      print this machine's public key and its fingerprint
                            (and, on a field kit, the pinned gateway key)
  add <public-key> <name>   gateway: allow a field kit (its key as printed by "keys show")
  revoke <name|key|fingerprint>
                            gateway: remove a field kit
  list                      gateway: the authorized field kits
  trust <fingerprint|key>   field kit: accept a gateway key (after a "key changed" refusal,
                            compare the fingerprint with the gateway operator first)

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
export async function runKeysCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h') {
    out(KEYS_USAGE);
    return sub === undefined ? 2 : 0;
  }
  const { flags, positionals } = parseFlags(rest, {
    'state-dir': { type: 'string' },
    force: { type: 'boolean' },
  }, KEYS_USAGE);
  const dirFlag = flags['state-dir'];
  if (dirFlag === '') throw usage('--state-dir needs a directory');
  const stateDir = typeof dirFlag === 'string' ? resolve(dirFlag) : defaultStateDir();
  if (flags['force'] === true && sub !== 'generate') throw usage('--force applies to "generate" only');

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
      return 0;
    }
    case 'list': {
      noMore(positionals, 0);
      const keys = readAuthorizedKeys(stateDir);
      if (keys.length === 0) out(`no authorized field kits (${join(stateDir, FILES.authorizedKeys)})`);
      for (const k of keys) out(`${k.name}\t${k.fingerprint}\t${encodePublicKey(k.publicKey)}`);
      return 0;
    }
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
