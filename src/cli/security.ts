/**
 * Builds the security settings of `trickle host` / `trickle gateway` from the state directory:
 * this machine's identity, the pinned gateway key (field kit) or the authorized field kits
 * (gateway), the persisted Noise session, and the persisted CoAP session. The state files are
 * written with mode 0600 in a 0700 directory (util/state-file.ts).
 */
import { join } from 'node:path';
import { readdirSync } from 'node:fs';
import type { KitStores } from '../gateway/gateway.ts';
import { throttledWarn, type Logger } from '../log.ts';
import { throttle } from '../util/throttle.ts';
import { TrickleError } from '../errors.ts';
import { readStateFile, writeStateFile } from '../util/state-file.ts';
import { fingerprint, encodePublicKey } from '../secure/fingerprint.ts';
import type { SecureLinkSnapshot } from '../secure/secure-link.ts';
import type { AirtimeState, SecuritySettings, StateStore, CoapSessionState } from '../net/radio-stack.ts';
import {
  authorizedKeysChecker, boundAccountsLookup, loadOrCreateIdentity, loadPinnedGatewayKey, localAccountsReader, readAuthorizedKeys,
  readBoundAccounts, readLocalAccounts, recordOfferedGatewayKey, savePinnedGatewayKey, sessionStore, FILES,
} from './keys.ts';
import type { BoundAccount } from '../gateway/bound-accounts.ts';
import type { LocalAccount } from '../host/local-accounts.ts';

export type SecurityMode = 'encrypt' | 'authenticate-only' | 'none';

export function parseSecurityMode(raw: string | undefined): SecurityMode {
  const v = raw ?? 'encrypt';
  if (v === 'encrypt' || v === 'authenticate-only' || v === 'none') return v;
  throw new TrickleError('ERR_CONFIG', 'config', `--security must be encrypt (default), authenticate-only (amateur bands, where encryption is not allowed) or none (tests only), got ${JSON.stringify(v)}`);
}

function fileStore<T>(path: string, what: string, log: Logger): StateStore<T> {
  return {
    load: () => {
      try { return readStateFile(path, { private: true }) as T | undefined; } catch (e) {
        log.warn({ err: (e as Error).message, path }, `${what} state unreadable; starting a new session`);
        return undefined;
      }
    },
    save: (value) => writeStateFile(path, value),
  };
}

/** The CoAP session (sequence numbers, compact context) of this end. */
export function coapStateStore(stateDir: string, role: 'host' | 'gateway', log: Logger): StateStore<CoapSessionState> {
  return fileStore<CoapSessionState>(join(stateDir, `coap-${role}.json`), 'CoAP session', log);
}

/** The Matrix session (handles, txn ids; on the gateway also the session's access token). */
export function matrixStateStore(stateDir: string, role: 'host' | 'gateway', log: Logger): StateStore<unknown> {
  return fileStore<unknown>(join(stateDir, `matrix-${role}.json`), 'Matrix session', log);
}

/**
 * A gateway on a shared channel: each kit address has its own directory (kits/<address>/, 0700)
 * for its CoAP session, Matrix session, push sync and secure-link snapshot, created by the first
 * write (not when a frame for the address is first heard). The addresses that hold a kit's
 * state are resumed at start: any file but the secure-link snapshot, or a snapshot with a
 * session or resumption secrets. Anyone in radio range can make a stack for any address, and its
 * SecureLink persists the ephemerals of the handshakes it answered (replay protection); that
 * alone, or an empty directory, does not make the address a known kit at the next start
 * (its snapshot is still read when the address is heard again).
 */
export function sharedKitStores(stateDir: string, log: Logger): { kitStores: (address: number) => KitStores; knownAddresses: () => number[] } {
  const kitsDir = join(stateDir, 'kits');
  const dirOf = (address: number): string => join(kitsDir, address.toString(16).padStart(2, '0'));
  const onError = (e: Error) => log.error({ err: e.message }, 'state file problem');
  return {
    kitStores: (address) => {
      const dir = dirOf(address);
      const session = sessionStore(dir, 'responder', onError);
      return {
        coapStateStore: coapStateStore(dir, 'gateway', log),
        matrixStateStore: matrixStateStore(dir, 'gateway', log),
        syncStateStore: fileStore<unknown>(join(dir, 'sync-gateway.json'), 'push sync', log),
        secure: { persist: session.persist, restore: session.restore },
      };
    },
    knownAddresses: () => {
      let names: string[] = [];
      try { names = readdirSync(kitsDir); } catch { return []; }
      return names.filter((n) => /^[0-7][0-9a-f]$/.test(n)).map((n) => parseInt(n, 16)).filter((a) => a <= 126 && holdsKitState(dirOf(a)));
    },
  };
}

