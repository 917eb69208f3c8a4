/**
 * The access-token check of the host's local Matrix API: every request is checked here before
 * anything local answers it or anything crosses the radio (DESIGN.md: "the host's local API
 * checks access tokens like a homeserver").
 *
 * Contract of check():
 *  - 'open' endpoints (local-api-policy.ts tokenRequirement) pass, token or not, unchecked.
 *  - A malformed credential (two tokens, a non-Bearer Authorization) on any other endpoint:
 *    401 M_MISSING_TOKEN, as Synapse answers it.
 *  - No token: 401 M_MISSING_TOKEN where one is required; 'optional' endpoints pass.
 *  - A token the homeserver refused recently (TokenRegistry.isRefused): 401 M_UNKNOWN_TOKEN,
 *    soft_logout false, at once.
 *  - A known token: passes, with its user id (the account whose store it may read).
 *  - An unknown token is validated ONCE by carrying GET /_matrix/client/v3/account/whoami with it
 *    over the radio. Validations of the same token are coalesced; at most one is in flight and
 *    `maxQueued` wait behind it; they are rate-limited (a bucket of `burst`, refilled one every
 *    `refillMs`: 3 a minute by default), since each costs airtime and a local program could
 *    otherwise spend the kit's duty cycle by inventing tokens. Over the limit: 429
 *    M_LIMIT_EXCEEDED with retry_after_ms. The homeserver's 401 is passed to the client
 *    (M_UNKNOWN_TOKEN, soft_logout as it said, false if it said nothing) and cached as refused;
 *    any other failure (no answer over the radio, duty cycle spent) is passed through and not
 *    cached: the client may retry, and nothing is served meanwhile (fail closed).
 *  - A known token last confirmed more than `revalidateAfterMs` ago is still accepted, and
 *    validated again in the background (same limits): a token revoked from another device stops
 *    reading the local store once the radio carries one whoami.
 *  - A GET /account/whoami with an unknown token IS its own validation: its answer is returned
 *    (`answered`), not carried twice.
 *  - Authenticate-only mode (`validateOverRadio: false`): the kit issued every good token itself
 *    (local-login.ts), and no token crosses the air, so the radio could not check one anyway: an
 *    unknown token is 401 M_UNKNOWN_TOKEN at once and known tokens are never revalidated.
 */
import type { Logger } from '../log.ts';
import { systemClock, type Clock } from '../util/clock.ts';
import { matrixError, type HttpRequestLike, type HttpResponseLike } from '../matrix/http.ts';
import { utf8 } from '../util/bytes.ts';
import { tokenRequirement } from './local-api-policy.ts';
import { errcodeOf, hashToken, type TokenRegistry } from './token-registry.ts';

export type AuthResult =
  /** Go on; `userId` when the request carries a known token. */
  | { kind: 'allow'; userId?: string }
  /** Answer with `response`; nothing crosses the radio (or the validation already did). */
  | { kind: 'deny'; response: HttpResponseLike }
  /** The request was itself the validation (GET whoami): this is its answer. */
  | { kind: 'answered'; response: HttpResponseLike };

export interface LocalAuthOptions {
  registry: TokenRegistry;
  /** Carry a request over the radio (the validation's GET /account/whoami). */
  carry: (req: HttpRequestLike) => Promise<HttpResponseLike>;
  logger: Logger;
  clock?: Clock;
  /** Validations allowed at once from a full bucket (default 3). */
  burst?: number;
  /** One more validation allowed every this many ms (default 20 000: 3 a minute). */
  refillMs?: number;
  /** Validations waiting behind the one in flight (default 4). */
  maxQueued?: number;
  /** Confirm a known token again after this long (default 24 h). */
  revalidateAfterMs?: number;
  /** Check unknown tokens with a whoami over the radio (default true); false in authenticate-only mode. */
  validateOverRadio?: boolean;
}

type Outcome =
  | { kind: 'valid'; userId: string; response: HttpResponseLike }
  | { kind: 'refused'; response: HttpResponseLike }
  | { kind: 'unavailable'; response: HttpResponseLike };

