/**
 * Push sync, field-kit side (issue 7; one store per account, issue 12). Every local client's
 * /sync is answered from a persisted store (matrix/sync-store.ts); long-polls are held here at no
 * airtime cost. Filters are kept locally, a client's own sends are echoed into the store at once
 * (the echo never crosses the air), and /messages pages from the store's own tokens are answered
 * here or mapped to homeserver tokens.
 *
 * ACCOUNTS. A field kit is shared (a Wi-Fi hotspot, three or four people, each with their own
 * Matrix account): each ACCOUNT (the user id host.ts found for the request's access token,
 * local-auth.ts / token-registry.ts) has its own store, filters, persisted state and its own
 * CoAP observation of GET /7 (RFC 7641), registered with that account's access token the first
 * time one of its clients syncs; the gateway holds that account's homeserver long-poll and pushes
 * its deltas to that observation only (gateway/sync-pusher.ts). A request is answered from the
 * store of the account its token belongs to and from no other: /sync, local filters (ids are
 * per account), /messages from the store's own tokens (each store has its own random epoch, so
 * another store's tokens mean nothing to it), and a send is echoed into the sender's store only.
 * Nothing of one account's store can reach another account's client.
 *
 * Bounds and lifetime: at most `maxAccounts` (default 16) stores. An account whose every token is
 * logged out through the kit (/logout, /logout/all, …: the token registry forgets them) is
 * dropped with its data; its registration ends at the gateway when the token fails there (401)
 * or at its next notification, which is refused (RST). Never by an Observe = 1 deregistration:
 * the gateway performs that GET like any request, bringing a whole /sync over the air. When the
 * limit is reached, an account with no token known to the kit any more (refused, expired) gives
 * its place to a new one, least recently used first; otherwise the new account's /sync is
 * answered 429 M_LIMIT_EXCEEDED naming the limit. A new link session ends the registrations but
 * keeps the stores: the gateway keeps each account's reducer for its next registration (the
 * stream goes on), or, if it lost it, starts a new stream and the store starts over.
 *
 * Delta streams: the first delta of each registration names the gateway's delta stream (one per
 * reducer) and the seq it builds on (SyncDelta.stream, base); the store remembers the stream it
 * follows. A new stream from scratch makes the store start over; one built on deltas the store
 * never had (a new store for an account the gateway kept a stream for) is refused, and the
 * gateway then starts a new stream (followStream below). So a store and the gateway's reducer can
 * never silently disagree, whichever end lost or dropped its state.
 *
 * Registration: with the account's access token, through HostSession.carry (so it waits, as any
 * request carrying a new token, for requests in flight that rely on another account's token).
 * A failed registration is tried again at the account's next /sync after a backoff (5 s to
 * 5 min); a refused notification (RST) registers again at once. The gateway may end a
 * registration with a final error notification: 401 M_UNKNOWN_TOKEN (its token is gone at the
 * homeserver) makes the kit refuse that token (`tokenRefused`).
 *
 * Persisted state: one file (sync-host.json), one section per account (version 2), written
 * whole at each change (only the changed account's section is exported again). A version 1 file
 * (one store owned by one account, issue 11) becomes that owner's section, so an upgraded kit
 * keeps the owner's store and registration.
 */
import { randomBytes } from 'node:crypto';
import { hashToken } from './token-registry.ts';
import type { Logger } from '../log.ts';
import { fromHex, toHex, utf8 } from '../util/bytes.ts';
import type { RadioStack, StateStore } from '../net/radio-stack.ts';
import type { HostSession, HostSentRequest } from '../matrix/session.ts';
import { SyncStore, SyncWaitList, parseSyncQuery, isEmptySyncResponse, type SyncStoreState } from '../matrix/sync-store.ts';
import { deltaFromWire } from '../matrix/sync-wire.ts';
import { acceptPart, type PartialBody } from '../matrix/sync-parts.ts';
import type { ClientFilter, JsonObject } from '../matrix/sync-types.ts';
import { matrixError, type HttpRequestLike, type HttpResponseLike } from '../matrix/http.ts';
import type { CoapOption } from '../coap/message.ts';
import type { CoapResponse, ObservationEnd } from '../coap/endpoint.ts';

