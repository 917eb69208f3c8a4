/**
 * Push sync, field-kit side (issue 7). Every local client's /sync is answered from a persisted
 * store (matrix/sync-store.ts); long-polls are held here at no airtime cost. The store is fed by
 * one CoAP observation of GET /7 (RFC 7641), registered the first time a client syncs: the
 * gateway then holds the homeserver's long-poll and pushes deltas. Filters are kept locally, a
 * client's own sends are echoed into the store at once (the echo never crosses the air), and
 * /messages pages from the store's own tokens are answered here or mapped to homeserver tokens.
 *
 * One account owns the store (issue 11): the user whose access token first used it (a local
 * /sync, which registers, or a filter). Only requests whose token belongs to that user (host.ts checks the
 * token first, local-auth.ts) are answered from it: /sync, local filters, /messages from the
 * store's own tokens, and only that user's sends are echoed into it. Another account on the same
 * kit is carried over the radio like --poll-sync (its /sync long-polls cost airtime, and nothing
 * of the owner's store can reach it); per-account stores are the next step. The owner is fixed
 * for the life of the store: a new link session (a new store) is the only way to change it,
 * since the gateway's reducer carries the owner's sync position.
 */
import { randomBytes } from 'node:crypto';
import { hashToken } from './token-registry.ts';
import type { Logger } from '../log.ts';
import { fromHex, toHex, utf8 } from '../util/bytes.ts';
import type { RadioStack, StateStore } from '../coap/radio-stack.ts';
import type { HostSession, HostSentRequest } from '../matrix/session.ts';
import { SyncStore, SyncWaitList, parseSyncQuery, isEmptySyncResponse, type SyncStoreState } from '../matrix/sync-store.ts';
import { deltaFromWire } from '../matrix/sync-wire.ts';
import { acceptPart, type PartialBody } from '../matrix/sync-parts.ts';
import type { ClientFilter, JsonObject } from '../matrix/sync-types.ts';
import { matrixError, type HttpRequestLike, type HttpResponseLike } from '../matrix/http.ts';
import type { CoapOption } from '../coap/message.ts';

export interface PushSyncState {
  version: 1;
  store: SyncStoreState;
  filters: [string, ClientFilter][];
  nextFilter: number;
  /** The account whose store this is (the user who registered), or null before the first /sync. */
  owner?: string | null;
  /** SHA-256 prefix of the access token the registration was made with, or null. */
  registeredWith?: string | null;
  /** Before issue 11: sha256(access token) → user id (read once, to find the owner). */
  users?: [string, string][];
  /** The observation's token (hex), or null. */
  registration: string | null;
  /** Parts of a delta received so far (matrix/sync-parts.ts), or null. */
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
}

const SYNC_PATH = /^\/_matrix\/client\/(?:r0|v3)\/sync$/;
const FILTER_POST = /^\/_matrix\/client\/(?:r0|v3)\/user\/[^/]+\/filter$/;
const FILTER_GET = /^\/_matrix\/client\/(?:r0|v3)\/user\/[^/]+\/filter\/([^/]+)$/;
const MESSAGES = /^\/_matrix\/client\/(?:r0|v3)\/rooms\/([^/]+)\/messages$/;
const SEND = /^\/_matrix\/client\/(?:r0|v3)\/rooms\/([^/]+)\/send\/([^/]+)\/([^/]+)$/;
const jsonResponse = (status: number, v: unknown): HttpResponseLike => ({ status, contentType: 'application/json', body: utf8.encode(JSON.stringify(v)) });

interface Waiter { wake: () => void }

export class HostPushSync {
  private store: SyncStore;
  private filters = new Map<string, ClientFilter>();
  private nextFilter = 1;
  private owner: string | null = null;
  private registeredWith: string | null = null;
  private readonly foreignUsersSeen = new Set<string>();
  private registration: { token: Uint8Array; sent: HostSentRequest } | undefined;
  private registering = false;
  private partial: PartialBody | undefined;
  /** The access token of the last local /sync (memory only): to register again at once after a refusal. */
  private lastAccessToken: string | undefined;
  private closed = false;
  private readonly waiters = new SyncWaitList<Waiter>();
  private readonly log: Logger;
  private counters = { foreignRequestsCarried: 0, localSyncs: 0, deltasApplied: 0, notifications: 0, parts: 0, partGaps: 0, timestampsApproximated: 0, ownEchoes: 0, localFilters: 0, localMessages: 0 };

