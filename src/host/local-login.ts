/**
 * Logins answered by the field kit itself (authenticate-only mode, SECURITY.md "Amateur radio"):
 * on amateur bands every frame is readable by anyone, so the password a local client types must
 * never cross the air, and neither may an access token. The gateway holds the access token of
 * the Matrix account bound to this kit (gateway/bound-accounts.ts); the kit holds a password
 * verifier for that account (local-accounts.ts) and issues tokens of its own that never leave it.
 *
 * Contract:
 *  - GET /login advertises m.login.password only.
 *  - POST /login accepts m.login.password with identifier m.id.user (the localpart or the full
 *    user id) or the deprecated top-level `user`. Anything else: 400 M_UNKNOWN. An account not
 *    set on the kit or a wrong password: 403 M_FORBIDDEN, and nothing crosses the air. Failed
 *    attempts come from a bucket (`failureBurst`, one more every `failureRefillMs`); when it is
 *    empty the answer is 429 M_LIMIT_EXCEEDED with retry_after_ms before any password is checked,
 *    so a local program cannot guess at scrypt speed for long.
 *  - A good password: the kit asks the gateway over the air which account is bound to it
 *    (GET /account/whoami with no token on air: the gateway runs it as the bound account). A
 *    different user: 403 M_FORBIDDEN naming both; no binding (the gateway's 401): 403
 *    M_FORBIDDEN with the gateway's message, which names the command that binds the kit; no
 *    answer or no budget: the carry's own answer (504, 429) is passed on.
 *  - Then a random local access token (256 bits) is registered in the token registry for that
 *    user and the bound device, and the answer is {user_id, access_token, device_id (the bound
 *    device: every local login of the kit shares it), home_server, well_known naming the kit}.
 *    No refresh token is issued; the token lasts until a local /logout or /logout/all
 *    (TokenRegistry.logout / logoutUser), or until the gateway answers M_UNKNOWN_TOKEN (the
 *    binding or its token at the homeserver ended), like any other token.
 *  - The password and the tokens are never logged.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.ts';
import { systemClock, type Clock } from '../util/clock.ts';
import { utf8 } from '../util/bytes.ts';
import { isJsonContentType, matrixError, type HttpRequestLike, type HttpResponseLike } from '../matrix/http.ts';
import { rewriteWellKnown } from './local-api-policy.ts';
import { checkPassword, type LocalAccount } from './local-accounts.ts';
import type { TokenRegistry } from './token-registry.ts';

export interface LocalLoginOptions {
  /** The kit's local accounts, read at every login (so `trickle keys local-account` acts on a running kit). */
  accounts: () => readonly LocalAccount[];
  /** Carry a request over the radio (the whoami that asks for the bound account). */
  carry: (req: HttpRequestLike) => Promise<HttpResponseLike>;
  registry: TokenRegistry;
  logger: Logger;
  clock?: Clock;
  /** Failed logins allowed at once (default 5). */
  failureBurst?: number;
  /** One more failed login allowed every this many ms (default 10 000). */
  failureRefillMs?: number;
}

const WHOAMI_PATH = '/_matrix/client/v3/account/whoami';
const json = (status: number, v: unknown): HttpResponseLike => ({ status, contentType: 'application/json', body: utf8.encode(JSON.stringify(v)) });

export class LocalLogin {
  private readonly clock: Clock;
  private readonly burst: number;
  private readonly refillMs: number;
  private bucket: number;
  private bucketAtMs: number;
  private readonly log: Logger;
  readonly counters = { logins: 0, refused: 0, limited: 0, notBound: 0 };

  constructor(private readonly o: LocalLoginOptions) {
    this.clock = o.clock ?? systemClock;
    this.burst = o.failureBurst ?? 5;
    this.refillMs = o.failureRefillMs ?? 10_000;
    this.bucket = this.burst;
    this.bucketAtMs = this.clock.now();
    this.log = o.logger.child({ component: 'local-login' });
  }

  /** GET /login. */
  flows(): HttpResponseLike {
    return json(200, { flows: [{ type: 'm.login.password' }] });
  }

