/**
 * Push sync, gateway side (issue 7): the field kit registers one CoAP observation of GET /7
 * (the MSC3079 /sync enum, RFC 7641 Observe); from then on the gateway itself holds the
 * homeserver's /sync long-poll with the session's access token and a low-bandwidth filter,
 * reduces each answer to what the field kit does not have yet (matrix/sync-delta.ts), and sends
 * it as a Confirmable notification. Nothing crosses the air while nothing happens.
 *
 * Delivery: one delta in flight at a time; what arrives meanwhile is merged into the reducer's
 * next pending delta. A delta goes as one notification when it fits one frame, else as a run of
 * single-frame PARTS (matrix/sync-parts.ts), one at a time: each CoAP ACK proves receipt (the
 * host persists before it ACKs), which a Block2 notification cannot. The delta is acknowledged to
 * the reducer when its last part is ACKed. A part whose retransmissions ran out stays at the head
 * and goes again (same Observe value) when the field kit is heard or after a backoff. The first
 * response to a registration is empty, for the same reason. The reducer's state and the
 * registration are persisted, so a gateway restart goes on pushing to the same token (a body cut
 * short by the restart is rebuilt and sent again from part 0).
 *
 * The long-poll's access token: the one the registration was made with (never whichever token
 * the session used last, which may be another account's on the same kit). In authenticate-only
 * mode (`boundAccessToken`) it is the token of the account bound to the kit at the gateway,
 * asked at every poll (so `keys unbind` stops it and `keys bind` changes it), and no token is
 * stored with the registration.
 */
import type { Logger } from '../log.ts';
import { toHex, fromHex, utf8 } from '../util/bytes.ts';
import type { RadioStack, StateStore } from '../coap/radio-stack.ts';
import type { CoapResponseInit } from '../coap/endpoint.ts';
import { SyncReducer, type SyncReducerOptions, type SyncReducerState } from '../matrix/sync-delta.ts';
import { deltaToWire } from '../matrix/sync-wire.ts';
import { splitIntoParts } from '../matrix/sync-parts.ts';
import { TRICKLE_OPT_HANDLE_BASE } from '../matrix/session-wire.ts';
import { decodeUint, getOption } from '../coap/message.ts';
import type { SyncDelta, SyncResponse } from '../matrix/sync-types.ts';
import type { GatewaySession } from '../matrix/session.ts';
import type { HomeserverClient } from './homeserver-client.ts';

export interface SyncPusherState {
  version: 1;
  reducer: SyncReducerState | null;
  /** The registration's token (hex) and last Observe value, or null. */
  registration: { token: string; sequence: number | null } | null;
  /**
   * The access token the registration was made with: the long-poll is always made with it, never
   * with whichever token the session used last (another account on the same kit). Absent in
   * state written before it existed: the session's token then.
   */
  accessToken?: string | null;
}

export interface SyncPusherOptions {
  radio: RadioStack;
  homeserver: HomeserverClient;
  session: () => GatewaySession;
  logger: Logger;
  store?: StateStore<unknown>;
  /** The homeserver long-poll, ms (default 30 s). */
  pollTimeoutMs?: number;
  /** Reducer options: which ephemeral data crosses the air (typing, receipts, presence: default off). */
  reducer?: Partial<SyncReducerOptions>;
  /** Authenticate-only mode: every long-poll uses the kit's bound account's token (undefined: none bound, the loop waits). */
  boundAccessToken?: () => string | undefined;
}

const BACKOFF_MIN_MS = 2_000;
const BACKOFF_MAX_MS = 60_000;

export class SyncPusher {
  private reducer: SyncReducer;
  private registration: Uint8Array | undefined;
  private accessToken: string | undefined;
  /**
   * The delta in flight, if any, as its parts and the index of the part the endpoint holds.
   * One at a time: whatever arrives meanwhile is merged into the reducer's pending delta and
   * goes once this one is delivered.
   */
  private inFlight: { seq: number; parts: CoapResponseInit[]; index: number; handleBase: number | undefined } | undefined;
  /** The registration's (empty) first response is not yet ACKed: nothing is pushed before it. */
  private awaitingFirst = false;
  private running = false;
  private abort: AbortController | undefined;
  private backoffMs = BACKOFF_MIN_MS;
  private retryMs = BACKOFF_MIN_MS;
  private readonly log: Logger;
  private counters = { polls: 0, deltas: 0, notifications: 0, parts: 0, delivered: 0, failures: 0 };