/** One account's section of the state. */
export interface PushSyncAccountState {
  userId: string;
  store: SyncStoreState;
  filters: [string, ClientFilter][];
  nextFilter: number;
  /** SHA-256 prefix of the access token the registration was made with, or null. */
  registeredWith: string | null;
  /** The observation's token (hex), or null. */
  registration: string | null;
  /** Parts of a delta received so far (matrix/sync-parts.ts), or null. */
  partial: PartialBody | null;
  /** The gateway's delta stream the store follows (SyncDelta.stream), or null (none yet, or a store from before streams). */
  stream: string | null;
}

export interface PushSyncState {
  version: 2;
  accounts: PushSyncAccountState[];
}

/** What version 1 (one store, one owner: issue 11) wrote. */
export interface PushSyncStateV1 {
  version: 1;
  store: SyncStoreState;
  filters: [string, ClientFilter][];
  nextFilter: number;
  owner?: string | null;
  registeredWith?: string | null;
  /** Before issue 11: sha256(access token) → user id (read once, to find the owner). */
  users?: [string, string][];
  registration: string | null;
  partial?: PartialBody | null;
}

export interface HostPushSyncOptions {
  radio: RadioStack;
  session: () => HostSession;
  /** Write the Matrix session state (handles, txn ids); `force` even when nothing requires it. */
  persistSession: (force?: boolean) => void;
  /** Carry a request over the radio as any other (for /messages context look-ups). */
  carry: (req: HttpRequestLike) => Promise<HttpResponseLike>;
  logger: Logger;
  store?: StateStore<unknown>;
  /** The registration's response timeout, ms. */
  requestTimeoutMs: number;
  /** Accounts with a store at once (default 16). */
  maxAccounts?: number;
  /** Does the kit still know a token of this user (token-registry.ts hasUser)? Default: yes. */
  hasTokens?: (userId: string) => boolean;
  /** The gateway said the homeserver no longer knows this token: refuse it locally too. */
  tokenRefused?: (accessToken: string) => void;
}

export const DEFAULT_MAX_PUSH_SYNC_ACCOUNTS = 16;
const REGISTER_RETRY_MIN_MS = 5_000;
const REGISTER_RETRY_MAX_MS = 300_000;

const SYNC_PATH = /^\/_matrix\/client\/(?:r0|v3)\/sync$/;
const FILTER_POST = /^\/_matrix\/client\/(?:r0|v3)\/user\/[^/]+\/filter$/;
const FILTER_GET = /^\/_matrix\/client\/(?:r0|v3)\/user\/[^/]+\/filter\/([^/]+)$/;
const MESSAGES = /^\/_matrix\/client\/(?:r0|v3)\/rooms\/([^/]+)\/messages$/;
const SEND = /^\/_matrix\/client\/(?:r0|v3)\/rooms\/([^/]+)\/send\/([^/]+)\/([^/]+)$/;
const jsonResponse = (status: number, v: unknown): HttpResponseLike => ({ status, contentType: 'application/json', body: utf8.encode(JSON.stringify(v)) });

interface Waiter { wake: () => void }

/**
 * The registration of one account: its observation's token and the request it was made with.
 * Never cancelled with a deregistration (RFC 7641 §3.6, a GET with Observe = 1): the gateway
 * performs such a GET like any request, so it would bring a whole homeserver /sync over the air.
 * A registration the kit no longer wants ends at its next notification, refused (RST).
 */
interface Registration { token: Uint8Array; sent: HostSentRequest }

/** One account's push sync: its store and everything that feeds it. */
class AccountSync {
  store: SyncStore;
  filters = new Map<string, ClientFilter>();
  nextFilter = 1;
  registration: Registration | undefined;
  registering = false;
  /** SHA-256 prefix of the token the registration was made with (persisted). */
  registeredWith: string | null = null;
  /** That token itself (memory only): refused locally if the gateway says it is gone. */
  registeredToken: string | undefined;
  partial: PartialBody | undefined;
  /** The gateway's delta stream the store follows (see onNotification). */
  stream: string | undefined;
  /** The access token of the last local /sync (memory only): to register again at once after a refusal. */
  lastAccessToken: string | undefined;
  /** No registration before this time (after a failure), and the next backoff. */
  retryAtMs = 0;
  retryDelayMs = REGISTER_RETRY_MIN_MS;
  lastUsedMs = Date.now();
  /** Dropped: 'logout' (its tokens ended: a held /sync gets 401) or 'evicted' (it starts again at its next /sync). */
  dropped: 'logout' | 'evicted' | undefined;
  readonly waiters = new SyncWaitList<Waiter>();
  /** The last exported section (re-exported only when this account changed). */
  section: PushSyncAccountState | undefined;

