import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  authorizedKeysChecker, defaultStateDir, loadIdentity, loadPinnedGatewayKey, recordOfferedGatewayKey, runKeysCommand, savePinnedGatewayKey, sessionStore,
} from '../../../src/cli/keys.ts';
import { X25519 } from '../../../src/secure/dh.ts';
import { decodePublicKey, encodePublicKey, fingerprint, normalizeFingerprint } from '../../../src/secure/fingerprint.ts';
import { parseAuthorizedKeys } from '../../../src/secure/key-files.ts';
import { seededRandom } from './support.ts';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'trickle-keys-'));

async function run(args: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const code = await runKeysCommand(args, (s) => lines.push(s));
  return { code, out: lines.join('\n') };
}

async function failure(args: string[]): Promise<{ code: string; message: string }> {
  try {
    await runKeysCommand(args, () => {});
  } catch (e) {
    return e as { code: string; message: string };
  }
  throw new Error(`expected ${args.join(' ')} to fail`);
}

const kit = X25519.generateKeyPair(seededRandom('kit'));
const kit2 = X25519.generateKeyPair(seededRandom('kit2'));

describe('fingerprints', () => {
  it('are 5 groups of 4 Crockford base32 characters, stable, and parse leniently', () => {
    const fp = fingerprint(kit.publicKey);
    expect(fp).toMatch(/^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){4}$/);
    expect(fingerprint(kit.publicKey)).toBe(fp);
    expect(fingerprint(kit2.publicKey)).not.toBe(fp);
    expect(normalizeFingerprint(fp.toLowerCase().replace(/-/g, ' '))).toBe(fp);
    expect(normalizeFingerprint('ABCD')).toBeUndefined();
  });

  it('public keys are canonical base64 of 32 bytes', () => {
    expect(decodePublicKey(encodePublicKey(kit.publicKey))).toEqual(kit.publicKey);
    expect(() => decodePublicKey('abc')).toThrow(/44 characters of base64/);
  });
});

