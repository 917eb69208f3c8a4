/**
 * Push sync, gateway side (issue 7; one registration per account, issue 12). The field kit
 * registers a CoAP observation of GET /7 (the MSC3079 /sync enum, RFC 7641 Observe) for each
 * Matrix account that syncs on it; for each, the gateway holds the homeserver's /sync long-poll
 * with that account's access token and a low-bandwidth filter, reduces each answer to what the
 * kit's store for that account does not have yet (matrix/sync-delta.ts), and sends it as a
 * Confirmable notification with the registration's token. Nothing crosses the air while nothing
 * happens.
 *
 * REGISTRATIONS (this object serves one link session with one field kit)
 *  - Keyed by the observation token. Each has its own access token (the one its registration
 *    carried, never whichever token the session used last: that may be another account's), its
 *    own long-poll, reducer, in-flight delta, backoffs and persisted position. One account's
 *    registration never waits for, nor sends, another's data.
 *  - Its ACCOUNT: the user id the homeserver names for its token (GET /account/whoami, asked
 *    once before its first long-poll; never on air), or at once that of a registration made with
 *    the same access token. A new registration of an account REPLACES that account's older one:
 *    it takes over the older one's reducer (the kit's store for the account is the same store,
 *    so the delta stream goes on where it was) and the older observation is removed. Of two
 *    registrations of one account the newer (by arrival) always wins.
 *  - At most `maxRegistrations` (default 16, as the host's account bound) at once; one more is
 *    answered 4.29 M_LIMIT_EXCEEDED naming the limit (not registered).
 *  - A registration that ends otherwise than by the kit's deregistration (the kit refused a
 *    notification, RST; or the final answer below) leaves its reducer PARKED for its account's
 *    next registration (the kit still has the store it fed). One refused before any delta of it
 *    reached the kit is discarded instead: the kit's store may not follow that stream. A new
 *    link session (a new handshake, or a restart that could not resume the old one) parks every
 *    registration's reducer too: the kit keeps its stores across it, so nothing the homeserver
 *    sent meanwhile falls into the gap a fresh initial sync would leave.
 *  - DELTA STREAMS: each reducer has a random stream id; the first delta of a registration
 *    carries it and the seq it builds on (SyncDelta.stream, base: the last one acknowledged), so
 *    the kit can tell a stream its store follows, a new one from scratch (its store starts over),
 *    and one built on deltas it never had (refused; see above). A kit that drops an account's
 *    store and makes a new one thus never gets the middle of an old stream.
 *  - A long-poll answered 401 M_UNKNOWN_TOKEN (the token was logged out or expired elsewhere)
 *    ends the registration with that answer as a final notification (RFC 7641 §3.2: a
 *    notification without Observe), so the kit learns the token is gone and registers again when
 *    one of the account's clients syncs with a good one.
 *  - A deregistration (RFC 7641 §3.6, GET with Observe = 1) is removed by the endpoint before
 *    the request handler sees it; gateway.ts then performs the GET like any request (a whole
 *    /sync over the air), so the kit never sends one (host/push-sync.ts).
 *  - Authenticate-only mode (`boundAccessToken`): every registration runs as the account bound
 *    to the kit at the gateway, asked at every poll (so `keys unbind` stops it and `keys bind`
 *    changes it); there is ONE account per kit in that mode, so each new registration replaces
 *    the previous one, and no token is stored with a registration. A 401 there is waited out.
 *
 * Delivery (per registration): one delta in flight at a time; what arrives meanwhile is merged
 * into the reducer's next pending delta. A delta goes as one notification when it fits one
 * frame, else as a run of single-frame PARTS (matrix/sync-parts.ts), one at a time: each CoAP
 * ACK proves receipt (the host persists before it ACKs), which a Block2 notification cannot. The
 * delta is acknowledged to the reducer when its last part is ACKed. A part whose retransmissions
 * ran out stays at the head and goes again (same Observe value) when the field kit is heard or
 * after a backoff. The first response to a registration is empty, for the same reason. Every
 * registration (token, account, access token, reducer) is persisted, so a gateway restart goes
 * on pushing to the same tokens (a body cut short by the restart is rebuilt and sent again from
 * part 0). State written before issue 12 (one registration, version 1) is read as one
 * registration whose account is found at its first poll.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.ts';
import { toHex, fromHex, utf8 } from '../util/bytes.ts';
import type { RadioStack, StateStore } from '../net/radio-stack.ts';
import type { CoapResponseInit } from '../coap/endpoint.ts';
import { SyncReducer, type SyncReducerOptions, type SyncReducerState } from '../matrix/sync-delta.ts';
import { deltaToWire } from '../matrix/sync-wire.ts';
import { splitIntoParts } from '../matrix/sync-parts.ts';
import { TRICKLE_OPT_HANDLE_BASE } from '../matrix/session-wire.ts';
import { decodeUint, getOption } from '../coap/message.ts';
import type { SyncDelta, SyncResponse } from '../matrix/sync-types.ts';
import type { GatewaySession } from '../matrix/session.ts';
import { matrixError, type HttpResponseLike } from '../matrix/http.ts';
import type { HomeserverClient } from './homeserver-client.ts';

/** One registration as persisted. */
export interface SyncRegistrationState {
  /** The observation's token (hex) and last Observe value. */
  token: string;
  sequence: number | null;
  /** The access token the registration was made with (null in authenticate-only mode). */
  accessToken: string | null;
  /** Its account (the homeserver's user id for the token, or "(bound)"), or null before it is known. */
  account: string | null;
  reducer: SyncReducerState;
  /** The reducer's delta stream id (SyncDelta.stream). */
  stream: string;
}