/** A kit directory of sharedKitStores with something of an authenticated kit in it (see there). */
function holdsKitState(dir: string): boolean {
  const sessionFile = FILES.session('responder');
  let names: string[];
  try { names = readdirSync(dir); } catch { return false; }
  if (names.some((n) => n !== sessionFile && !n.startsWith('.'))) return true; // CoAP, Matrix, push sync
  if (!names.includes(sessionFile)) return false;
  let snap: Partial<SecureLinkSnapshot> | undefined;
  try { snap = readStateFile(join(dir, sessionFile), { private: true }) as Partial<SecureLinkSnapshot> | undefined; } catch { return true; } // unreadable: let the start report it
  if (snap === null || typeof snap !== 'object') return true;
  return (snap.session !== null && snap.session !== undefined) || (snap.resumptions?.length ?? 0) > 0 || (snap.ikSeen?.length ?? 0) > 0 || (snap.lastIk !== null && snap.lastIk !== undefined);
}

/** Everything an end persists, for startHost / startGateway. */
export function stateStores(stateDir: string, role: 'host' | 'gateway', log: Logger): { coapStateStore: StateStore<CoapSessionState>; matrixStateStore: StateStore<unknown>; syncStateStore: StateStore<unknown>; airtimeStore: StateStore<AirtimeState>; tokensStore?: StateStore<unknown>; txnStateStore?: StateStore<unknown> } {
  return {
    // The gateway's per-kit homeserver txn namespaces (gateway/txn-namespace.ts).
    ...(role === 'gateway' ? { txnStateStore: fileStore<unknown>(join(stateDir, 'txn-gateway.json'), 'homeserver txn namespaces', log) } : {}),
    // The host's access-token registry: SHA-256 prefixes of tokens → user ids, never tokens.
    ...(role === 'host' ? { tokensStore: fileStore<unknown>(join(stateDir, 'tokens-host.json'), 'access-token registry', log) } : {}),
    airtimeStore: fileStore<AirtimeState>(join(stateDir, `airtime-${role}.json`), 'airtime ledger', log),
    coapStateStore: coapStateStore(stateDir, role, log),
    matrixStateStore: matrixStateStore(stateDir, role, log),
    syncStateStore: fileStore<unknown>(join(stateDir, `sync-${role}.json`), 'push sync', log),
  };
}

/**
 * What keeps secrets off the air in authenticate-only mode (SECURITY.md "Amateur radio"): the
 * field kit answers logins against its local accounts (local-accounts.json), the gateway runs
 * each kit's requests with the account bound to it (accounts-gateway.json). Both files are
 * followed while running. Other modes: nothing (tokens and passwords are carried, encrypted in
 * encrypt mode).
 */
export function secretsPolicy(role: 'host' | 'gateway', stateDir: string, mode: SecurityMode, log: Logger): {
  localLogin?: { accounts: () => readonly LocalAccount[] };
  tokensStore?: StateStore<unknown>;
  boundAccounts?: (kitStatic: Uint8Array) => BoundAccount | undefined;
} {
  if (mode !== 'authenticate-only') return {};
  const onError = (e: Error) => log.error({ err: e.message }, 'account file problem: no account is usable until it is fixed');
  if (role === 'host') {
    let none = false;
    try { none = readLocalAccounts(stateDir).length === 0; } catch { /* reported by the reader */ }
    if (none) log.warn({ stateDir }, 'authenticate-only mode: local clients log in with a password checked on this kit, and none is set: run "trickle keys local-account <@user:server>"');
    // Only tokens this kit issued are good in this mode: a registry of its own, so tokens the
    // homeserver issued while the kit ran in encrypt mode (tokens-host.json) are not taken for
    // the bound account's.
    return {
      localLogin: { accounts: localAccountsReader(stateDir, onError) },
      tokensStore: fileStore<unknown>(join(stateDir, 'tokens-host-local.json'), 'access-token registry (tokens issued by this kit)', log),
    };
  }
  let none = false;
  try { none = readBoundAccounts(stateDir).length === 0; } catch { /* reported by the lookup */ }
  if (none) log.warn({ stateDir }, 'authenticate-only mode: no access token crosses the air, so each field kit needs a Matrix account bound here: run "trickle keys bind <kit> <@user:server> --homeserver URL"');
  return { boundAccounts: boundAccountsLookup(stateDir, onError) };
}

