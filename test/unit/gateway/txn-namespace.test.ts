import { describe, expect, it } from 'vitest';
import { TxnNamespaces } from '../../../src/gateway/txn-namespace.ts';
import { seededRandom } from '../secure/support.ts';

function memoryStore() {
  let value: unknown;
  let saves = 0;
  return { load: () => value, save: (v: unknown) => { value = JSON.parse(JSON.stringify(v)); saves++; }, saves: () => saves };
}

describe('homeserver txn namespaces that outlive link sessions', () => {
  it('stays the same for a kit across link sessions and gateway restarts; differs between kits', () => {
    const store = memoryStore();
    let ns = new TxnNamespaces({ store, randomBytes: seededRandom('a') });
    const a1 = ns.namespaceFor('aa'.repeat(32), 1000, true);
    expect(a1).toMatch(/^[0-9a-z]{13}$/);
    expect(ns.namespaceFor('aa'.repeat(32), 1001, false)).toBe(a1);
    const b1 = ns.namespaceFor('bb'.repeat(32), 5, true);
    expect(b1).not.toBe(a1);
    ns = new TxnNamespaces({ store, randomBytes: seededRandom('b') }); // restart: loaded, not redrawn
    expect(ns.namespaceFor('aa'.repeat(32), 1002, true)).toBe(a1);
    expect(ns.namespaceFor('bb'.repeat(32), 6, true)).toBe(b1);
    expect(ns.regressions).toBe(0);
  });

  it('draws a new epoch when a kit\'s numbering goes back at a new link session (lost or restored state)', () => {
    const store = memoryStore();
    const ns = new TxnNamespaces({ store, randomBytes: seededRandom('c') });
    const kit = 'cc'.repeat(32);
    const first = ns.namespaceFor(kit, 500_000, true);
    for (let s = 500_001; s < 500_300; s++) ns.namespaceFor(kit, s, false);
    // Within a session an older number (a retry's) changes nothing.
    expect(ns.namespaceFor(kit, 500_100, false)).toBe(first);
    const afterReset = ns.namespaceFor(kit, 17, true);
    expect(afterReset).not.toBe(first);
    expect(afterReset.slice(0, 7)).toBe(first.slice(0, 7)); // the same kit tag
    expect(ns.regressions).toBe(1);
    // Going on from there is the new normal.
    expect(ns.namespaceFor(kit, 18, true)).toBe(afterReset);
    expect(new TxnNamespaces({ store, randomBytes: seededRandom('d') }).namespaceFor(kit, 19, true)).toBe(afterReset);
  });

  it('persists the high-water mark at each session start and every 64 numbers, not on every request', () => {
    const store = memoryStore();
    const ns = new TxnNamespaces({ store, randomBytes: seededRandom('e') });
    for (let s = 1; s <= 640; s++) ns.namespaceFor('anonymous', s, s === 1);
    expect(store.saves()).toBeLessThanOrEqual(11);
    expect(store.saves()).toBeGreaterThanOrEqual(10);
  });
});