export interface SyncPusherState {
  version: 2;
  registrations: SyncRegistrationState[];
  /** Reducers of accounts whose registration ended without a goodbye, for their next one. */
  parked: { account: string; reducer: SyncReducerState; stream: string }[];
}

/** What version 1 (one registration per kit, before issue 12) wrote. */
interface SyncPusherStateV1 {
  version: 1;
  reducer: SyncReducerState | null;
  registration: { token: string; sequence: number | null } | null;
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
  /** Registrations (accounts) held at once for the kit (default 16). */
  maxRegistrations?: number;
}

export const DEFAULT_MAX_SYNC_REGISTRATIONS = 16;
const BACKOFF_MIN_MS = 2_000;
const BACKOFF_MAX_MS = 60_000;
const WHOAMI_PATH = '/_matrix/client/v3/account/whoami';
/** The account of every registration in authenticate-only mode (one account per kit; never a user id, which starts with "@"). */
const BOUND = '(bound)';

interface Registration {
  readonly token: Uint8Array;
  readonly key: string;
  accessToken: string | undefined;
  /** The account: a user id, BOUND, or undefined until known. */
  account: string | undefined;
  /** Arrival order: of two registrations of one account the higher wins. */
  order: number;
  reducer: SyncReducer;
  /** The reducer's delta stream id: moves with the reducer. */
  stream: string;
  /**
   * A delta carrying the stream id and its base (the first of this registration) reached the
   * kit: the kit's store follows this stream. Until then every delta carries them.
   */
  announced: boolean;
  /**
   * The delta in flight, if any, as its parts and the index of the part the endpoint holds.
   * One at a time: whatever arrives meanwhile is merged into the reducer's pending delta and
   * goes once this one is delivered.
   */
  inFlight: { seq: number; parts: CoapResponseInit[]; index: number; handleBase: number | undefined; announces: boolean } | undefined;
  /** The registration's (empty) first response is not yet ACKed: nothing is pushed before it. */
  awaitingFirst: boolean;
  running: boolean;
  ended: boolean;
  abort: AbortController | undefined;
  backoffMs: number;
  retryMs: number;
  polls: number;
}