export function buildSecurity(role: 'host' | 'gateway', stateDir: string, mode: SecurityMode, log: Logger): SecuritySettings | undefined {
  if (mode === 'none') {
    log.warn('security is OFF (--security none): anyone in radio range can read and forge traffic; use this for tests only');
    return undefined;
  }
  const onError = (e: Error) => log.error({ err: e.message }, 'state file problem');
  // Anyone in radio range can make frames drop or be refused: at most one line a minute per reason.
  const warnAir = throttledWarn(log, throttle(60_000, Date.now));
  const { keyPair, created } = loadOrCreateIdentity(stateDir);
  const fp = fingerprint(keyPair.publicKey);
  if (created) log.info({ fingerprint: fp, publicKey: encodePublicKey(keyPair.publicKey), stateDir }, 'created this machine\'s key pair');
  else log.info({ fingerprint: fp, stateDir }, 'identity');
  const linkMode = mode === 'authenticate-only' ? 'authenticate' : 'encrypt';
  if (role === 'host') {
    const store = sessionStore(stateDir, 'initiator', onError);
    const pinned = loadPinnedGatewayKey(stateDir);
    return {
      role: 'initiator',
      staticKeyPair: keyPair,
      ...(pinned ? { remoteStaticPinned: pinned } : {}),
      mode: linkMode,
      persist: store.persist,
      ...(store.restore ? { restore: store.restore } : {}),
      onEvent: (e) => {
        switch (e.type) {
          case 'pinned': savePinnedGatewayKey(stateDir, e.remoteStatic); log.info({ fingerprint: e.fingerprint }, 'gateway key pinned (first contact)'); break;
          case 'key-changed':
            recordOfferedGatewayKey(stateDir, e.receivedKey);
            log.error({ expected: e.expectedFingerprint, received: e.receivedFingerprint },
              `the gateway's key CHANGED; nothing is sent until you accept it. Compare the fingerprint with the gateway operator, then run: trickle keys trust ${e.receivedFingerprint}`);
            break;
          case 'refused': log.error({ reason: e.reason }, 'the gateway refused this field kit: ask its operator to run "trickle keys add <your key> <name>" (see "trickle keys show")'); break;
          case 'established': log.info({ pattern: e.pattern, fingerprint: e.fingerprint }, 'secure session established'); break;
          case 'frames-dropped': warnAir(e.code, { code: e.code, count: e.count, detail: e.detail }, 'secure frame dropped'); break;
          case 'handshake-failed': log.warn({ attempts: e.attempts }, 'handshake failed: is the gateway running and in range?'); break;
          default: log.debug({ event: e.type }, 'secure link');
        }
      },
    };
  }
  const store = sessionStore(stateDir, 'responder', onError);
  if (readAuthorizedKeys(stateDir).length === 0) {
    log.warn({ stateDir }, 'no field kit is authorized yet: add one with "trickle keys add <public key> <name>"');
  }
  return {
    role: 'responder',
    staticKeyPair: keyPair,
    isAuthorized: authorizedKeysChecker(stateDir, onError),
    mode: linkMode,
    persist: store.persist,
    ...(store.restore ? { restore: store.restore } : {}),
    onEvent: (e) => {
      switch (e.type) {
        case 'refused': warnAir(`refused:${e.reason}`, { reason: e.reason, fingerprint: e.fingerprint }, 'refused a field kit that is not authorized'); break;
        case 'established': log.info({ pattern: e.pattern, fingerprint: e.fingerprint, name: e.name }, 'secure session established'); break;
        case 'frames-dropped': warnAir(e.code, { code: e.code, count: e.count, detail: e.detail }, 'secure frame dropped'); break;
        default: log.debug({ event: e.type }, 'secure link');
      }
    },
  };
}