  constructor(readonly userId: string, store?: SyncStore) {
    this.store = store ?? newStore();
  }

  wakeAll(): void {
    for (const w of this.waiters.due(Number.MAX_SAFE_INTEGER)) w.wake();
  }

  wake(): void {
    for (const w of this.waiters.due(this.store.position)) w.wake();
  }

  export(): PushSyncAccountState {
    return {
      userId: this.userId,
      store: this.store.exportState(),
      filters: [...this.filters],
      nextFilter: this.nextFilter,
      registeredWith: this.registeredWith,
      registration: this.registration ? toHex(this.registration.token) : null,
      partial: this.partial ?? null,
      stream: this.stream ?? null,
    };
  }
}

export class HostPushSync {
  private readonly accounts = new Map<string, AccountSync>();
  private readonly maxAccounts: number;
  private closed = false;
  private readonly log: Logger;
  private counters = {
    localSyncs: 0, deltasApplied: 0, notifications: 0, parts: 0, partGaps: 0, timestampsApproximated: 0, ownEchoes: 0,
    localFilters: 0, localMessages: 0, refusedOverLimit: 0, accountsDropped: 0, registrations: 0, registrationsFailed: 0,
    storesRestarted: 0, streamsRefused: 0,
  };

  constructor(private readonly o: HostPushSyncOptions) {
    this.log = o.logger.child({ component: 'push-sync' });
    this.maxAccounts = o.maxAccounts ?? DEFAULT_MAX_PUSH_SYNC_ACCOUNTS;
    const saved = o.store?.load() as PushSyncState | PushSyncStateV1 | undefined;
    let sections: PushSyncAccountState[] = [];
    try {
      sections = readSaved(saved);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'push-sync state unreadable; starting with empty stores');
    }
    for (const s of sections) {
      try {
        const acct = new AccountSync(s.userId, new SyncStore({ epoch: s.store.epoch }, s.store));
        acct.filters = new Map(s.filters);
        acct.nextFilter = s.nextFilter;
        acct.registeredWith = s.registeredWith;
        acct.stream = typeof s.stream === 'string' ? s.stream : undefined;
        this.accounts.set(s.userId, acct);
        // The store survives any restart; the registration only with its link session.
        if (s.registration && o.radio.resumed) {
          acct.partial = s.partial ?? undefined;
          this.resume(acct, fromHex(s.registration));
        } else {
          acct.registeredWith = null;
        }
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'push-sync state of an account unreadable; it starts with an empty store');
        this.accounts.delete(s.userId);
      }
    }
    if (saved !== undefined && saved.version !== 2) this.persist(); // migrated: written in the new form at once
    o.radio.onSessionReset(() => {
      // A new link session ends the registrations, not the stores: the gateway keeps each
      // account's reducer for its next registration, whose deltas go on with the stream the store
      // follows (what the homeserver sent meanwhile arrives whole, local clients keep their since
      // tokens). A gateway that lost the reducer starts a new stream, and the store starts over
      // then (followStream). Woken, the local clients' next /sync registers again.
      for (const acct of this.accounts.values()) {
        acct.registration = undefined;
        acct.registeredWith = null;
        acct.registeredToken = undefined;
        acct.partial = undefined;
        acct.retryAtMs = 0;
        acct.section = undefined;
        acct.wakeAll();
      }
      this.persist();
    });
  }

  /**
   * Requests this end answers itself (or shapes) instead of carrying them: the push-sync paths,
   * for a request whose token host.ts found an account for (`userId`). Each is answered from
   * that account's store alone.
   */
  handles(req: HttpRequestLike, userId: string | undefined): boolean {
    if (userId === undefined) return false;
    if (req.method === 'GET' && SYNC_PATH.test(req.path)) return true;
    if (req.method === 'POST' && FILTER_POST.test(req.path)) return true;
    if (req.method === 'GET' && FILTER_GET.test(req.path)) return true;
    if (req.method === 'GET' && MESSAGES.test(req.path)) return (new URLSearchParams(req.query).get('from') ?? '').startsWith('trickle_');
    return false;
  }

  /** The accounts with a store (their user ids). */
  get accountIds(): string[] { return [...this.accounts.keys()]; }

  /**
   * An access token was forgotten (logout, refused, replaced): a registration made with it is
   * dropped (the account's next /sync registers again with its own token; the store stays). When
   * the user logged out and the kit knows no token of theirs any more, their store is dropped.
   */
  tokenForgotten(hash: string, userId?: string, reason?: string): void {
    for (const acct of this.accounts.values()) {
      if (acct.registeredWith !== hash) continue;
      this.log.info('the access token an account\'s push sync registered with was ended; its next /sync registers again');
      acct.registration = undefined;
      acct.registeredWith = null;
      acct.registeredToken = undefined;
      acct.partial = undefined;
      acct.retryAtMs = 0;
      if (acct.lastAccessToken !== undefined && hashToken(acct.lastAccessToken) === hash) acct.lastAccessToken = undefined;
      this.persist(acct);
    }
    if (reason === 'logout' && userId !== undefined && this.o.hasTokens && !this.o.hasTokens(userId)) {
      const acct = this.accounts.get(userId);
      if (acct) this.dropAccount(acct, 'logout');
    }
  }

  /** Call only when handles(req, userId) said true. */
  async answer(req: HttpRequestLike, userId: string): Promise<HttpResponseLike> {
    const acct = this.account(userId);
    if (!acct) {
      this.counters.refusedOverLimit++;
      return matrixError(429, 'M_LIMIT_EXCEEDED',
        `trickle host: push sync keeps a store for at most ${this.maxAccounts} accounts on this field kit (HostOptions.pushSyncMaxAccounts), and every one is in use; log an account out on this kit to free a place`,
        { retry_after_ms: 60_000 });
    }
    acct.lastUsedMs = Date.now();
    if (SYNC_PATH.test(req.path)) return this.answerSync(acct, req);
    const filterUser = /\/user\/([^/]+)\/filter/.exec(req.path);
    if (filterUser && safeDecode(filterUser[1]!) !== userId) return matrixError(403, 'M_FORBIDDEN', 'Cannot use filters of other users');
    if (FILTER_POST.test(req.path)) {
      let filter: ClientFilter;
      try { filter = JSON.parse(utf8.decode(req.body)) as ClientFilter; } catch { return matrixError(400, 'M_NOT_JSON', 'filter body is not JSON'); }
      if (!filter || typeof filter !== 'object' || Array.isArray(filter)) return matrixError(400, 'M_BAD_JSON', 'a filter is a JSON object');
      const id = `t${acct.nextFilter++}`;
      acct.filters.set(id, filter);
      this.counters.localFilters++;
      this.persist(acct);
      return jsonResponse(200, { filter_id: id });
    }
    const f = FILTER_GET.exec(req.path);
    if (f) {
      const filter = acct.filters.get(safeDecode(f[1]!));
      return filter ? jsonResponse(200, filter) : matrixError(404, 'M_NOT_FOUND', 'no such filter');
    }
    return this.answerMessages(acct, req);
  }

  /** Echo a local client's own send into its account's store, after the radio answered (`userId`: the token's user). */
  afterCarry(req: HttpRequestLike, res: HttpResponseLike, userId: string | undefined): void {
    if (res.status !== 200 || !isJson(res) || userId === undefined) return;
    const send = SEND.exec(req.path);
    if (req.method !== 'PUT' || !send) return;
    // Only into the sender's own store: the room may be one no other account on the kit is in.
    const acct = this.accounts.get(userId);
    if (!acct) return;
    let body: JsonObject;
    try { body = JSON.parse(utf8.decode(res.body)) as JsonObject; } catch { return; }
    if (typeof body['event_id'] !== 'string') return;
    let content: JsonObject;
    try { content = JSON.parse(utf8.decode(req.body)) as JsonObject; } catch { return; }
    const echoed = acct.store.synthesizeOwnEcho({
      roomId: safeDecode(send[1]!), type: safeDecode(send[2]!), content,
      txnId: safeDecode(send[3]!), sender: userId, eventId: body['event_id'], originServerTs: Date.now(),
    });
    if (echoed) {
      this.counters.ownEchoes++;
      this.persist(acct);
      acct.wake();
    }
  }

  status(): Record<string, unknown> {
    // No user ids: /_trickle/status is readable by every local client.
    const accounts = [...this.accounts.values()];
    return {
      accounts: accounts.length,
      maxAccounts: this.maxAccounts,
      registered: accounts.some((a) => a.registration !== undefined),
      registeredAccounts: accounts.filter((a) => a.registration !== undefined).length,
      heldLongPolls: accounts.reduce((n, a) => n + a.waiters.size, 0),
      stores: accounts.map((a) => ({
        registered: a.registration !== undefined, storePosition: a.store.position, lastDelta: a.store.lastAppliedSeq,
        initialSync: a.store.progress ?? null, heldLongPolls: a.waiters.size,
      })),
      ...this.counters,
    };
  }

  close(): void {
    this.closed = true;
    for (const acct of this.accounts.values()) acct.wakeAll();
  }

  /** The account's push sync, made if it has none yet (undefined: at the limit, nobody to give way). */
  private account(userId: string): AccountSync | undefined {
    const have = this.accounts.get(userId);
    if (have) return have;
    if (this.accounts.size >= this.maxAccounts) {
      const idle = [...this.accounts.values()]
        .filter((a) => this.o.hasTokens !== undefined && !this.o.hasTokens(a.userId))
        .sort((a, b) => a.lastUsedMs - b.lastUsedMs)[0];
      if (!idle) {
        this.log.warn({ limit: this.maxAccounts }, 'push sync: one more account than the limit; its /sync is refused');
        return undefined;
      }
      this.dropAccount(idle, 'evicted'); // no token of it is known to the kit any more, and a new account needs its place
    }
    const acct = new AccountSync(userId);
    this.accounts.set(userId, acct);
    this.log.info({ accounts: this.accounts.size }, 'push sync: a store for one more account on this kit');
    this.persist(acct);
    return acct;
  }

  /**
   * Forget an account and its data. Its observation's next notification is refused (RST), which
   * ends the registration at the gateway; a logged-out token ends it sooner (401 there).
   */
  private dropAccount(acct: AccountSync, why: 'logout' | 'evicted'): void {
    this.counters.accountsDropped++;
    this.log.info({ why }, why === 'logout' ? 'push sync: an account logged out: its store is dropped' : 'push sync: an account with no token known to the kit gives its place to a new one: its store is dropped');
    acct.dropped = why;
    this.accounts.delete(acct.userId);
    acct.registration = undefined;
    acct.wakeAll();
    this.persist();
  }

  private async answerSync(acct: AccountSync, req: HttpRequestLike): Promise<HttpResponseLike> {
    this.counters.localSyncs++;
    if (req.accessToken) acct.lastAccessToken = req.accessToken;
    if (!acct.registration && req.accessToken) this.register(acct, req.accessToken);
    const q = parseSyncQuery(req.query, (id) => acct.filters.get(id));
    if (q.since !== undefined) q.filter = widenTimelineLimit(q.filter);
    const deadline = Date.now() + q.timeoutMs;
    for (;;) {
      if (acct.dropped === 'logout') return matrixError(401, 'M_UNKNOWN_TOKEN', 'trickle host: this account was logged out on the field kit', { soft_logout: false });
      if (acct.dropped) return this.answer(req, acct.userId); // a store of its own again, if there is a place
      const store = acct.store; // a new link session replaces it
      if (store.hasNewerThan(q.since) || Date.now() >= deadline || this.closed) {
        const answer = store.answer(q.since, q.filter, { fullState: q.fullState, nowMs: Date.now() });
        // Woken by a change that this client's filter hides: keep holding until the deadline.
        if (!isEmptySyncResponse(answer) || Date.now() >= deadline || q.since === undefined || this.closed) return jsonResponse(200, answer);
      }
      await this.wait(acct, store.waitKey(q.since), deadline - Date.now());
    }
  }

  private async answerMessages(acct: AccountSync, req: HttpRequestLike): Promise<HttpResponseLike> {
    const roomId = safeDecode(MESSAGES.exec(req.path)![1]!);
    const params = new URLSearchParams(req.query);
    const r = acct.store.messages(roomId, {
      from: params.get('from') ?? '', dir: params.get('dir') === 'f' ? 'f' : 'b',
      limit: Number(params.get('limit') ?? '10'),
    }, Date.now());
    this.counters.localMessages++;
    if (r.kind === 'local') return jsonResponse(200, r.response);
    let from = r.kind === 'homeserver' ? r.from : undefined;
    if (r.kind === 'context') {
      const ctx = await this.o.carry({ method: 'GET', path: `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/context/${encodeURIComponent(r.eventId)}`, query: 'limit=0', body: new Uint8Array(0), ...(req.accessToken ? { accessToken: req.accessToken } : {}) });
      if (ctx.status !== 200) return ctx;
      from = (JSON.parse(utf8.decode(ctx.body)) as { start?: string }).start;
    }
    if (from) params.set('from', from); else params.delete('from');
    return this.o.carry({ ...req, query: params.toString() });
  }

  private wait(acct: AccountSync, after: number, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const w: Waiter = { wake: () => { clearTimeout(t); resolve(); } };
      const t = setTimeout(() => { acct.waiters.remove(w); resolve(); }, Math.max(0, ms));
      acct.waiters.add(after, w);
    });
  }

  private register(acct: AccountSync, accessToken: string): void {
    if (acct.registering || acct.registration || acct.dropped || this.closed || Date.now() < acct.retryAtMs) return;
    acct.registering = true;
    this.counters.registrations++;
    const session = this.o.session();
    let current: Registration | undefined;
    // Through carry: it waits for requests in flight that rely on another account's token (the
    // gateway takes this request's token as its session token), and sends the token again if the
    // gateway has none. Each attempt is a new observation.
    void session.carry({ method: 'GET', path: '/_matrix/client/v3/sync', query: '', accessToken, body: new Uint8Array(0) }, (enc) => {
      this.o.persistSession(); // before anything leaves
      let reg: Registration | undefined;
      const obs = this.o.radio.endpoint.observe(enc, (res) => this.onNotification(acct, reg, res), {
        responseTimeoutMs: this.o.requestTimeoutMs,
        onEnd: (end) => this.observationEnded(acct, reg, end),
      });
      reg = { token: obs.token, sent: enc.sent };
      current = reg;
      if (!acct.dropped) {
        acct.registration = reg;
        acct.registeredWith = hashToken(accessToken);
        acct.registeredToken = accessToken;
        this.persist(acct);
      }
      return obs.first;
    }, { maxAttempts: 2 }).then(
      (res) => {
        acct.registering = false;
        if (res.status === 200 && acct.registration === current && current !== undefined) {
          acct.retryDelayMs = REGISTER_RETRY_MIN_MS;
          this.log.info('push sync registered for an account: the gateway holds its long-poll');
          return;
        }
        this.registrationFailed(acct, current, `the gateway answered ${res.status}: ${utf8.decode(res.body).slice(0, 200)}`);
      },
      (e: unknown) => {
        acct.registering = false;
        this.registrationFailed(acct, current, (e as Error).message);
      },
    );
  }

  private registrationFailed(acct: AccountSync, reg: Registration | undefined, why: string): void {
    this.counters.registrationsFailed++;
    if (reg !== undefined && acct.registration === reg) {
      acct.registration = undefined;
      this.persist(acct);
    }
    acct.retryAtMs = Date.now() + acct.retryDelayMs;
    this.log.warn({ err: why, waitMs: acct.retryDelayMs }, 'push-sync registration failed; a local /sync of the account tries again after a pause');
    acct.retryDelayMs = Math.min(acct.retryDelayMs * 2, REGISTER_RETRY_MAX_MS);
  }

  private resume(acct: AccountSync, token: Uint8Array): void {
    // The request that registered is not replayed; a copy (not sent) gives the decoding context.
    const enc = this.o.session().encodeRequest({ method: 'GET', path: '/_matrix/client/v3/sync', query: '', body: new Uint8Array(0) });
    this.o.session().requestFailed(enc.sent); // never sent
    let reg: Registration | undefined;
    this.o.radio.endpoint.resumeObservation(token, (res) => this.onNotification(acct, reg, res), { request: enc, onEnd: (end) => this.observationEnded(acct, reg, end) });
    reg = { token, sent: enc.sent };
    acct.registration = reg;
    this.log.info({ token: toHex(token) }, 'push sync resumed after a restart');
  }

  private observationEnded(acct: AccountSync, reg: Registration | undefined, end: ObservationEnd): void {
    // Before the registration was answered, its carry() sees the answer and decides.
    if (end.reason === 'not-registered' || end.reason === 'failed') return;
    if (reg === undefined || acct.registration !== reg) return; // an older observation of the account
    this.log.warn({ reason: end.reason }, 'an account\'s push-sync observation ended; registering again');
    acct.registration = undefined;
    acct.partial = undefined;
    if (end.reason === 'ended-by-server' && end.response) this.finalAnswer(acct, reg, end.response);
    this.persist(acct);
    // After our own refusal, at once (the gateway waits for it to send the delta again); otherwise,
    // or without a token in memory (a restart since), the next local /sync registers.
    const token = acct.lastAccessToken;
    if (end.reason === 'refused' && token) setTimeout(() => { if (!acct.registration && !this.closed) this.register(acct, token); }, 0);
  }

  /** The gateway ended the registration with an error (RFC 7641 §3.2). 401 M_UNKNOWN_TOKEN: the token is gone. */
  private finalAnswer(acct: AccountSync, reg: Registration, response: CoapResponse): void {
    let res: HttpResponseLike;
    try {
      const d = this.o.session().decodeResponse(response, reg.sent);
      if (d.kind !== 'response') return;
      res = d.response;
    } catch { return; }
    let errcode: unknown;
    try { errcode = (JSON.parse(utf8.decode(res.body)) as { errcode?: unknown }).errcode; } catch { /* not JSON */ }
    this.log.warn({ status: res.status, code: errcode }, 'the gateway ended an account\'s push-sync registration');
    if (res.status === 401 && errcode === 'M_UNKNOWN_TOKEN') {
      const token = acct.registeredToken;
      acct.registeredWith = null;
      acct.registeredToken = undefined;
      if (token !== undefined) {
        if (acct.lastAccessToken === token) acct.lastAccessToken = undefined;
        this.o.tokenRefused?.(token);
      }
    } else {
      acct.retryAtMs = Date.now() + acct.retryDelayMs;
      acct.retryDelayMs = Math.min(acct.retryDelayMs * 2, REGISTER_RETRY_MAX_MS);
    }
  }

  /** false refuses the notification (RST): the gateway drops the registration and, registered anew, starts the delta over. */
  private onNotification(acct: AccountSync, reg: Registration | undefined, res: { code: number; options: readonly CoapOption[]; payload: Uint8Array }): boolean | undefined {
    this.counters.notifications++;
    // A dropped account's data is not kept; refusing ends the observation at the gateway.
    if (acct.dropped || reg === undefined) return false;
    let part;
    try {
      part = acceptPart(acct.partial, res);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'push notification with a bad part option');
      return;
    }
    if (part.kind === 'duplicate') return undefined;
    if (part.kind === 'gap') {
      // A part whose predecessors are not here (they were lost with a state this end no longer
      // has): refuse it, so the gateway does not count the delta as delivered; registered
      // again, the gateway sends the whole delta from part 0.
      this.counters.partGaps++;
      this.log.warn({ expected: part.expected, got: part.got }, 'push-sync part out of order: refused; the delta will be sent again');
      acct.partial = undefined;
      this.persist(acct);
      return false;
    }
    if (part.kind === 'partial') {
      this.counters.parts++;
      acct.partial = part.partial;
      this.persist(acct); // before the CoAP ACK leaves
      return;
    }
    acct.partial = undefined;
    let decoded;
    try {
      decoded = this.o.session().decodeResponse(part.response, reg.sent);
    } catch (e) {
      // Refused (RST): the gateway does not count it delivered; registered anew, it sends the
      // delta again with its handles spelled out (a new registration unconfirms them).
      this.log.warn({ code: (e as { code?: string }).code, err: (e as Error).message }, 'push notification not decodable: refused, registering again');
      return false;
    }
    // The handles this push defined are confirmed at the gateway once it is ACKed: they must be
    // on disk before that, or a restart here would leave the gateway using numbers we lost.
    this.o.persistSession(true);
    if (decoded.kind !== 'response' || decoded.response.status !== 200) return;
    let json: unknown;
    try { json = JSON.parse(utf8.decode(decoded.response.body)); } catch { return; }
    if (!json || typeof json !== 'object' || Object.keys(json).length === 0) return;
    let delta;
    try {
      delta = deltaFromWire(json, {
        baseTs: (r) => acct.store.lastTimelineTs(r),
        missingBase: (r) => {
          this.counters.timestampsApproximated++;
          this.log.error({ room: r }, 'push-sync: a relative timestamp without its base here; the message is kept with the local time');
          return Date.now();
        },
      });
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'push-sync delta malformed: not applied');
      return;
    }
    if (!this.followStream(acct, delta.stream, delta.base)) return false;
    const store = acct.store;
    let applied: boolean;
    try {
      ({ applied } = store.applyDelta(delta));
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'push-sync delta malformed: not applied');
      return;
    }
    if (applied) this.counters.deltasApplied++;
    this.persist(acct); // before the CoAP ACK leaves: an acknowledged delta is on disk
    acct.wake();
  }

  /**
   * The first delta of each registration names the gateway's delta stream and the seq it builds
   * on (`base`). The stream the store follows: go on. A new stream from scratch (base 0): the
   * gateway started over (its state for the account was lost or dropped), so does the store (a
   * new epoch: local clients re-sync from it). A stream the store does not follow, built on
   * deltas it never had (a new store, while the gateway kept the account's stream): refused
   * (false: RST), and the gateway, refused before its first delta arrived, starts a new stream
   * at the next registration. A store from before streams adopts whatever comes.
   */
  private followStream(acct: AccountSync, stream: string | undefined, base: number | undefined): boolean {
    if (stream === undefined || stream === acct.stream) return true;
    if (base === 0) {
      if (acct.store.lastAppliedSeq > 0) {
        this.counters.storesRestarted++;
        this.log.warn('the gateway started the account\'s delta stream over: its store starts over too (local clients re-sync)');
        acct.store = newStore();
        acct.wakeAll();
      }
    } else if (acct.stream !== undefined || acct.store.lastAppliedSeq === 0) {
      this.counters.streamsRefused++;
      this.log.warn({ base }, 'a delta stream this store does not follow: refused; the gateway starts a new one');
      return false;
    }
    acct.stream = stream;
    return true;
  }

  /** Write every account's section; `changed` is exported afresh, the others as they last were. */
  private persist(changed?: AccountSync): void {
    if (!this.o.store) return;
    if (changed) changed.section = undefined;
    const accounts: PushSyncAccountState[] = [];
    for (const acct of this.accounts.values()) {
      acct.section ??= acct.export();
      accounts.push(acct.section);
    }
    this.o.store.save({ version: 2, accounts } satisfies PushSyncState);
  }
}