export class SyncPusher {
  private readonly regs = new Map<string, Registration>();
  /**
   * Account → the reducer of its registration that ended other than by the kit's deregistration
   * (refused, our final answer): the kit still has the store it fed, so the account's next
   * registration goes on with it. A deregistration (the kit dropped the account) discards it.
   */
  private readonly parked = new Map<string, { reducer: SyncReducer; stream: string }>();
  private order = 0;
  private readonly maxRegistrations: number;
  private readonly log: Logger;
  private counters = { polls: 0, deltas: 0, notifications: 0, parts: 0, delivered: 0, failures: 0, replaced: 0, refusedOverLimit: 0, endedUnknownToken: 0 };

  constructor(private readonly o: SyncPusherOptions) {
    this.log = o.logger.child({ component: 'sync-pusher' });
    this.maxRegistrations = o.maxRegistrations ?? DEFAULT_MAX_SYNC_REGISTRATIONS;
    const saved = o.store?.load() as SyncPusherState | SyncPusherStateV1 | undefined;
    try {
      const read = readSaved(saved);
      let registrations = read.registrations;
      const parked = [...read.parked];
      // The registrations live on only with their link session; their reducers (the kit's stores
      // for the accounts) outlive it: parked, the accounts' next registrations go on with them.
      if (!o.radio.resumed) {
        for (const r of registrations) {
          const account = o.boundAccessToken ? BOUND : r.account;
          if (account && r.reducer.since !== undefined && typeof r.stream === 'string') parked.push({ account, reducer: r.reducer, stream: r.stream });
        }
        registrations = [];
      }
      for (const r of registrations) {
        const reg = this.newRegistration(fromHex(r.token), o.boundAccessToken ? undefined : r.accessToken ?? undefined);
        reg.account = o.boundAccessToken ? BOUND : r.account ?? undefined;
        reg.reducer = new SyncReducer(o.reducer ?? {}, r.reducer);
        if (typeof r.stream === 'string') reg.stream = r.stream;
        o.radio.endpoint.importObservations([{ token: r.token, sequence: r.sequence }]);
        this.regs.set(reg.key, reg);
      }
      for (const p of parked) this.parked.set(p.account, { reducer: new SyncReducer(o.reducer ?? {}, p.reducer), stream: p.stream });
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'push-sync state unreadable; waiting for new registrations');
      for (const reg of this.regs.values()) o.radio.endpoint.removeObservation(reg.token);
      this.regs.clear();
      this.parked.clear();
    }
    this.attach();
    o.radio.onSessionReset(() => this.reset());
    for (const reg of this.regs.values()) {
      this.startLoop(reg);
      this.pushPending(reg); // what was pending before the restart goes at once
    }
  }

  /**
   * The field kit asked to observe /sync with `token`, as the account whose `accessToken` the
   * request carried (ignored in authenticate-only mode): accept, answering with nothing yet
   * (`observe: true`), or refuse over the limit (an error answer, no `observe`).
   */
  register(token: Uint8Array, accessToken?: string): CoapResponseInit {
    const key = toHex(token);
    let reg = this.regs.get(key);
    const fresh = reg === undefined;
    const bound = this.o.boundAccessToken !== undefined;
    if (!reg) {
      const twin = bound || [...this.regs.values()].some((r) => accessToken !== undefined && r.accessToken === accessToken);
      if (this.regs.size >= this.maxRegistrations && !twin) {
        this.counters.refusedOverLimit++;
        this.log.warn({ token: key, limit: this.maxRegistrations }, 'push-sync registration refused: too many accounts on this field kit');
        return this.o.session().encodeResponse(matrixError(429, 'M_LIMIT_EXCEEDED',
          `trickle gateway: push sync serves at most ${this.maxRegistrations} accounts per field kit (SyncPusherOptions.maxRegistrations); log an account out on the kit`,
          { retry_after_ms: BACKOFF_MAX_MS }));
      }
      reg = this.newRegistration(token, undefined);
      this.regs.set(key, reg);
    }
    reg.accessToken = bound ? undefined : accessToken;
    reg.order = ++this.order;
    reg.inFlight = undefined;
    reg.awaitingFirst = true;
    reg.announced = false;
    if (bound) reg.account = BOUND;
    else if (fresh) reg.account = [...this.regs.values()].find((r) => r !== reg && r.accessToken === accessToken)?.account;
    this.supersede(reg);
    // A new registration may come from a host that refused a push it could not decode (handles it
    // lost): pushes spell strings out again until the host confirms their new handles.
    if (fresh) this.o.session().unconfirmAll();
    this.persist();
    this.log.info({ token: key, fresh, registrations: this.regs.size }, 'field kit observes /sync: the gateway holds the long-poll now');
    this.startLoop(reg);
    // Empty: what is pending follows as notifications, each ACKed (see the header).
    return { ...this.encode(reg, undefined), observe: true };
  }

  status(): Record<string, unknown> {
    const regs = [...this.regs.values()].sort((a, b) => b.order - a.order);
    const newest = regs[0];
    return {
      registered: regs.length > 0,
      registrations: regs.length,
      maxRegistrations: this.maxRegistrations,
      since: newest?.reducer.since ?? null,
      initialSync: newest?.reducer.initialSyncProgress() ?? null,
      accounts: regs.map((r) => ({
        token: r.key, user: r.account ?? null, since: r.reducer.since ?? null,
        initialSync: r.reducer.initialSyncProgress(), inFlight: r.inFlight !== undefined, polls: r.polls,
      })),
      parked: this.parked.size,
      ...this.counters,
    };
  }

  close(): void {
    for (const reg of this.regs.values()) this.stop(reg);
  }

  private newRegistration(token: Uint8Array, accessToken: string | undefined): Registration {
    return {
      token: token.slice(), key: toHex(token), accessToken, account: undefined, order: ++this.order,
      reducer: new SyncReducer(this.o.reducer ?? {}), stream: newStreamId(), announced: false, inFlight: undefined, awaitingFirst: false,
      running: false, ended: false, abort: undefined, backoffMs: BACKOFF_MIN_MS, retryMs: BACKOFF_MIN_MS, polls: 0,
    };
  }

  /** Same account: the same user id (or the bound account), or the same access token. */
  private static sameAccount(a: Registration, b: Registration): boolean {
    return (a.account !== undefined && a.account === b.account) || (a.accessToken !== undefined && a.accessToken === b.accessToken);
  }

  /**
   * Of `reg`'s account's registrations only the newest stays. A winner that has not polled yet
   * takes over the reducer of the newest older one that has (else the one parked for the
   * account): the kit's store for the account goes on where it was.
   */
  private supersede(reg: Registration): void {
    const same = [...this.regs.values()].filter((r) => r === reg || SyncPusher.sameAccount(r, reg)).sort((a, b) => b.order - a.order);
    const winner = same[0]!;
    const losers = same.slice(1);
    const fromLoser = losers.find((r) => r.reducer.since !== undefined);
    for (const old of losers) {
      this.counters.replaced++;
      this.log.info({ token: old.key, by: winner.key }, 'a newer push-sync registration of the same account replaces this one');
      this.drop(old);
    }
    if (winner.account === undefined) winner.account = losers.find((r) => r.account !== undefined)?.account;
    const parked = winner.account !== undefined ? this.parked.get(winner.account) : undefined;
    if (winner.account !== undefined) this.parked.delete(winner.account);
    const inherited = fromLoser ?? parked;
    if (inherited && winner.reducer.since === undefined && winner.reducer.seq === 0) {
      winner.reducer = inherited.reducer;
      winner.stream = inherited.stream;
      winner.inFlight = undefined;
      winner.announced = false;
    }
  }

  private stop(reg: Registration): void {
    reg.ended = true;
    reg.running = false;
    reg.abort?.abort();
  }

  /** Forget a registration here and at the endpoint (no message to the kit). */
  private drop(reg: Registration): void {
    this.stop(reg);
    if (this.regs.get(reg.key) === reg) this.regs.delete(reg.key);
    this.o.radio.endpoint.removeObservation(reg.token);
  }

  private attach(): void {
    const ep = this.o.radio.endpoint;
    ep.onNotificationDelivered((token) => {
      const reg = this.regs.get(toHex(token));
      if (!reg || reg.ended) return;
      reg.retryMs = BACKOFF_MIN_MS;
      if (reg.awaitingFirst) {
        reg.awaitingFirst = false;
        this.pushPending(reg);
        return;
      }
      const f = reg.inFlight;
      if (!f) return;
      if (f.index + 1 < f.parts.length) {
        f.index++;
        if (!ep.notify(reg.token, f.parts[f.index]!)) reg.inFlight = undefined;
        else this.counters.parts++;
        return;
      }
      reg.inFlight = undefined;
      this.counters.delivered++;
      if (f.announces) reg.announced = true;
      if (f.handleBase !== undefined) this.o.session().confirmDelivered(f.handleBase);
      reg.reducer.acknowledge(f.seq);
      this.persist();
      this.pushPending(reg);
    });
    // A notification that exhausted its retransmissions stays held by the endpoint; it goes again
    // when the field kit is next heard, or here after a backoff, so a quiet kit still gets it.
    ep.onNotificationFailed((token) => {
      const reg = this.regs.get(toHex(token));
      if (!reg) return;
      this.counters.failures++;
      const delay = Math.min(reg.retryMs, BACKOFF_MAX_MS);
      reg.retryMs = Math.min(reg.retryMs * 2, BACKOFF_MAX_MS);
      const t = setTimeout(() => { if (this.o.radio.endpoint === ep && !reg.ended) ep.retryNotifications(token); }, delay);
      t.unref?.();
    });
    ep.onObservationEnded((token, reason) => {
      const reg = this.regs.get(toHex(token));
      if (!reg) return;
      this.log.info({ token: reg.key, reason }, 'a push-sync observation of /sync ended');
      this.stop(reg);
      this.regs.delete(reg.key);
      // Refused (RST) before any delta of this registration arrived: the kit's store may not follow
      // this stream (a new store for the account): the next registration starts a new one.
      if (reason === 'deregistered' || (reason === 'reset' && !reg.announced)) { if (reg.account !== undefined) this.parked.delete(reg.account); } else this.park(reg);
      this.persist();
    });
  }

  /** Keep an ended registration's reducer for its account's next registration (bounded). */
  private park(reg: Registration): void {
    if (reg.account === undefined || reg.reducer.since === undefined) return;
    this.parked.delete(reg.account);
    this.parked.set(reg.account, { reducer: reg.reducer, stream: reg.stream });
    while (this.parked.size > this.maxRegistrations) this.parked.delete(this.parked.keys().next().value!);
  }

  /**
   * A new link session: the old registrations are gone with it, not their reducers. The kit keeps
   * its stores across the new handshake, so each account's next registration goes on with its
   * reducer and delta stream (nothing the homeserver sent meanwhile falls into a gap); a kit that
   * lost its store refuses the stream, and the next registration starts a new one.
   */
  private reset(): void {
    for (const reg of this.regs.values()) {
      this.stop(reg);
      this.park(reg);
    }
    this.regs.clear();
    this.persist();
    this.attach();
  }

  private encode(reg: Registration, delta: SyncDelta | undefined): CoapResponseInit {
    // A single-fragment delta follows what the host holds: its timestamps may be relative to the
    // room's last acknowledged event (sync-wire.ts); a merged re-send carries them whole.
    const single = delta !== undefined && reg.reducer.unacknowledged === 1;
    const announced = delta && !reg.announced ? { ...delta, stream: reg.stream, base: reg.reducer.acked } : delta;
    const body = utf8.encode(JSON.stringify(announced ? deltaToWire(announced, { baseTs: (r) => (single ? reg.reducer.ackedLastTs(r) : undefined) }) : {}));
    return this.o.session().encodeResponse({ status: 200, contentType: 'application/json', body });
  }

  private pushPending(reg: Registration): void {
    if (reg.ended || this.regs.get(reg.key) !== reg || reg.inFlight !== undefined || reg.awaitingFirst) return;
    const delta = reg.reducer.pendingDelta() ?? reg.reducer.nextDelta();
    if (!delta) return;
    const ep = this.o.radio.endpoint;
    const res = this.encode(reg, delta);
    let parts: CoapResponseInit[];
    try {
      parts = splitIntoParts({ code: res.code, options: res.options ?? [], payload: res.payload ?? new Uint8Array(0) },
        (options) => ep.notificationPayloadLimit(reg.token, res.code, options));
    } catch (e) {
      this.log.error({ err: (e as Error).message, seq: delta.seq, token: reg.key }, 'push-sync delta cannot be sent; it stays pending');
      return;
    }
    if (!ep.notify(reg.token, parts[0]!)) return;
    const base = getOption(res.options ?? [], TRICKLE_OPT_HANDLE_BASE);
    reg.inFlight = { seq: delta.seq, parts, index: 0, handleBase: base === undefined ? undefined : decodeUint(base), announces: !reg.announced };
    this.counters.notifications++;
    this.counters.parts++;
  }

  private persist(): void {
    const seqs = new Map(this.o.radio.endpoint.exportObservations().map((r) => [r.token, r.sequence]));
    this.o.store?.save({
      version: 2,
      registrations: [...this.regs.values()].map((r) => ({
        token: r.key, sequence: seqs.get(r.key) ?? null, accessToken: r.accessToken ?? null,
        account: r.account ?? null, reducer: r.reducer.exportState(), stream: r.stream,
      })),
      parked: [...this.parked].map(([account, p]) => ({ account, reducer: p.reducer.exportState(), stream: p.stream })),
    } satisfies SyncPusherState);
  }

  private startLoop(reg: Registration): void {
    if (reg.running || reg.ended) return;
    reg.running = true;
    void this.loop(reg);
  }

  private alive(reg: Registration): boolean {
    return reg.running && !reg.ended && this.regs.get(reg.key) === reg;
  }

  /** The access token `reg`'s homeserver requests are made with, if any. */
  private tokenFor(reg: Registration): string | undefined {
    return this.o.boundAccessToken ? this.o.boundAccessToken() : reg.accessToken ?? this.o.session().sessionAccessToken;
  }

  private async backoff(reg: Registration, what: string, res: HttpResponseLike): Promise<void> {
    this.log.warn({ status: res.status, waitMs: reg.backoffMs, token: reg.key }, `homeserver ${what} failed; retrying later (nothing goes on air meanwhile)`);
    await sleep(reg.backoffMs);
    reg.backoffMs = Math.min(reg.backoffMs * 2, BACKOFF_MAX_MS);
  }

  private async loop(reg: Registration): Promise<void> {
    while (this.alive(reg)) {
      const token = this.tokenFor(reg);
      if (!token) {
        this.log.debug(this.o.boundAccessToken ? 'push sync waits for a Matrix account bound to the field kit' : 'push sync waits for the session access token');
        await sleep(BACKOFF_MIN_MS);
        continue;
      }
      reg.abort = new AbortController();
      if (reg.account === undefined) {
        // Whose registration is this? Known before its first poll, so a replaced registration's
        // reducer (the kit's store for the account) is taken over rather than started afresh.
        const res = await this.o.homeserver.perform({ method: 'GET', path: WHOAMI_PATH, query: '', accessToken: token, body: new Uint8Array(0) }, reg.abort.signal);
        if (!this.alive(reg)) break;
        if (isUnknownToken(res)) { this.endUnknownToken(reg, res); break; }
        const userId = res.status === 200 ? parseUserId(res) : undefined;
        if (userId === undefined) { await this.backoff(reg, 'whoami', res); continue; }
        reg.backoffMs = BACKOFF_MIN_MS;
        reg.account = userId;
        this.supersede(reg);
        this.persist();
        if (!this.alive(reg)) break;
        this.pushPending(reg);
      }
      const since = reg.reducer.since;
      const query = `timeout=${this.o.pollTimeoutMs ?? 30_000}&filter=${encodeURIComponent(JSON.stringify(reg.reducer.filter()))}${since ? `&since=${encodeURIComponent(since)}` : ''}`;
      this.counters.polls++;
      reg.polls++;
      const res = await this.o.homeserver.perform({ method: 'GET', path: '/_matrix/client/v3/sync', query, accessToken: token, body: new Uint8Array(0) }, reg.abort.signal);
      if (!this.alive(reg)) break;
      if (res.status !== 200) {
        if (isUnknownToken(res) && !this.o.boundAccessToken) { this.endUnknownToken(reg, res); break; }
        await this.backoff(reg, '/sync', res);
        continue;
      }
      reg.backoffMs = BACKOFF_MIN_MS;
      let json: SyncResponse;
      try { json = JSON.parse(utf8.decode(res.body)) as SyncResponse; } catch { continue; }
      let delta: SyncDelta | undefined;
      try { delta = reg.reducer.ingest(json); } catch (e) {
        this.log.warn({ err: (e as Error).message, token: reg.key }, 'homeserver /sync answer not usable; polling again');
        await this.backoff(reg, '/sync', res);
        continue;
      }
      this.persist(); // before the next poll: the homeserver drops to-device messages once the new since is used
      if (delta) {
        this.counters.deltas++;
        this.pushPending(reg);
      }
    }
    reg.running = false;
  }

  /**
   * The registration's token is no longer valid at the homeserver (not in authenticate-only
   * mode): it ends with that answer as a final notification, so the kit learns of it.
   */
  private endUnknownToken(reg: Registration, res: HttpResponseLike): void {
    this.counters.endedUnknownToken++;
    this.log.warn({ token: reg.key }, 'the homeserver no longer knows the access token of a push-sync registration: it ends (the kit registers again with a good token)');
    this.stop(reg);
    this.regs.delete(reg.key);
    this.park(reg);
    this.persist();
    // Not 2.xx: RFC 7641 §3.2, the endpoint sends it without Observe and removes the registration once it is ACKed.
    this.o.radio.endpoint.notify(reg.token, this.o.session().encodeResponse(res));
  }
}

