/**
 * Which access tokens the host's local API accepts, and whose they are.
 *
 * Contract:
 *  - A token is KNOWN (hash → user id, device id) once the homeserver issued it to a request
 *    that crossed this kit (a 200 answer to POST /login, /register or /refresh carrying
 *    `access_token`) or confirmed it (a 2xx answer to GET /account/whoami made with it).
 *  - A token is FORGOTTEN when the homeserver ends it through this kit: a 200 answer to
 *    POST /logout (that token), /logout/all or /account/deactivate (every token of the user),
 *    /account/password unless `logout_devices: false` (every other token of the user),
 *    DELETE /devices/{id} and POST /delete_devices (the tokens of those devices), /refresh (the
 *    device's previous token); or when the homeserver answers 401 M_UNKNOWN_TOKEN to it.
 *  - A forgotten or refused token is remembered as REFUSED (memory only, for `refusedTtlMs`),
 *    so a client hammering with it costs no airtime.
 *  - Only SHA-256 prefixes (128 bits, hex) of tokens are kept, in memory and on disk; a token
 *    itself is never stored or logged. Refresh tokens are kept the same way, to know whose
 *    new access token a /refresh answer carries without another round trip.
 *  - Bounded: at most `maxTokens` known tokens and refresh tokens (the least recently confirmed
 *    go first) and `maxRefused` refused ones.
 *
 * In authenticate-only mode the host itself issues the tokens (host/local-login.ts: `learn` at a
 * local login, `logout` / `logoutUser` at a local /logout or /logout/all); the rules above still
 * apply to every answer the radio brings back.
 *
 * The state is written through a StateStore (tokens-host.json, mode 0600, in --state-dir) on
 * every change, so a restarted kit still serves its clients' local /sync while the radio is
 * down.
 */
import { createHash } from 'node:crypto';
import type { StateStore } from '../net/radio-stack.ts';
import { systemClock, type Clock } from '../util/clock.ts';
import { utf8 } from '../util/bytes.ts';
import type { HttpRequestLike, HttpResponseLike } from '../matrix/http.ts';
import { isJsonContentType } from '../matrix/http.ts';

/** The 128-bit SHA-256 prefix, hex: the only form in which a token is ever kept. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 32);
}

export interface KnownToken {
  userId: string;
  deviceId: string | null;
  /** When the homeserver last issued or confirmed it (ms since the epoch). */
  confirmedAtMs: number;
}

export interface TokenRegistryState {
  version: 1;
  /** [hash, user id, device id or null, confirmedAtMs] */
  tokens: [string, string, string | null, number][];
  /** Refresh tokens: [hash, user id, device id or null] */
  refresh: [string, string, string | null][];
}

export interface TokenRegistryOptions {
  store?: StateStore<unknown>;
  clock?: Clock;
  maxTokens?: number;
  maxRefused?: number;
  refusedTtlMs?: number;
}

/** Why a token was forgotten, for listeners (push sync drops a registration made with it). */
export interface ForgetEvent { hash: string; userId: string; reason: 'logout' | 'refused' | 'replaced' | 'evicted' }

const V = '(?:r0|v3)';
const LOGIN = new RegExp(`^/_matrix/client/${V}/login$`);
const REGISTER = new RegExp(`^/_matrix/client/${V}/register$`);
const REFRESH = /^\/_matrix\/client\/(?:v1|v3)\/refresh$/;
const WHOAMI = new RegExp(`^/_matrix/client/${V}/account/whoami$`);
const LOGOUT = new RegExp(`^/_matrix/client/${V}/logout$`);
const LOGOUT_ALL = new RegExp(`^/_matrix/client/${V}/logout/all$`);
const DEACTIVATE = new RegExp(`^/_matrix/client/${V}/account/deactivate$`);
const PASSWORD = new RegExp(`^/_matrix/client/${V}/account/password$`);
const DEVICE = new RegExp(`^/_matrix/client/${V}/devices/([^/]+)$`);
const DELETE_DEVICES = new RegExp(`^/_matrix/client/${V}/delete_devices$`);

/** Confirmation times are written at most this often per token (a 2xx answer confirms it). */
const CONFIRM_WRITE_INTERVAL_MS = 3_600_000;

export class TokenRegistry {
  private tokens = new Map<string, KnownToken>();
  private refresh = new Map<string, { userId: string; deviceId: string | null }>();
  private refused = new Map<string, number>();
  private readonly clock: Clock;
  private readonly maxTokens: number;
  private readonly maxRefused: number;
  private readonly refusedTtlMs: number;
  private readonly listeners: ((e: ForgetEvent) => void)[] = [];