describe('trickle keys', () => {
  it('generate, show, refuse to overwrite without --force; key file 0600', async () => {
    const dir = tmp();
    const g = await run(['generate', '--state-dir', dir]);
    expect(g.code).toBe(0);
    expect(g.out).toMatch(/public key: {2}[A-Za-z0-9+/]{43}=/);
    const path = join(dir, 'identity.json');
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const kp = loadIdentity(dir);
    const s = await run(['show', '--state-dir', dir]);
    expect(s.out).toContain(encodePublicKey(kp.publicKey));
    expect(s.out).toContain(fingerprint(kp.publicKey));
    const again = await failure(['generate', '--state-dir', dir]);
    expect(again.code).toBe('ERR_CONFIG');
    expect(again.message).toContain('--force');
    expect((await run(['generate', '--state-dir', dir, '--force'])).code).toBe(0);
    expect(encodePublicKey(loadIdentity(dir).publicKey)).not.toBe(encodePublicKey(kp.publicKey));
  });

  it('clear errors: no key yet, damaged key file, unknown command, stray arguments', async () => {
    const dir = tmp();
    expect((await failure(['show', '--state-dir', dir])).message).toContain('trickle keys generate');
    writeFileSync(join(dir, 'identity.json'), JSON.stringify({ type: 'trickle-static-key-v1', curve: '25519', privateKey: encodePublicKey(kit.privateKey), publicKey: encodePublicKey(kit2.publicKey) }), { mode: 0o600 });
    expect((await failure(['show', '--state-dir', dir])).message).toContain('does not belong');
    expect((await failure(['frobnicate'])).code).toBe('ERR_USAGE');
    expect((await failure(['show', 'extra', '--state-dir', dir])).message).toContain('unexpected argument');
    expect((await failure(['show', '--bogus'])).code).toBe('ERR_USAGE');
    expect((await run([])).code).toBe(2);
  });

  it('add, list, revoke by name, key or fingerprint; file stays valid; comments kept', async () => {
    const dir = tmp();
    const k1 = encodePublicKey(kit.publicKey);
    const k2 = encodePublicKey(kit2.publicKey);
    expect((await run(['add', k1, 'kit-one', '--state-dir', dir])).out).toContain(fingerprint(kit.publicKey));
    await run(['add', k2, 'kit-two', '--state-dir', dir]);
    const path = join(dir, 'authorized_keys');
    expect(readFileSync(path, 'utf8')).toMatch(/^# Trickle gateway/);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect((await failure(['add', k1, 'other', '--state-dir', dir])).message).toContain('already authorized as "kit-one"');
    expect((await failure(['add', encodePublicKey(X25519.generateKeyPair(seededRandom('k3')).publicKey), 'kit-one', '--state-dir', dir])).message).toContain('already used');
    expect((await failure(['add', 'not-a-key', 'x', '--state-dir', dir])).message).toContain('base64');
    expect((await failure(['add', k1, 'bad name!', '--state-dir', dir])).message).toContain('1–64');
    expect((await failure(['add', k1, 'bad/name', '--state-dir', dir])).message).toContain('1–64');
    expect((await failure(['add', k1, '--state-dir', dir])).message).toContain('missing <name>');
    expect((await run(['list', '--state-dir', dir])).out).toContain('kit-two');

    const check = authorizedKeysChecker(dir);
    expect(check(kit.publicKey)).toBe('kit-one');
    expect(check(kit2.publicKey)).toBe('kit-two');
    await run(['revoke', 'kit-one', '--state-dir', dir]);
    expect(check(kit.publicKey)).toBeUndefined(); // follows the file without a restart
    await run(['add', k1, 'kit-one', '--state-dir', dir]);
    await run(['revoke', fingerprint(kit.publicKey).toLowerCase(), '--state-dir', dir]);
    await run(['revoke', k2, '--state-dir', dir]);
    expect(parseAuthorizedKeys(readFileSync(path, 'utf8'), path)).toEqual([]);
    expect((await failure(['revoke', 'nobody', '--state-dir', dir])).message).toContain('no authorized key matches');
  });

  it('authorized_keys errors name file and line; a broken file refuses everyone', () => {
    const dir = tmp();
    const path = join(dir, 'authorized_keys');
    writeFileSync(path, `# ok\n${encodePublicKey(kit.publicKey)} a\n${encodePublicKey(kit.publicKey)} b\n`);
    expect(() => parseAuthorizedKeys(readFileSync(path, 'utf8'), path)).toThrow(`${path}:3: key already listed on line 2`);
    const errors: Error[] = [];
    const check = authorizedKeysChecker(dir, (e) => errors.push(e));
    expect(check(kit.publicKey)).toBeUndefined();
    expect(errors[0]!.message).toContain(`${path}:3`);
    expect(() => parseAuthorizedKeys('onlyonefield\n', 'f')).toThrow('f:1: expected "<base64 public key> <name>"');
  });

  it('trust: by offered fingerprint, by full key; wrong fingerprint refused', async () => {
    const dir = tmp();
    savePinnedGatewayKey(dir, kit.publicKey);
    recordOfferedGatewayKey(dir, kit2.publicKey);
    const wrong = await failure(['trust', fingerprint(X25519.generateKeyPair(seededRandom('x')).publicKey), '--state-dir', dir]);
    expect(wrong.message).toContain('does not match the key the gateway offered');
    expect((await run(['trust', fingerprint(kit.publicKey), '--state-dir', dir])).out).toContain('already trusted');
    expect((await run(['trust', fingerprint(kit2.publicKey), '--state-dir', dir])).out).toContain('trusted gateway key');
    expect(loadPinnedGatewayKey(dir)).toEqual(kit2.publicKey);
    expect((await failure(['trust', fingerprint(kit.publicKey), '--state-dir', dir])).message).toContain('no gateway has offered');
    await run(['trust', encodePublicKey(kit.publicKey), '--state-dir', dir]);
    expect(loadPinnedGatewayKey(dir)).toEqual(kit.publicKey);
    expect((await failure(['trust', 'hello', '--state-dir', dir])).message).toContain('neither a fingerprint');
  });

  it('state dir default and session store', () => {
    expect(defaultStateDir({ TRICKLE_STATE_DIR: '/srv/t' })).toBe('/srv/t');
    expect(defaultStateDir({})).toMatch(/\.local\/state\/trickle$/);
    const dir = tmp();
    const s = sessionStore(dir, 'initiator');
    expect(s.restore).toBeUndefined();
    s.persist({ version: 1, role: 'initiator', mode: 'encrypt', localStatic: 'x', pinnedRemoteStatic: null, session: null, seenEphemerals: [] });
    expect(statSync(s.path).mode & 0o777).toBe(0o600);
    expect(sessionStore(dir, 'initiator').restore?.role).toBe('initiator');
    expect(s.path).toBe(join(dir, 'session-host.json'));
  });
});