  /** POST /login; `baseUrl` is the kit's own URL as the client reached it (for well_known). */
  async login(req: HttpRequestLike, baseUrl: string): Promise<HttpResponseLike> {
    let body: Record<string, unknown>;
    try {
      if (req.contentType !== undefined && !isJsonContentType(req.contentType)) throw new Error('not JSON');
      const v: unknown = JSON.parse(utf8.decode(req.body));
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
      body = v as Record<string, unknown>;
    } catch {
      return matrixError(400, 'M_NOT_JSON', 'Content not JSON.');
    }
    if (body['type'] !== 'm.login.password') {
      return matrixError(400, 'M_UNKNOWN', `trickle host: this field kit accepts m.login.password only (authenticate-only mode: logins are checked on the kit), not ${JSON.stringify(body['type']).slice(0, 60)}`);
    }
    const identifier = body['identifier'];
    let user: unknown = body['user'];
    if (identifier !== undefined) {
      const id = identifier as Record<string, unknown> | null;
      if (!id || typeof id !== 'object' || id['type'] !== 'm.id.user') return matrixError(400, 'M_UNKNOWN', 'trickle host: only the m.id.user identifier is supported');
      user = id['user'];
    }
    const password = body['password'];
    if (typeof user !== 'string' || user === '' || typeof password !== 'string') return matrixError(400, 'M_BAD_JSON', 'user and password must be strings');

    if (!this.takeAttempt()) {
      this.counters.limited++;
      const retryAfterMs = Math.max(1_000, this.bucketAtMs + this.refillMs - this.clock.now());
      return matrixError(429, 'M_LIMIT_EXCEEDED', `trickle host: too many failed logins; try again in ${Math.ceil(retryAfterMs / 1000)} s`, { retry_after_ms: retryAfterMs });
    }
    // Reserved before the check (so attempts made at once cannot all pass), given back on success.
    this.bucket--;
    const account = this.find(user);
    if (!account || !(await checkPassword(password, account.scrypt))) {
      this.counters.refused++;
      this.log.warn({ user: account?.userId ?? null }, 'local login refused: unknown account or wrong password');
      return matrixError(403, 'M_FORBIDDEN', 'Invalid username or password');
    }

    this.bucket = Math.min(this.burst, this.bucket + 1);
    // The password is good. Which account is bound to this kit at the gateway? The request carries
    // the token about to be issued, which in this mode never goes on air (session.ts NO SECRETS ON
    // AIR): the gateway runs it as the bound account.
    const token = `trk_${randomBytes(32).toString('base64url')}`;
    const who = await this.o.carry({ method: 'GET', path: WHOAMI_PATH, query: '', accessToken: token, body: new Uint8Array(0) });
    if (who.status === 401) {
      this.counters.notBound++;
      const why = errorText(who) ?? 'no Matrix account is bound to this field kit';
      this.log.warn({ user: account.userId }, 'local login refused: the gateway has no account bound to this kit');
      return matrixError(403, 'M_FORBIDDEN', `trickle host: the password is right, but the gateway does not act for this kit: ${why}`);
    }
    if (who.status !== 200) return who;
    let bound: Record<string, unknown> = {};
    try { bound = JSON.parse(utf8.decode(who.body)) as Record<string, unknown>; } catch { /* checked below */ }
    const boundUser = bound['user_id'];
    if (typeof boundUser !== 'string') return matrixError(502, 'M_UNKNOWN', 'trickle host: the gateway\'s whoami answer names no user');
    if (boundUser !== account.userId) {
      this.counters.notBound++;
      this.log.warn({ user: account.userId, bound: boundUser }, 'local login refused: the kit is bound to another account at the gateway');
      return matrixError(403, 'M_FORBIDDEN', `trickle host: this field kit is bound at the gateway to ${boundUser}, not ${account.userId}; log in as ${boundUser}, or ask the gateway operator to bind ${account.userId} (trickle keys bind)`);
    }
    const deviceId = typeof bound['device_id'] === 'string' ? bound['device_id'] : null;
    this.o.registry.learn(token, account.userId, deviceId);
    this.counters.logins++;
    this.log.info({ user: account.userId }, 'local login: token issued by the field kit');
    return json(200, {
      user_id: account.userId,
      access_token: token,
      device_id: deviceId ?? 'TRICKLE',
      home_server: account.userId.slice(account.userId.indexOf(':') + 1),
      well_known: rewriteWellKnown({}, baseUrl),
    });
  }

  status(): Record<string, unknown> {
    return { ...this.counters };
  }

  /** The local account a login names: a full user id, or a localpart that only one account has. */
  private find(user: string): LocalAccount | undefined {
    const accounts = this.o.accounts();
    const u = user.toLowerCase();
    if (u.startsWith('@')) return accounts.find((a) => a.userId.toLowerCase() === u);
    const byLocalpart = accounts.filter((a) => a.userId.slice(1, a.userId.indexOf(':')).toLowerCase() === u);
    return byLocalpart.length === 1 ? byLocalpart[0] : undefined;
  }

  /** Refill the failure bucket; false when it is empty (login() takes one per attempt and gives it back on success). */
  private takeAttempt(): boolean {
    const now = this.clock.now();
    const refills = Math.floor((now - this.bucketAtMs) / this.refillMs);
    if (refills > 0) {
      this.bucket = Math.min(this.burst, this.bucket + refills);
      this.bucketAtMs = this.bucket === this.burst ? now : this.bucketAtMs + refills * this.refillMs;
    }
    return this.bucket > 0;
  }
}

function errorText(res: HttpResponseLike): string | undefined {
  try {
    const e = (JSON.parse(utf8.decode(res.body)) as { error?: unknown }).error;
    return typeof e === 'string' ? e : undefined;
  } catch { return undefined; }
}