const WHOAMI_PATH = '/_matrix/client/v3/account/whoami';
const WHOAMI = /^\/_matrix\/client\/(?:r0|v3)\/account\/whoami$/;
const jsonResponse = (status: number, v: unknown): HttpResponseLike => ({ status, contentType: 'application/json', body: utf8.encode(JSON.stringify(v)) });

export class LocalAuth {
  private readonly clock: Clock;
  private readonly burst: number;
  private readonly refillMs: number;
  private readonly maxQueued: number;
  private readonly revalidateAfterMs: number;
  private bucket: number;
  private bucketAtMs: number;
  private readonly inflight = new Map<string, Promise<Outcome>>();
  private busy = false;
  private readonly queue: (() => void)[] = [];
  /** Background revalidations that could not reach the homeserver: not retried before this. */
  private readonly revalidateNotBefore = new Map<string, number>();
  private readonly log: Logger;
  readonly counters = { missingToken: 0, unknownToken: 0, validations: 0, validationsLimited: 0, revalidations: 0 };

  constructor(private readonly o: LocalAuthOptions) {
    this.clock = o.clock ?? systemClock;
    this.burst = o.burst ?? 3;
    this.refillMs = o.refillMs ?? 20_000;
    this.maxQueued = o.maxQueued ?? 4;
    this.revalidateAfterMs = o.revalidateAfterMs ?? 86_400_000;
    this.bucket = this.burst;
    this.bucketAtMs = this.clock.now();
    this.log = o.logger.child({ component: 'local-auth' });
  }

  /** `invalidCredential`: why the request's credential is malformed (extractAccessToken), if it is. */
  async check(req: HttpRequestLike, invalidCredential?: string): Promise<AuthResult> {
    const need = tokenRequirement(req.method, req.path);
    if (need === 'open') return { kind: 'allow' };
    if (invalidCredential !== undefined) {
      this.counters.missingToken++;
      return { kind: 'deny', response: matrixError(401, 'M_MISSING_TOKEN', `Invalid access token: ${invalidCredential}`) };
    }
    const token = req.accessToken;
    if (!token) {
      if (need === 'optional') return { kind: 'allow' };
      this.counters.missingToken++;
      return { kind: 'deny', response: matrixError(401, 'M_MISSING_TOKEN', 'Missing access token') };
    }
    const { registry } = this.o;
    if (registry.isRefused(token)) {
      this.counters.unknownToken++;
      return { kind: 'deny', response: unknownToken() };
    }
    const known = registry.lookup(token);
    const overRadio = this.o.validateOverRadio ?? true;
    if (known) {
      if (overRadio && this.clock.now() - known.confirmedAtMs > this.revalidateAfterMs) this.revalidate(token);
      return { kind: 'allow', userId: known.userId };
    }
    if (!overRadio) {
      this.counters.unknownToken++;
      return { kind: 'deny', response: unknownToken() };
    }
    const outcome = await this.validate(token);
    if (outcome === 'limited') {
      this.counters.validationsLimited++;
      const retryAfterMs = this.retryAfterMs();
      return { kind: 'deny', response: matrixError(429, 'M_LIMIT_EXCEEDED', `trickle host: too many new access tokens to check with the homeserver (each check costs airtime); try again in ${Math.ceil(retryAfterMs / 1000)} s`, { retry_after_ms: retryAfterMs }) };
    }
    if (outcome.kind === 'refused') {
      this.counters.unknownToken++;
      return { kind: 'deny', response: outcome.response };
    }
    if (outcome.kind === 'unavailable') return { kind: 'deny', response: outcome.response };
    if (req.method.toUpperCase() === 'GET' && WHOAMI.test(req.path) && req.query === '') return { kind: 'answered', response: outcome.response };
    return { kind: 'allow', userId: outcome.userId };
  }

  status(): Record<string, unknown> {
    return { ...this.counters, validationInFlight: this.busy, validationsQueued: this.queue.length };
  }

