/**
 * sharedKitStores (cli/security.ts): a gateway on a shared channel keeps each kit address's
 * state in kits/<address>/ and resumes, at start, the addresses that hold a kit's state. A
 * stranger can make the gateway build a stack for any address (any frame will do) and make its
 * SecureLink persist the ephemeral of an XX1 it answered: neither may turn the address into a
 * known kit at the next start (SECURITY.md, attack 9).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../../src/log.ts';
import { sharedKitStores } from '../../../src/cli/security.ts';
import { SecureLink } from '../../../src/secure/secure-link.ts';
import { X25519 } from '../../../src/secure/dh.ts';
import { equalBytes } from '../../../src/util/bytes.ts';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { mulberry32 } from '../../helpers/prng.ts';

const seeded = (seed: number) => {
  const r = mulberry32(seed);
  return (n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
};

describe('sharedKitStores: what makes an address a known kit at the next start', () => {
  const dirs: string[] = [];
  afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });
  const stateDir = (): string => { const d = mkdtempSync(join(tmpdir(), 'trickle-kits-')); dirs.push(d); return d; };

  it('a stack made for a frame creates nothing on disk; a stranger\'s answered XX1 and empty directories are not a kit; a handshake or a CoAP session is', () => {
    const dir = stateDir();
    const { kitStores, knownAddresses } = sharedKitStores(dir, silentLogger());
    const clock = new FakeClock();
    const rnd = seeded(5);
    const gateway = X25519.generateKeyPair(rnd);
    const kit = X25519.generateKeyPair(rnd);
    const responder = (address: number, send: (f: Uint8Array) => void): SecureLink => {
      const stores = kitStores(address);
      return new SecureLink({
        role: 'responder', staticKeyPair: gateway, mode: 'encrypt', clock, randomBytes: rnd, handshakeRetryMs: 1000,
        isAuthorized: (rs) => (equalBytes(rs, kit.publicKey) ? 'kit' : undefined),
        send, deliver: () => {}, persist: stores.secure!.persist,
        ...(stores.secure!.restore ? { restore: stores.secure!.restore } : {}),
      });
    };

    // Made (as the peer table does for the first frame heard on an address): nothing on disk.
    kitStores(0x21);
    expect(existsSync(join(dir, 'kits'))).toBe(false);

    // A stranger's forged XX1 on 0x22: answered (XX2), and its ephemeral persisted for replay protection.
    const replies: Uint8Array[] = [];
    responder(0x22, (f) => replies.push(f)).receive(Uint8Array.of(0x80, ...rnd(32)));
    expect(replies.map((f) => f[0])).toEqual([0x81]);
    expect(readdirSync(join(dir, 'kits', '22'))).toEqual(['session-gateway.json']); // it did write (the test is not vacuous)
    // An empty directory, as the gateway once made for every address it heard.
    mkdirSync(join(dir, 'kits', '23'), { recursive: true, mode: 0o700 });
    expect(knownAddresses()).toEqual([]);

    // The genuine kit completes a handshake on 0x24: its session is on disk, the address is known.
    let toKit: (f: Uint8Array) => void = () => {};
    const r = responder(0x24, (f) => toKit(f));
    const k = new SecureLink({
      role: 'initiator', staticKeyPair: kit, remoteStaticPinned: gateway.publicKey, mode: 'encrypt', clock, randomBytes: rnd,
      handshakeRetryMs: 1000, send: (f) => r.receive(f), deliver: () => {},
    });
    toKit = (f) => k.receive(f);
    k.send(Uint8Array.of(1, 2, 3));
    expect(r.established).toBe(true);
    expect(knownAddresses()).toEqual([0x24]);

    // A CoAP session alone (written only for authenticated traffic) makes an address known too.
    kitStores(0x25).coapStateStore!.save({ version: 1, nextSequence: 7, compact: null });
    expect(knownAddresses()).toEqual([0x24, 0x25]);

    // The stranger's snapshot is still read when 0x22 is heard again (its replay cache survives).
    expect(kitStores(0x22).secure!.restore?.seenEphemerals.length).toBe(1);
  });
});