  constructor(private readonly o: SyncPusherOptions) {
    this.log = o.logger.child({ component: 'sync-pusher' });
    this.reducer = new SyncReducer(o.reducer ?? {});
    const saved = o.radio.resumed ? (o.store?.load() as SyncPusherState | undefined) : undefined;
    if (saved?.version === 1) {
      try {
        if (saved.reducer) this.reducer = new SyncReducer(o.reducer ?? {}, saved.reducer);
        if (saved.registration) {
          this.registration = fromHex(saved.registration.token);
          this.accessToken = o.boundAccessToken ? undefined : saved.accessToken ?? undefined;
          o.radio.endpoint.importObservations([saved.registration]);
        }
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'push-sync state unreadable; waiting for a new registration');
        this.reducer = new SyncReducer(o.reducer ?? {});
        this.registration = undefined;
      }
    }
    this.attach();
    o.radio.onSessionReset(() => this.reset());
    if (this.registration) {
      this.startLoop();
      this.pushPending(); // what was pending before the restart goes at once
    }
  }

  /** The field kit asked to observe /sync: accept, answer with what is pending (or nothing yet). */
  register(token: Uint8Array, accessToken?: string): CoapResponseInit & { observe: true } {
    const fresh = this.registration === undefined || toHex(this.registration) !== toHex(token);
    this.registration = token.slice();
    this.accessToken = this.o.boundAccessToken ? undefined : accessToken;
    this.inFlight = undefined;
    this.awaitingFirst = true;
    // A new registration may come from a host that refused a push it could not decode (handles it
    // lost): pushes spell strings out again until the host confirms their new handles.
    if (fresh) this.o.session().unconfirmAll();
    this.persist();
    this.log.info({ token: toHex(token), fresh }, 'field kit observes /sync: the gateway holds the long-poll now');
    this.startLoop();
    // Empty: what is pending follows as notifications, each ACKed (see the header).
    return { ...this.encode(undefined), observe: true };
  }

  status(): Record<string, unknown> {
    return {
      registered: this.registration !== undefined,
      since: this.reducer.since ?? null,
      initialSync: this.reducer.initialSyncProgress(),
      ...this.counters,
    };
  }

  close(): void {
    this.running = false;
    this.abort?.abort();
  }

  private attach(): void {
    const ep = this.o.radio.endpoint;
    ep.onNotificationDelivered((token) => {
      if (!this.registration || toHex(token) !== toHex(this.registration)) return;
      if (this.awaitingFirst) {
        this.awaitingFirst = false;
        this.pushPending();
        return;
      }
      const f = this.inFlight;
      if (!f) return;
      if (f.index + 1 < f.parts.length) {
        f.index++;
        if (!ep.notify(this.registration, f.parts[f.index]!)) this.inFlight = undefined;
        else this.counters.parts++;
        return;
      }
      this.inFlight = undefined;
      this.counters.delivered++;
      if (f.handleBase !== undefined) this.o.session().confirmDelivered(f.handleBase);
      this.reducer.acknowledge(f.seq);
      this.persist();
      this.pushPending();
    });
    // A notification that exhausted its retransmissions stays held by the endpoint; it goes again
    // when the field kit is next heard, or here after a backoff, so a quiet kit still gets it.
    ep.onNotificationFailed((token) => {
      this.counters.failures++;
      const delay = Math.min(this.retryMs, BACKOFF_MAX_MS);
      this.retryMs = Math.min(this.retryMs * 2, BACKOFF_MAX_MS);
      const t = setTimeout(() => { if (this.o.radio.endpoint === ep) ep.retryNotifications(token); }, delay);
      t.unref?.();
    });
    ep.onNotificationDelivered(() => { this.retryMs = BACKOFF_MIN_MS; });
    ep.onObservationEnded((token) => {
      if (this.registration && toHex(token) === toHex(this.registration)) {
        this.log.info('the field kit ended its observation of /sync');
        this.registration = undefined;
        this.persist();
      }
    });
  }

  /** A new link session: the old registration and its reducer are gone with it. */
  private reset(): void {
    this.registration = undefined;
    this.accessToken = undefined;
    this.inFlight = undefined;
    this.awaitingFirst = false;
    this.reducer = new SyncReducer(this.o.reducer ?? {});
    this.abort?.abort();
    this.persist();
    this.attach();
  }

  private encode(delta: SyncDelta | undefined): CoapResponseInit {
    // A single-fragment delta follows what the host holds: its timestamps may be relative to the
    // room's last acknowledged event (sync-wire.ts); a merged re-send carries them whole.
    const single = delta !== undefined && this.reducer.unacknowledged === 1;
    const body = utf8.encode(JSON.stringify(delta ? deltaToWire(delta, { baseTs: (r) => (single ? this.reducer.ackedLastTs(r) : undefined) }) : {}));
    return this.o.session().encodeResponse({ status: 200, contentType: 'application/json', body });
  }

  private pushPending(): void {
    if (!this.registration || this.inFlight !== undefined || this.awaitingFirst) return;
    const delta = this.reducer.pendingDelta() ?? this.reducer.nextDelta();
    if (!delta) return;
    const ep = this.o.radio.endpoint;
    const token = this.registration;
    const res = this.encode(delta);
    let parts: CoapResponseInit[];
    try {
      parts = splitIntoParts({ code: res.code, options: res.options ?? [], payload: res.payload ?? new Uint8Array(0) },
        (options) => ep.notificationPayloadLimit(token, res.code, options));
    } catch (e) {
      this.log.error({ err: (e as Error).message, seq: delta.seq }, 'push-sync delta cannot be sent; it stays pending');
      return;
    }
    if (!ep.notify(token, parts[0]!)) return;
    const base = getOption(res.options ?? [], TRICKLE_OPT_HANDLE_BASE);
    this.inFlight = { seq: delta.seq, parts, index: 0, handleBase: base === undefined ? undefined : decodeUint(base) };
    this.counters.notifications++;
    this.counters.parts++;
  }

  private persist(): void {
    const reg = this.registration ? this.o.radio.endpoint.exportObservations().find((r) => r.token === toHex(this.registration!)) : undefined;
    this.o.store?.save({
      version: 1,
      reducer: this.reducer.exportState(),
      registration: this.registration ? { token: toHex(this.registration), sequence: reg?.sequence ?? null } : null,
      accessToken: this.accessToken ?? null,
    } satisfies SyncPusherState);
  }

  private startLoop(): void {
    if (this.running) return;
    this.running = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    while (this.running && this.registration) {
      const token = this.o.boundAccessToken ? this.o.boundAccessToken() : this.accessToken ?? this.o.session().sessionAccessToken;
      if (!token) {
        this.log.debug(this.o.boundAccessToken ? 'push sync waits for a Matrix account bound to the field kit' : 'push sync waits for the session access token');
        await sleep(BACKOFF_MIN_MS);
        continue;
      }
      this.abort = new AbortController();
      const since = this.reducer.since;
      const query = `timeout=${this.o.pollTimeoutMs ?? 30_000}&filter=${encodeURIComponent(JSON.stringify(this.reducer.filter()))}${since ? `&since=${encodeURIComponent(since)}` : ''}`;
      this.counters.polls++;
      const res = await this.o.homeserver.perform({ method: 'GET', path: '/_matrix/client/v3/sync', query, accessToken: token, body: new Uint8Array(0) }, this.abort.signal);
      if (!this.running) break;
      if (res.status !== 200) {
        this.log.warn({ status: res.status, waitMs: this.backoffMs }, 'homeserver /sync failed; retrying later (nothing goes on air meanwhile)');
        await sleep(this.backoffMs);
        this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
        continue;
      }
      this.backoffMs = BACKOFF_MIN_MS;
      let json: SyncResponse;
      try { json = JSON.parse(utf8.decode(res.body)) as SyncResponse; } catch { continue; }
      const delta = this.reducer.ingest(json);
      this.persist(); // before the next poll: the homeserver drops to-device messages once the new since is used
      if (delta) {
        this.counters.deltas++;
        this.pushPending();
      }
    }
    this.running = false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => { const t = setTimeout(r, ms); t.unref?.(); });
}