  private revalidate(token: string): void {
    const h = hashToken(token);
    if ((this.revalidateNotBefore.get(h) ?? 0) > this.clock.now()) return;
    const v = this.validate(token);
    if (v === 'limited') return; // the next use tries again
    this.counters.revalidations++;
    void v.then((o) => {
      if (o.kind === 'unavailable') this.revalidateNotBefore.set(h, this.clock.now() + 600_000);
      else this.revalidateNotBefore.delete(h);
      if (this.revalidateNotBefore.size > 1024) this.revalidateNotBefore.delete(this.revalidateNotBefore.keys().next().value!);
    });
  }

  private validate(token: string): Promise<Outcome> | 'limited' {
    const h = hashToken(token);
    const pending = this.inflight.get(h);
    if (pending) return pending;
    if (this.queue.length >= this.maxQueued || !this.takeFromBucket()) return 'limited';
    const p = this.exclusive(() => this.whoami(token));
    this.inflight.set(h, p);
    void p.finally(() => this.inflight.delete(h));
    return p;
  }

  private async whoami(token: string): Promise<Outcome> {
    this.counters.validations++;
    const req: HttpRequestLike = { method: 'GET', path: WHOAMI_PATH, query: '', accessToken: token, body: new Uint8Array(0) };
    let res: HttpResponseLike;
    try {
      res = await this.o.carry(req);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'access token check failed');
      return { kind: 'unavailable', response: matrixError(502, 'M_UNKNOWN', `trickle host could not check the access token with the homeserver: ${(e as Error).message}`) };
    }
    this.o.registry.observe(req, res); // learns the user, or remembers the refusal
    if (res.status >= 200 && res.status < 300) {
      const known = this.o.registry.lookup(token);
      if (known) {
        this.log.debug({ user: known.userId }, 'access token confirmed by the homeserver');
        return { kind: 'valid', userId: known.userId, response: res };
      }
      return { kind: 'unavailable', response: matrixError(502, 'M_UNKNOWN', 'trickle host could not check the access token: the homeserver\'s whoami answer names no user') };
    }
    if (res.status === 401) {
      this.o.registry.refuse(token); // M_UNKNOWN_TOKEN or not: a 401 to whoami means the token is no good
      this.log.info({ code: errcodeOf(res) ?? 'none' }, 'access token refused by the homeserver');
      return { kind: 'refused', response: asUnknownToken(res) };
    }
    return { kind: 'unavailable', response: res };
  }

  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.busy) await new Promise<void>((resolve) => this.queue.push(resolve));
    this.busy = true;
    try {
      return await fn();
    } finally {
      const next = this.queue.shift();
      if (next) next(); else this.busy = false;
    }
  }

  private takeFromBucket(): boolean {
    const now = this.clock.now();
    const refills = Math.floor((now - this.bucketAtMs) / this.refillMs);
    if (refills > 0) {
      this.bucket = Math.min(this.burst, this.bucket + refills);
      this.bucketAtMs = this.bucket === this.burst ? now : this.bucketAtMs + refills * this.refillMs;
    }
    if (this.bucket <= 0) return false;
    this.bucket--;
    return true;
  }

  private retryAfterMs(): number {
    if (this.bucket > 0) return 1_000; // the queue was full: the one in flight ends soon
    return Math.max(1_000, this.bucketAtMs + this.refillMs - this.clock.now());
  }
}

function unknownToken(): HttpResponseLike {
  return matrixError(401, 'M_UNKNOWN_TOKEN', 'Unknown access token', { soft_logout: false });
}

/** The homeserver's 401 as the client must see it: M_UNKNOWN_TOKEN, soft_logout as it said. */
function asUnknownToken(res: HttpResponseLike): HttpResponseLike {
  let body: Record<string, unknown> = {};
  try { body = JSON.parse(utf8.decode(res.body)) as Record<string, unknown>; } catch { /* keep {} */ }
  if (body['errcode'] !== 'M_UNKNOWN_TOKEN') return unknownToken();
  return jsonResponse(401, { ...body, soft_logout: body['soft_logout'] === true });
}