  constructor(private readonly o: HostPushSyncOptions) {
    this.log = o.logger.child({ component: 'push-sync' });
    this.store = newStore();
    const saved = o.store?.load() as PushSyncState | undefined;
    if (saved?.version === 1) {
      try {
        this.filters = new Map(saved.filters);
        this.nextFilter = saved.nextFilter;
        // The store survives any restart; the registration only with its link session.
        this.store = new SyncStore({ epoch: saved.store.epoch }, saved.store);
        this.registeredWith = saved.registeredWith ?? null;
        if (saved.owner !== undefined) {
          this.owner = saved.owner;
        } else {
          // A store written before stores had owners: it is the account's that its known tokens
          // name, if they name exactly one; otherwise nobody can tell, and it starts afresh.
          const users = new Set((saved.users ?? []).map(([, u]) => u));
          if (users.size === 1) this.owner = [...users][0]!;
          else if (users.size > 1 || saved.registration) throw new Error('a store from before issue 11 with no single owner');
        }
        if (saved.registration && o.radio.resumed) {
          this.partial = saved.partial ?? undefined;
          this.resume(fromHex(saved.registration));
        }
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'push-sync state unreadable; starting with an empty store');
        this.store = newStore();
        this.filters = new Map();
        this.owner = null;
        this.registeredWith = null;
        this.registration = undefined;
        this.partial = undefined;
      }
    }
    o.radio.onSessionReset(() => {
      // A new link session: the gateway starts a new reducer, so deltas start over; a fresh store
      // (new epoch) makes every local client re-sync from it.
      this.registration = undefined;
      this.registeredWith = null;
      this.partial = undefined;
      this.store = newStore();
      this.owner = null; // a new store: the next account to sync owns it
      this.filters = new Map();
      this.persist();
      for (const w of this.waiters.due(Number.MAX_SAFE_INTEGER)) w.wake();
    });
  }

  /**
   * Requests this end answers itself (or shapes) instead of carrying them. `userId`: the owner of
   * the request's access token, as host.ts checked it; only the store's owner (or the first
   * account to sync, which becomes it) is answered from the store.
   */
  handles(req: HttpRequestLike, userId: string | undefined): boolean {
    const ours = this.isLocalPath(req);
    if (!ours) return false;
    if (userId !== undefined && (this.owner === null || this.owner === userId)) return true;
    this.counters.foreignRequestsCarried++;
    if (userId !== undefined && !this.foreignUsersSeen.has(userId)) {
      this.foreignUsersSeen.add(userId);
      if (this.foreignUsersSeen.size > 64) this.foreignUsersSeen.delete(this.foreignUsersSeen.values().next().value!);
      this.log.warn({ user: userId, owner: this.owner }, 'a second account on this kit: its /sync crosses the radio (poll mode), the push-sync store stays its owner\'s');
    }
    return false;
  }

  private isLocalPath(req: HttpRequestLike): boolean {
    if (req.method === 'GET' && SYNC_PATH.test(req.path)) return true;
    if (req.method === 'POST' && FILTER_POST.test(req.path)) return true;
    if (req.method === 'GET' && FILTER_GET.test(req.path)) return true;
    if (req.method === 'GET' && MESSAGES.test(req.path)) return (new URLSearchParams(req.query).get('from') ?? '').startsWith('trickle_');
    return false;
  }

  /** The store's owner (null before the first local /sync). */
  get ownerUserId(): string | null { return this.owner; }

  /** An access token was forgotten (logout, refused): a registration made with it is dropped, and the owner's next /sync registers again with its own token. */
  tokenForgotten(hash: string): void {
    if (this.registeredWith !== hash) return;
    this.log.info('the access token push sync registered with was ended; the next /sync registers again');
    this.registration = undefined;
    this.registeredWith = null;
    this.partial = undefined;
    if (this.lastAccessToken !== undefined && hashToken(this.lastAccessToken) === hash) this.lastAccessToken = undefined;
    this.persist();
  }

  /** Call only when handles(req, userId) said true. */
  async answer(req: HttpRequestLike, userId: string): Promise<HttpResponseLike> {
    if (this.owner === null) {
      this.owner = userId;
      this.log.info({ user: userId }, 'push-sync store owned by the first account to sync');
      this.persist();
    }
    if (SYNC_PATH.test(req.path)) return this.answerSync(req);
    const filterUser = /\/user\/([^/]+)\/filter/.exec(req.path);
    if (filterUser && safeDecode(filterUser[1]!) !== userId) return matrixError(403, 'M_FORBIDDEN', 'Cannot use filters of other users');
    if (FILTER_POST.test(req.path)) {
      let filter: ClientFilter;
      try { filter = JSON.parse(utf8.decode(req.body)) as ClientFilter; } catch { return matrixError(400, 'M_NOT_JSON', 'filter body is not JSON'); }
      const id = `t${this.nextFilter++}`;
      this.filters.set(id, filter);
      this.counters.localFilters++;
      this.persist();
      return jsonResponse(200, { filter_id: id });
    }
    const f = FILTER_GET.exec(req.path);
    if (f) {
      const filter = this.filters.get(decodeURIComponent(f[1]!));
      return filter ? jsonResponse(200, filter) : matrixError(404, 'M_NOT_FOUND', 'no such filter');
    }
    return this.answerMessages(req);
  }

  /** Echo the owner's own sends into the store, after the radio answered (`userId`: the token's user). */
  afterCarry(req: HttpRequestLike, res: HttpResponseLike, userId: string | undefined): void {
    if (res.status !== 200 || !isJson(res)) return;
    const send = SEND.exec(req.path);
    if (req.method !== 'PUT' || !send) return;
    let body: JsonObject;
    try { body = JSON.parse(utf8.decode(res.body)) as JsonObject; } catch { return; }
    if (typeof body['event_id'] === 'string' && req.accessToken) {
      // Only the owner's: another account's send must not appear in the owner's store (it
      // may be in a room the owner is not in).
      const sender = userId;
      if (!sender || sender !== this.owner) return;
      let content: JsonObject;
      try { content = JSON.parse(utf8.decode(req.body)) as JsonObject; } catch { return; }
      const echoed = this.store.synthesizeOwnEcho({
        roomId: decodeURIComponent(send[1]!), type: decodeURIComponent(send[2]!), content,
        txnId: decodeURIComponent(send[3]!), sender, eventId: body['event_id'], originServerTs: Date.now(),
      });
      if (echoed) {
        this.counters.ownEchoes++;
        this.persist();
        this.wake();
      }
    }
  }

  status(): Record<string, unknown> {
    return {
      registered: this.registration !== undefined,
      owned: this.owner !== null,
      storePosition: this.store.position,
      lastDelta: this.store.lastAppliedSeq,
      initialSync: this.store.progress ?? null,
      heldLongPolls: this.waiters.size,
      ...this.counters,
    };
  }

  close(): void {
    this.closed = true;
    for (const w of this.waiters.due(Number.MAX_SAFE_INTEGER)) w.wake();
  }

  private async answerSync(req: HttpRequestLike): Promise<HttpResponseLike> {
    this.counters.localSyncs++;
    if (req.accessToken) this.lastAccessToken = req.accessToken;
    if (!this.registration && req.accessToken) this.register(req.accessToken);
    const q = parseSyncQuery(req.query, (id) => this.filters.get(id));
    if (q.since !== undefined) q.filter = widenTimelineLimit(q.filter);
    const deadline = Date.now() + q.timeoutMs;
    for (;;) {
      if (this.store.hasNewerThan(q.since) || Date.now() >= deadline) {
        const answer = this.store.answer(q.since, q.filter, { fullState: q.fullState, nowMs: Date.now() });
        // Woken by a change that this client's filter hides: keep holding until the deadline.
        if (!isEmptySyncResponse(answer) || Date.now() >= deadline || q.since === undefined) return jsonResponse(200, answer);
      }
      await this.wait(this.store.waitKey(q.since), deadline - Date.now());
    }
  }

  private async answerMessages(req: HttpRequestLike): Promise<HttpResponseLike> {
    const roomId = decodeURIComponent(MESSAGES.exec(req.path)![1]!);
    const params = new URLSearchParams(req.query);
    const r = this.store.messages(roomId, {
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

  private wait(after: number, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const w: Waiter = { wake: () => { clearTimeout(t); resolve(); } };
      const t = setTimeout(() => { this.waiters.remove(w); resolve(); }, Math.max(0, ms));
      this.waiters.add(after, w);
    });
  }

  private wake(): void {
    for (const w of this.waiters.due(this.store.position)) w.wake();
  }

  private register(accessToken: string): void {
    if (this.registering) return;
    this.registering = true;
    const session = this.o.session();
    const enc = session.encodeRequest({ method: 'GET', path: '/_matrix/client/v3/sync', query: '', accessToken, body: new Uint8Array(0) });
    this.o.persistSession();
    const obs = this.o.radio.endpoint.observe(enc, (res) => this.onNotification(res, enc.sent), {
      responseTimeoutMs: this.o.requestTimeoutMs,
      onEnd: (end) => this.observationEnded(end.reason),
    });
    this.registration = { token: obs.token, sent: enc.sent };
    this.registeredWith = hashToken(accessToken);
    this.persist();
    obs.first.then(
      () => { this.registering = false; session.requestSettled(enc.sent); this.log.info('push sync registered: the gateway holds the long-poll'); },
      (e: unknown) => {
        this.registering = false;
        session.requestFailed(enc.sent);
        this.registration = undefined;
        this.persist();
        this.log.warn({ err: (e as Error).message }, 'push-sync registration failed; the next local /sync tries again');
      },
    );
  }

  private resume(token: Uint8Array): void {
    // The request that registered is not replayed; a copy (not sent) gives the decoding context.
    const enc = this.o.session().encodeRequest({ method: 'GET', path: '/_matrix/client/v3/sync', query: '', body: new Uint8Array(0) });
    this.o.session().requestFailed(enc.sent); // never sent
    this.o.radio.endpoint.resumeObservation(token, (res) => this.onNotification(res, enc.sent), { request: enc, onEnd: (end) => this.observationEnded(end.reason) });
    this.registration = { token, sent: enc.sent };
    this.log.info({ token: toHex(token) }, 'push sync resumed after a restart');
  }

  private observationEnded(reason: string): void {
    this.log.warn({ reason }, 'the push-sync observation ended; registering again');
    this.registration = undefined;
    this.partial = undefined;
    this.persist();
    // After our own refusal, at once (the gateway waits for it to send the delta again); otherwise,
    // or without a token in memory (a restart since), the next local /sync registers.
    const token = this.lastAccessToken;
    if (reason === 'refused' && token) setTimeout(() => { if (!this.registration && !this.closed) this.register(token); }, 0);
  }

  /** false refuses the notification (RST): the gateway drops the registration and, registered anew, starts the delta over. */
  private onNotification(res: { code: number; options: readonly CoapOption[]; payload: Uint8Array }, sent: HostSentRequest): boolean | undefined {
    this.counters.notifications++;
    let part;
    try {
      part = acceptPart(this.partial, res);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'push notification with a bad part option');
      return;
    }
    if (part.kind === 'duplicate') return undefined;
    if (part.kind === 'gap') {
      // A part whose predecessors are not here (they were lost with a state this end no longer
      // has): refuse it, so the gateway does not count the delta as delivered; the next local
      // /sync registers again and the gateway sends the whole delta from part 0.
      this.counters.partGaps++;
      this.log.warn({ expected: part.expected, got: part.got }, 'push-sync part out of order: refused; the delta will be sent again');
      this.partial = undefined;
      this.persist();
      return false;
    }
    if (part.kind === 'partial') {
      this.counters.parts++;
      this.partial = part.partial;
      this.persist(); // before the CoAP ACK leaves
      return;
    }
    this.partial = undefined;
    let decoded;
    try {
      decoded = this.o.session().decodeResponse(part.response, sent);
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
    let applied: boolean;
    try {
      ({ applied } = this.store.applyDelta(deltaFromWire(json, {
        baseTs: (r) => this.store.lastTimelineTs(r),
        missingBase: (r) => {
          this.counters.timestampsApproximated++;
          this.log.error({ room: r }, 'push-sync: a relative timestamp without its base here; the message is kept with the local time');
          return Date.now();
        },
      })));
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'push-sync delta malformed: not applied');
      return;
    }
    if (applied) this.counters.deltasApplied++;
    this.persist(); // before the CoAP ACK leaves: an acknowledged delta is on disk
    this.wake();
  }

  private persist(): void {
    this.o.store?.save({
      version: 1,
      store: this.store.exportState(),
      filters: [...this.filters],
      nextFilter: this.nextFilter,
      owner: this.owner,
      registeredWith: this.registeredWith,
      registration: this.registration ? toHex(this.registration.token) : null,
      partial: this.partial ?? null,
    } satisfies PushSyncState);
  }
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