  constructor(private readonly o: TokenRegistryOptions = {}) {
    this.clock = o.clock ?? systemClock;
    this.maxTokens = o.maxTokens ?? 256;
    this.maxRefused = o.maxRefused ?? 1024;
    this.refusedTtlMs = o.refusedTtlMs ?? 600_000;
    const saved = o.store?.load() as TokenRegistryState | undefined;
    if (saved?.version === 1 && Array.isArray(saved.tokens) && Array.isArray(saved.refresh)) {
      for (const row of saved.tokens) {
        if (!Array.isArray(row)) continue;
        const [h, u, d, c] = row;
        if (typeof h === 'string' && /^[0-9a-f]{32}$/.test(h) && typeof u === 'string' && (d === null || typeof d === 'string') && typeof c === 'number') {
          this.tokens.set(h, { userId: u, deviceId: d, confirmedAtMs: c });
        }
      }
      for (const row of saved.refresh) {
        if (!Array.isArray(row)) continue;
        const [h, u, d] = row;
        if (typeof h === 'string' && /^[0-9a-f]{32}$/.test(h) && typeof u === 'string' && (d === null || typeof d === 'string')) this.refresh.set(h, { userId: u, deviceId: d });
      }
    }
  }

  onForget(listener: (e: ForgetEvent) => void): void { this.listeners.push(listener); }

  lookup(token: string): KnownToken | undefined { return this.tokens.get(hashToken(token)); }

  /** The homeserver refused this token recently: answer M_UNKNOWN_TOKEN without asking again. */
  isRefused(token: string): boolean {
    const h = hashToken(token);
    const until = this.refused.get(h);
    if (until === undefined) return false;
    if (until > this.clock.now()) return true;
    this.refused.delete(h);
    return false;
  }

  /** Does any known token belong to this user? */
  hasUser(userId: string): boolean {
    for (const t of this.tokens.values()) if (t.userId === userId) return true;
    return false;
  }

  learn(token: string, userId: string, deviceId: string | null): void {
    const h = hashToken(token);
    this.refused.delete(h);
    this.tokens.delete(h); // re-inserted last: Map order is the eviction order
    this.tokens.set(h, { userId, deviceId, confirmedAtMs: this.clock.now() });
    while (this.tokens.size > this.maxTokens) {
      const [oldest, t] = this.tokens.entries().next().value!;
      this.tokens.delete(oldest);
      this.emit({ hash: oldest, userId: t.userId, reason: 'evicted' });
    }
    this.persist();
  }

  /** A 2xx answer to a request made with this token: it is still valid. */
  confirm(token: string): void {
    const h = hashToken(token);
    const t = this.tokens.get(h);
    if (!t || this.clock.now() - t.confirmedAtMs < CONFIRM_WRITE_INTERVAL_MS) return;
    this.tokens.delete(h);
    this.tokens.set(h, { ...t, confirmedAtMs: this.clock.now() });
    this.persist();
  }

  /** The token is ended (a /logout with it): forgotten, and refused from now on. */
  logout(token: string): void {
    this.forgetHashes([hashToken(token)], 'logout');
  }

  /** Every token of the user is ended (/logout/all, /account/deactivate). */
  logoutUser(userId: string): void {
    this.forgetWhere((t) => t.userId === userId, 'logout');
  }

  /** The homeserver answered 401 M_UNKNOWN_TOKEN to it. */
  refuse(token: string): void {
    const h = hashToken(token);
    this.markRefused(h);
    this.forgetHashes([h], 'refused');
  }

  status(): Record<string, unknown> {
    const users = new Set([...this.tokens.values()].map((t) => t.userId));
    return { knownTokens: this.tokens.size, accounts: users.size, refusedTokens: this.refused.size };
  }