/** The registrations and parked reducers of a saved state; version 1 (one registration, before issue 12) is read as one registration of an account not yet known. */
function readSaved(saved: SyncPusherState | SyncPusherStateV1 | undefined): Pick<SyncPusherState, 'registrations' | 'parked'> {
  if (saved === undefined) return { registrations: [], parked: [] };
  if (saved.version === 1) {
    if (!saved.registration) return { registrations: [], parked: [] };
    return {
      registrations: [{ token: saved.registration.token, sequence: saved.registration.sequence, accessToken: saved.accessToken ?? null, account: null,
        reducer: saved.reducer ?? new SyncReducer().exportState(), stream: newStreamId() }],
      parked: [],
    };
  }
  if (saved.version === 2 && Array.isArray(saved.registrations) && Array.isArray(saved.parked)) return saved;
  throw new Error(`push-sync state version ${String((saved as { version?: unknown }).version)} is not known`);
}

function newStreamId(): string {
  return randomBytes(4).toString('hex');
}

function isUnknownToken(res: HttpResponseLike): boolean {
  if (res.status !== 401) return false;
  try { return (JSON.parse(utf8.decode(res.body)) as { errcode?: unknown }).errcode === 'M_UNKNOWN_TOKEN'; } catch { return false; }
}

function parseUserId(res: HttpResponseLike): string | undefined {
  try {
    const u = (JSON.parse(utf8.decode(res.body)) as { user_id?: unknown }).user_id;
    return typeof u === 'string' && u.startsWith('@') ? u : undefined;
  } catch { return undefined; }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => { const t = setTimeout(r, ms); t.unref?.(); });
}