/**
 * The accounts' sections of a saved state. Version 1 (one store with one owner, issue 11)
 * becomes its owner's section; a version 1 store from before stores had owners is the
 * account's that its known tokens name, if they name exactly one; otherwise nobody can tell,
 * and there is no section.
 */
function readSaved(saved: PushSyncState | PushSyncStateV1 | undefined): PushSyncAccountState[] {
  if (saved === undefined) return [];
  if (saved.version === 2) {
    if (!Array.isArray(saved.accounts)) throw new Error('push-sync state version 2 without accounts');
    return saved.accounts.filter((a) => typeof a?.userId === 'string');
  }
  if (saved.version !== 1) throw new Error(`push-sync state version ${String((saved as { version?: unknown }).version)} is not known`);
  let owner: string | null = null;
  if (saved.owner !== undefined) {
    owner = saved.owner;
  } else {
    const users = new Set((saved.users ?? []).map(([, u]) => u));
    if (users.size === 1) owner = [...users][0]!;
    else if (users.size > 1 || saved.registration) throw new Error('a store from before issue 11 with no single owner');
  }
  if (owner === null) return [];
  return [{
    userId: owner, store: saved.store, filters: saved.filters, nextFilter: saved.nextFilter,
    registeredWith: saved.registeredWith ?? null, registration: saved.registration, partial: saved.partial ?? null, stream: null,
  }];
}

/**
 * Incremental answers carry every event the radio brought in at once (up to a bound) rather than
 * the client's usual page: after a stretch of loss a merged push can hold more events than the
 * client's timeline limit, and a "limited" answer would leave the older ones to back-pagination,
 * which headless clients do not do.
 */
const INCREMENTAL_TIMELINE_LIMIT = 100;
function widenTimelineLimit(f: ClientFilter | undefined): ClientFilter {
  const room = f?.room ?? {};
  const timeline = room.timeline ?? {};
  return { ...f, room: { ...room, timeline: { ...timeline, limit: Math.max(timeline.limit ?? 0, INCREMENTAL_TIMELINE_LIMIT) } } };
}

function safeDecode(s: string): string { try { return decodeURIComponent(s); } catch { return s; } }

function newStore(): SyncStore {
  return new SyncStore({ epoch: randomBytes(4).toString('hex') });
}

function isJson(res: HttpResponseLike): boolean {
  return (res.contentType ?? '').toLowerCase().startsWith('application/json');
}