  /**
   * Learn from, or forget by, the homeserver's answer to a request this kit carried (the
   * contract in the header). Call it for every carried request, including the host's own.
   */
  observe(req: HttpRequestLike, res: HttpResponseLike): void {
    const token = req.accessToken;
    if (res.status === 401 && token) {
      if (errcodeOf(res) === 'M_UNKNOWN_TOKEN') this.refuse(token);
      return;
    }
    if (res.status < 200 || res.status >= 300) return;
    const m = req.method.toUpperCase();
    const path = req.path;
    const body = m === 'POST' || WHOAMI.test(path) ? jsonOf(res) : undefined;
    if (m === 'POST' && (LOGIN.test(path) || REGISTER.test(path) || REFRESH.test(path))) {
      const access = body?.['access_token'];
      if (typeof access !== 'string' || access === '') return;
      let userId = str(body?.['user_id']);
      let deviceId = str(body?.['device_id']) ?? null;
      if (REFRESH.test(path)) {
        // The answer names no user: the refresh token (seen at login) says whose it is. The
        // device's previous access token ends with it (CS-API "Refreshing access tokens").
        const rt = str(jsonBody(req)?.['refresh_token']);
        const owner = rt ? this.refresh.get(hashToken(rt)) : undefined;
        if (rt) this.refresh.delete(hashToken(rt));
        if (!owner) { this.persist(); return; }
        userId = owner.userId;
        deviceId = owner.deviceId;
        if (deviceId !== null) this.forgetWhere((t) => t.userId === owner.userId && t.deviceId === deviceId, 'replaced');
      }
      if (!userId) return;
      const newRefresh = str(body?.['refresh_token']);
      if (newRefresh) {
        this.refresh.set(hashToken(newRefresh), { userId, deviceId });
        while (this.refresh.size > this.maxTokens) this.refresh.delete(this.refresh.keys().next().value!);
      }
      this.learn(access, userId, deviceId);
      return;
    }
    if (!token) return;
    const known = this.lookup(token);
    if (m === 'GET' && WHOAMI.test(path)) {
      const userId = str(body?.['user_id']);
      if (userId) this.learn(token, userId, str(body?.['device_id']) ?? null);
      return;
    }
    if (m === 'POST' && LOGOUT.test(path)) { this.logout(token); return; }
    if (!known) return;
    const user = known.userId;
    if (m === 'POST' && (LOGOUT_ALL.test(path) || DEACTIVATE.test(path))) { this.logoutUser(user); return; }
    if (m === 'POST' && PASSWORD.test(path)) {
      if (jsonBody(req)?.['logout_devices'] === false) return;
      const keep = hashToken(token);
      this.forgetWhere((t, h) => t.userId === user && h !== keep, 'logout');
      return;
    }
    const dev = m === 'DELETE' ? DEVICE.exec(path) : null;
    if (dev) {
      const deviceId = safeDecode(dev[1]!);
      this.forgetWhere((t) => t.userId === user && t.deviceId === deviceId, 'logout');
      return;
    }
    if (m === 'POST' && DELETE_DEVICES.test(path)) {
      const devices = jsonBody(req)?.['devices'];
      if (Array.isArray(devices)) this.forgetWhere((t) => t.userId === user && t.deviceId !== null && devices.includes(t.deviceId), 'logout');
      return;
    }
    this.confirm(token);
  }

  private forgetWhere(pred: (t: KnownToken, hash: string) => boolean, reason: ForgetEvent['reason']): void {
    this.forgetHashes([...this.tokens].filter(([h, t]) => pred(t, h)).map(([h]) => h), reason);
  }

  private forgetHashes(hashes: string[], reason: ForgetEvent['reason']): void {
    const gone: ForgetEvent[] = [];
    for (const h of hashes) {
      const t = this.tokens.get(h);
      if (reason === 'logout') this.markRefused(h);
      if (!t) continue;
      this.tokens.delete(h);
      gone.push({ hash: h, userId: t.userId, reason });
    }
    if (gone.length === 0) return;
    this.persist();
    for (const e of gone) this.emit(e);
  }

  private markRefused(h: string): void {
    this.refused.delete(h);
    this.refused.set(h, this.clock.now() + this.refusedTtlMs);
    while (this.refused.size > this.maxRefused) this.refused.delete(this.refused.keys().next().value!);
  }

  private emit(e: ForgetEvent): void { for (const l of this.listeners) l(e); }

  private persist(): void {
    this.o.store?.save({
      version: 1,
      tokens: [...this.tokens].map(([h, t]) => [h, t.userId, t.deviceId, t.confirmedAtMs]),
      refresh: [...this.refresh].map(([h, r]) => [h, r.userId, r.deviceId]),
    } satisfies TokenRegistryState);
  }
}

function str(v: unknown): string | undefined { return typeof v === 'string' && v !== '' ? v : undefined; }

function safeDecode(s: string): string { try { return decodeURIComponent(s); } catch { return s; } }

function parseObject(bytes: Uint8Array): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(utf8.decode(bytes));
    return v && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : undefined;
  } catch { return undefined; }
}

function jsonOf(res: HttpResponseLike): Record<string, unknown> | undefined {
  return isJsonContentType(res.contentType) ? parseObject(res.body) : undefined;
}

function jsonBody(req: HttpRequestLike): Record<string, unknown> | undefined {
  return req.body.length > 0 ? parseObject(req.body) : undefined;
}

/** The errcode of a Matrix error answer, if it is one. */
export function errcodeOf(res: HttpResponseLike): string | undefined {
  return str(jsonOf(res)?.['errcode']);
}
