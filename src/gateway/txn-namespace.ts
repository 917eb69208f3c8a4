/**
 * Homeserver transaction ids that outlive link sessions.
 *
 * The gateway names a carried send/redact/sendToDevice `t<namespace>.<S>`, S being the sequence
 * number the field kit's request token carries (matrix/session.ts). The kit's sequence numbers
 * go on across link sessions for the life of its state, and a client's retry of a transaction
 * reuses the first attempt's token, so as long as the namespace stays the same, a retry after a
 * new handshake gets the same txn id and the homeserver's own idempotency returns the first
 * event instead of posting a second one.
 *
 * The namespace is per kit (its static key; "anonymous" without security): a short tag of the
 * key plus an epoch, random when the gateway first meets the kit, and drawn anew when the kit's
 * numbering goes BACK — the first request of a link session arrives with a sequence number below
 * the highest this gateway has recorded for it (the kit lost its state, or runs from a restored
 * backup). Its numbers would then repeat ones already used, and the same txn id for a new
 * message would make the homeserver swallow it as a duplicate. A fresh kit starts its numbering
 * at a random point (radio-stack.ts), so it does not collide even before this check sees it.
 *
 * Persisted (`txn-gateway.json`): the epoch at once when it changes; the highest sequence at the
 * start of each link session and every 64 numbers (a kit that goes back by less than that within
 * one session of a gateway that crashed meanwhile is the residual case: see SECURITY.md).
 */
import { blake2s } from '@noble/hashes/blake2.js';
import type { StateStore } from '../net/radio-stack.ts';
import { utf8 } from '../util/bytes.ts';

interface KitRecord { epoch: string; highestSeq: number; persistedSeq: number }

export interface TxnNamespaceState {
  version: 1;
  /** [kit key (hex) or "anonymous", epoch, highest sequence seen]. */
  kits: [string, string, number][];
}

const EPOCH = /^[0-9a-z]{1,6}$/;
const MAX_KITS = 4096;

export class TxnNamespaces {
  private readonly kits = new Map<string, KitRecord>();
  private readonly store: StateStore<unknown> | undefined;
  private readonly random: (n: number) => Uint8Array;
  /** Epochs drawn because a kit's numbering went back (for the status page). */
  regressions = 0;

  constructor(opts: { store?: StateStore<unknown>; randomBytes: (n: number) => Uint8Array }) {
    this.store = opts.store;
    this.random = opts.randomBytes;
    let saved: unknown;
    try { saved = opts.store?.load(); } catch { saved = undefined; }
    const st = saved as Partial<TxnNamespaceState> | undefined;
    if (st?.version === 1 && Array.isArray(st.kits)) {
      for (const e of st.kits.slice(-MAX_KITS)) {
        if (!Array.isArray(e) || typeof e[0] !== 'string' || typeof e[1] !== 'string' || !EPOCH.test(e[1]) || !Number.isInteger(e[2])) continue;
        this.kits.set(e[0], { epoch: e[1], highestSeq: e[2], persistedSeq: e[2] });
      }
    }
  }

  /**
   * The namespace ([0-9a-z]{1,13}) for a request from `kit` (hex static key, or "anonymous").
   * `seq`: the highest sequence number decoded from the kit in this link session (undefined when
   * the codec does not carry it); `firstOfSession`: this is the link session's first request.
   */
  namespaceFor(kit: string, seq: number | undefined, firstOfSession: boolean): string {
    let r = this.kits.get(kit);
    if (r === undefined) {
      r = { epoch: this.newEpoch(), highestSeq: seq ?? 0, persistedSeq: -1 };
      this.kits.set(kit, r);
      while (this.kits.size > MAX_KITS) this.kits.delete(this.kits.keys().next().value!);
    } else if (seq !== undefined && firstOfSession && seq < r.highestSeq) {
      this.regressions++;
      r.epoch = this.newEpoch();
      r.highestSeq = seq;
      r.persistedSeq = -1;
    } else if (seq !== undefined && seq > r.highestSeq) {
      r.highestSeq = seq;
    }
    if (r.persistedSeq < 0 || firstOfSession || r.highestSeq - r.persistedSeq >= 64) this.persist(r);
    return `${kitTag(kit)}${r.epoch}`;
  }

  private persist(changed: KitRecord): void {
    changed.persistedSeq = changed.highestSeq;
    this.store?.save({ version: 1, kits: [...this.kits].map(([k, v]) => [k, v.epoch, v.highestSeq]) } satisfies TxnNamespaceState);
  }

  private newEpoch(): string {
    const b = this.random(4);
    const n = (((b[0] ?? 0) << 24) >>> 0) + ((b[1] ?? 0) << 16) + ((b[2] ?? 0) << 8) + (b[3] ?? 0);
    return (n % 36 ** 6).toString(36).padStart(6, '0');
  }
}

/** 7 base-36 characters of BLAKE2s(kit): distinct kits get distinct namespaces. */
function kitTag(kit: string): string {
  const h = blake2s(utf8.encode(`trickle txn namespace ${kit}`));
  const n = ((h[0]! << 24) >>> 0) + (h[1]! << 16) + (h[2]! << 8) + h[3]!;
  return (n % 36 ** 7).toString(36).padStart(7, '0');
}
