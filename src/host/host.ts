/**
 * `trickle host`: the field kit. A local Matrix CS-API server whose every request crosses
 * the radio link to the gateway. Composition root: radio stack + HTTP server.
 *
 * A local request goes: HTTP checks (http-server.ts: connections, Host, Origin, body) → the
 * access-token check (local-auth.ts, token-registry.ts) → the push-sync store of the token's
 * account (push-sync.ts: one per account) → the radio. Every answer the radio brings back teaches the
 * token registry (logins, logouts, refusals). /.well-known/matrix/client is answered here, and
 * a login's well_known is rewritten, both naming the kit (local-api-policy.ts).
 *
 * Authenticate-only mode (`localLogin`, SECURITY.md "Amateur radio"): every frame is readable on
 * air, so no password or access token may go there. GET/POST /login are answered here against
 * the kit's local accounts, and the tokens the kit issues never leave it (local-login.ts); the
 * Matrix session never sends option 256 (each request runs as the account bound to the kit at
 * the gateway); local /logout and /logout/all forget local tokens only; an unknown token is
 * refused without asking the radio, and a request that would carry a secret (register, refresh,
 * a password in a body: matrix/air-secrets.ts) is refused before anything crosses the air.
 */
import type { Logger } from '../log.ts';
import { TrickleError, isTrickleError } from '../errors.ts';
import { openRadioStack, type RadioStackOptions, type RadioStack, type FrameRecord } from '../net/radio-stack.ts';
import { HostSession } from '../matrix/session.ts';
import { sequenceToken } from '../coap/compact.ts';
import type { StateStore } from '../net/radio-stack.ts';
import { matrixError, longPollTimeoutMs, type HttpRequestLike, type HttpResponseLike } from '../matrix/http.ts';
import { LocalServer, type HttpExchangeRecord, type LocalRequestContext } from './http-server.ts';
import { HostPushSync } from './push-sync.ts';
import { TokenRegistry } from './token-registry.ts';
import { LocalAuth, type LocalAuthOptions } from './local-auth.ts';
import { checkListenAddress, rewriteWellKnown } from './local-api-policy.ts';
import { utf8 } from '../util/bytes.ts';
import { airSecretRefusal } from '../matrix/air-secrets.ts';
import { LocalLogin } from './local-login.ts';
import type { LocalAccount } from './local-accounts.ts';

/** The radio stack's options (device or link, modem, radio, security, …) plus the app's own. */
export interface HostOptions extends RadioStackOptions {
  listenHost: string;
  listenPort: number;
  /** Longest wait for an answer to an ordinary request, over the radio. */
  requestTimeoutMs: number;
  /**
   * A request that would wait longer than this for the duty cycle is refused at once with
   * M_LIMIT_EXCEEDED and retry_after_ms, rather than left hanging (default 30 s).
   */
  maxDutyCycleWaitMs?: number;
  /** Where the Matrix session (handles, txn ids, token state) is persisted, so a restart resumes it. */
  matrixStateStore?: StateStore<unknown>;
  /**
   * Push sync (default on): local clients' /sync is answered from a store that the gateway keeps
   * up to date, so no long-poll crosses the air. Off (`false`): every /sync is carried like any
   * request.
   */
  pushSync?: boolean;
  /** Carry the local clients' typing notifications over the air (default false: answered here with 200 {}). */
  sendTyping?: boolean;
  /** Where the push-sync stores (events, local filters, the registration; one section per account) are persisted. */
  syncStateStore?: StateStore<unknown>;
  /** Accounts with a push-sync store at once (default 16); one more gets 429 M_LIMIT_EXCEEDED on /sync. */
  pushSyncMaxAccounts?: number;
  /** Where the access-token registry (SHA-256 prefixes → user ids) is persisted (tokens-host.json). */
  tokensStore?: StateStore<unknown>;
  /** Listen on a non-loopback address (--allow-lan); without it such a `listenHost` is refused. */
  allowLan?: boolean;
  /** Origins whose web pages may use the local API (--allow-origin), as parseAllowedOrigin returns them. */
  allowedOrigins?: readonly string[];
  /** Host names the local API answers to besides IP literals, localhost and `listenHost` (--allow-host). */
  allowedHostNames?: readonly string[];
  /** Local connections served at once (default 256); one more is answered 429 and closed. */
  maxConnections?: number;
  /** Time a local client has to send a request body once its headers are in (default 30 s): 408 after. */
  receiveTimeoutMs?: number;
  /**
   * Authenticate-only mode: logins are answered by the kit against these local accounts (read at
   * every login: cli/keys.ts reads local-accounts.json), and no secret crosses the air (see the
   * header). Unset: logins and tokens are carried (encrypted in encrypt mode).
   */
  localLogin?: { accounts: () => readonly LocalAccount[] };
  /** Limits on checking unknown access tokens over the radio (local-auth.ts); tests tune them. */
  tokenValidation?: Pick<LocalAuthOptions, 'burst' | 'refillMs' | 'maxQueued' | 'revalidateAfterMs'>;
  logger: Logger;
}

export interface ExchangeReport extends HttpExchangeRecord {
  framesSent: number;
  framesReceived: number;
  /** CoAP messages in their on-air form, before security. */
  compactBytesSent: number;
  compactBytesReceived: number;
  /** What the radio transmitted: compact bytes plus the security envelope. */
  onAirBytesSent: number;
  onAirBytesReceived: number;
  /** What crossed the serial line: on-air bytes plus the modem's framing. */
  wireBytesSent: number;
  wireBytesReceived: number;
  /** On-air size of every message of the exchange, in order (for airtime). */
  onAirMessages: number[];
}

const emptyCounts = (): Omit<ExchangeReport, keyof HttpExchangeRecord> => ({
  framesSent: 0, framesReceived: 0, compactBytesSent: 0, compactBytesReceived: 0,
  onAirBytesSent: 0, onAirBytesReceived: 0, wireBytesSent: 0, wireBytesReceived: 0, onAirMessages: [],
});

export interface Host {
  port: number;
  radio: RadioStack;
  onExchange(listener: (rep: ExchangeReport) => void): void;
  status(): Record<string, unknown>;
  close(): Promise<void>;
}

/** The size of a short answer, for predicting whether the gateway's budget can carry one. */
const ANSWER_ESTIMATE_BYTES = 48;

/** Extra time given to a long poll beyond its own timeout: a round trip of full frames over the air. */
const LONG_POLL_MARGIN_MS = 30_000;
const TYPING_PATH = /^\/_matrix\/client\/(?:r0|v3)\/rooms\/[^/]+\/typing\/[^/]+$/;
const WELL_KNOWN = /^\/\.well-known\/matrix\/client$/;
const LOGIN = /^\/_matrix\/client\/(?:r0|v3)\/login$/;
const LOGOUT = /^\/_matrix\/client\/(?:r0|v3)\/logout$/;
const LOGOUT_ALL = /^\/_matrix\/client\/(?:r0|v3)\/logout\/all$/;
/** Methods a request may be sent again with when a new link session cut it off (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
/** carryOnce: the request was cut off by a new link session (or the end closing). */
const CUT_OFF = Symbol('cut off');

export async function startHost(opts: HostOptions): Promise<Host> {
  const log = opts.logger.child({ component: 'host' });
  // Before anything is opened: a kit reachable from the network must be asked for.
  const { warning } = checkListenAddress(opts.listenHost, opts.allowLan ?? false);
  if (warning) log.warn(warning);
  const radio = await openRadioStack(opts);
  const counters = { requests: 0, failures: 0, dutyCycleRefusals: 0, refusedPaths: 0, typingAnsweredLocally: 0, refusedByTokenCheck: 0, wellKnownAnsweredLocally: 0, secretsRefused: 0, retriedAfterNewSession: 0 };
  // Authenticate-only mode: tokens stay on the kit (see the header).
  const noSecretsOnAir = opts.localLogin !== undefined;
  const newSession = (): HostSession => new HostSession({ maxBodyBytes: opts.maxBodyBytes, ...(noSecretsOnAir ? { sendAccessToken: false } : {}) });
  // Per-exchange byte accounting: frames are attributed by their CoAP token.
  const byToken = new Map<string, Omit<ExchangeReport, keyof HttpExchangeRecord>>();
  let capture: ((tokenHex: string) => void) | undefined;
  // Empty ACKs carry no token: they are attributed through the message id they acknowledge.
  const tokenByMid = new Map<string, string>();
  radio.onFrameRecord((rec: FrameRecord) => {
    if (rec.direction === 'tx' && capture && rec.tokenHex) { capture(rec.tokenHex); capture = undefined; }
    const midKey = `${rec.direction === 'tx' ? 'out' : 'in'}:${rec.mid}`;
    let tokenHex = rec.tokenHex;
    if (tokenHex && rec.type === 0) {
      tokenByMid.set(midKey, tokenHex);
      if (tokenByMid.size > 4096) tokenByMid.delete(tokenByMid.keys().next().value!);
    } else if (!tokenHex) {
      // An empty ACK we send answers a CON we received, and vice versa.
      tokenHex = tokenByMid.get(`${rec.direction === 'tx' ? 'in' : 'out'}:${rec.mid}`) ?? '';
    }
    const acc = byToken.get(tokenHex);
    if (!acc) return;
    acc.onAirMessages.push(rec.onAirBytes);
    if (rec.direction === 'tx') { acc.framesSent++; acc.compactBytesSent += rec.compactBytes; acc.onAirBytesSent += rec.onAirBytes; acc.wireBytesSent += rec.wireBytes; }
    else { acc.framesReceived++; acc.compactBytesReceived += rec.compactBytes; acc.onAirBytesReceived += rec.onAirBytes; acc.wireBytesReceived += rec.wireBytes; }
  });
  const exchangeListeners: ((rep: ExchangeReport) => void)[] = [];
  const tokenOf = new WeakMap<HttpRequestLike, string>();

  // The Matrix session (handles, sticky access token) lives as long as the link session; its
  // client transactions outlive it (see onSessionReset below).
  let session = newSession();
  const saved = opts.matrixStateStore?.load();
  if (saved !== undefined) {
    try {
      const stored = newSession();
      stored.importState(saved);
      if (radio.resumed) session = stored;
      else session.adoptTxns(stored);
    } catch (e) { log.warn({ err: (e as Error).message }, 'Matrix session state unreadable; starting afresh'); }
  }
  const persistSession = (force = false): void => {
    if (opts.matrixStateStore && (force || session.mustPersist)) opts.matrixStateStore.save(session.exportState());
  };
  radio.onSessionReset(() => {
    // Handles and the token belief start afresh with the link session; the client transactions
    // do not: a retry after the new handshake goes out with its first token (sequence numbers go
    // on across link sessions), so the gateway names it with the same homeserver txn id.
    const fresh = newSession();
    fresh.adoptTxns(session);
    session = fresh;
    persistSession(true);
  });

  const carry = async (req: HttpRequestLike): Promise<HttpResponseLike> => {
    counters.requests++;
    // Refuse at once when either end's legal budget cannot carry the exchange soon: ours for the
    // request, the gateway's (mirrored from what we heard of it) for a short answer.
    const ownWaitMs = radio.estimateWaitMs(Math.min(req.body.length + 16, radio.maxFrameLen));
    const peerWaitMs = radio.estimatePeerWaitMs(ANSWER_ESTIMATE_BYTES);
    const waitMs = Math.max(ownWaitMs, peerWaitMs);
    if (waitMs > (opts.maxDutyCycleWaitMs ?? 30_000)) {
      counters.dutyCycleRefusals++;
      const whose = ownWaitMs >= peerWaitMs ? "this field kit's radio" : "the gateway's radio";
      log.warn({ code: 'ERR_DUTY_CYCLE', waitMs, path: req.path, whose }, 'request refused: duty-cycle budget spent');
      return matrixError(429, 'M_LIMIT_EXCEEDED',
        `trickle host: ${whose} has spent its legal duty-cycle budget; the exchange can go in ${Math.ceil(waitMs / 1000)} s`,
        { retry_after_ms: Math.ceil(waitMs) });
    }
    const lp = longPollTimeoutMs(req);
    const responseTimeoutMs = lp === undefined ? opts.requestTimeoutMs : lp + LONG_POLL_MARGIN_MS;
    // A new link session cuts off what was in flight (a gateway that lost our session answers
    // UNKNOWN_SESSION to it, and the kit re-establishes). An idempotent request (RFC 9110
    // §9.2.2; a Matrix PUT is one by its txn id, which keeps its token and so its homeserver txn
    // id) goes again on the new session, at most twice; a POST may have been performed, so the
    // client is told and decides.
    for (let attempt = 1; ; attempt++) {
      const before = session;
      const res = await carryOnce(req, responseTimeoutMs);
      if (res !== CUT_OFF) return res;
      const idempotent = IDEMPOTENT.has(req.method.toUpperCase());
      if (before !== session && idempotent && attempt < 3) {
        counters.retriedAfterNewSession++;
        log.info({ path: req.path, attempt }, 'a new link session cut off the request: sending it again on the new session');
        continue;
      }
      counters.failures++;
      if (before === session) return matrixError(502, 'M_UNKNOWN', 'trickle host: ERR_COAP_CLOSED: the field kit closed its radio link with this request pending');
      log.warn({ code: 'ERR_COAP_CLOSED', path: req.path, method: req.method }, 'request cut off by a new link session');
      return matrixError(502, 'M_UNKNOWN', idempotent
        ? 'trickle host: ERR_COAP_CLOSED: the link session with the gateway was re-established again and again while this request was under way; try again'
        : `trickle host: ERR_COAP_CLOSED: the link session with the gateway was re-established while this ${req.method} was under way, so it may or may not have been performed; check before trying again`);
    }
  };

  const carryOnce = async (req: HttpRequestLike, responseTimeoutMs: number): Promise<HttpResponseLike | typeof CUT_OFF> => {
    try {
      const current = session;
      const res = await current.carry(req, async (enc) => {
        persistSession(); // before anything leaves: a restart must never reuse what was sent
        capture = (tokenHex) => {
          if (!tokenOf.has(req)) {
            tokenOf.set(req, tokenHex);
            byToken.set(tokenHex, emptyCounts());
          }
        };
        // A client's retry of the same transaction reuses the first attempt's token, so the
        // gateway derives the same homeserver txn id and the event is never posted twice.
        let token: Uint8Array | undefined;
        if (enc.txnKey !== undefined) {
          const seq = current.txnSequence(enc.txnKey);
          if (seq === undefined) {
            current.rememberTxn(enc.txnKey, radio.endpoint.nextSequence);
            persistSession(true);
          } else {
            token = sequenceToken(seq);
          }
        }
        const pending = radio.request(enc, { responseTimeoutMs, ...(token ? { token } : {}) });
        capture = undefined;
        return pending;
      });
      if (current === session) persistSession();
      return res;
    } catch (e) {
      if (isTrickleError(e, 'ERR_MATRIX_PATH')) {
        counters.refusedPaths++;
        const prefix = e.detail?.['reason'] === 'prefix';
        return matrixError(prefix ? 404 : 400, 'M_UNRECOGNIZED', `trickle host: ${e.message}`);
      }
      if (isTrickleError(e, 'ERR_PATH_ENUM') || isTrickleError(e, 'ERR_MATRIX_REQUEST')) {
        return matrixError(400, 'M_UNRECOGNIZED', `trickle host cannot carry this request: ${e.message}`);
      }
      if (isTrickleError(e, 'ERR_COAP_CLOSED')) return CUT_OFF;
      counters.failures++;
      if (isTrickleError(e, 'ERR_COAP_TIMEOUT')) {
        log.warn({ code: e.code, path: req.path }, 'no answer from the gateway');
        return matrixError(504, 'M_UNKNOWN', `trickle host: no answer from the gateway over the radio link (${e.message}); check that trickle gateway is running and in range`);
      }
      if (isTrickleError(e)) {
        log.warn({ code: e.code, path: req.path, err: e.message }, 'request failed');
        return matrixError(502, 'M_UNKNOWN', `trickle host: ${e.code}: ${e.message}`);
      }
      throw e;
    }
  };

  // Which access tokens are good, and whose: every answer the radio brings back teaches it.
  const registry = new TokenRegistry(opts.tokensStore ? { store: opts.tokensStore } : {});
  const carryObserved = async (req: HttpRequestLike): Promise<HttpResponseLike> => {
    const res = await carry(req);
    registry.observe(req, res);
    return res;
  };
  const auth = new LocalAuth({ registry, carry, logger: opts.logger, ...(opts.tokenValidation ?? {}), ...(noSecretsOnAir ? { validateOverRadio: false } : {}) });
  const localLogin = opts.localLogin ? new LocalLogin({ accounts: opts.localLogin.accounts, carry, registry, logger: opts.logger }) : undefined;

  // Push sync (default): local /sync from the store, fed by the gateway's pushes.
  const push = opts.pushSync === false ? undefined : new HostPushSync({
    radio, session: () => session, persistSession: (force?: boolean) => persistSession(force), carry: carryObserved, logger: opts.logger,
    requestTimeoutMs: opts.requestTimeoutMs,
    ...(opts.syncStateStore ? { store: opts.syncStateStore } : {}),
    ...(opts.pushSyncMaxAccounts !== undefined ? { maxAccounts: opts.pushSyncMaxAccounts } : {}),
    hasTokens: (userId) => registry.hasUser(userId),
    tokenRefused: (token) => registry.refuse(token),
  });
  if (push) registry.onForget((e) => push.tokenForgotten(e.hash, e.userId, e.reason));

  const handle = async (incoming: HttpRequestLike, ctx: LocalRequestContext): Promise<HttpResponseLike> => {
    let req = incoming;
    if (req.method === 'GET' && WELL_KNOWN.test(req.path)) {
      counters.wellKnownAnsweredLocally++;
      return json(200, rewriteWellKnown({}, ctx.baseUrl));
    }
    const logout = req.method === 'POST' && (LOGOUT.test(req.path) || LOGOUT_ALL.test(req.path));
    if (localLogin) {
      if (LOGIN.test(req.path) && req.method === 'GET') return localLogin.flows();
      if (LOGIN.test(req.path) && req.method === 'POST') return localLogin.login(req, ctx.baseUrl);
      const secret = logout ? undefined : airSecretRefusal(req);
      if (secret !== undefined) {
        counters.secretsRefused++;
        return matrixError(403, 'M_FORBIDDEN', `trickle host (authenticate-only mode, nothing secret may cross the air): ${secret}`);
      }
    }
    // The token check comes before anything local answers or anything crosses the radio.
    const checked = await auth.check(req, ctx.invalidCredential);
    if (checked.kind === 'deny') { counters.refusedByTokenCheck++; return checked.response; }
    if (checked.kind === 'answered') return checked.response;
    if (localLogin) {
      // The kit's own tokens end here; the gateway's bound device goes on.
      if (logout && req.accessToken && checked.userId !== undefined) {
        if (LOGOUT_ALL.test(req.path)) registry.logoutUser(checked.userId); else registry.logout(req.accessToken);
        return json(200, {});
      }
      // A token the kit did not issue, on an endpoint that needs none: it does not run as the bound account.
      if (req.accessToken && checked.userId === undefined) {
        const { accessToken: _dropped, ...rest } = req;
        req = rest;
      }
    }
    if (push?.handles(req, checked.userId)) return push.answer(req, checked.userId!);
    // Our own typing notifications stay here unless asked for: a client re-sends them every few
    // seconds while its user types, which would cost more airtime than the message itself.
    if (!opts.sendTyping && req.method === 'PUT' && TYPING_PATH.test(req.path)) {
      counters.typingAnsweredLocally++;
      return { status: 200, contentType: 'application/json', body: new TextEncoder().encode('{}') };
    }
    const res = await carryObserved(req);
    push?.afterCarry(req, res, checked.userId ?? (req.accessToken ? registry.lookup(req.accessToken)?.userId : undefined));
    if (req.method === 'POST' && LOGIN.test(req.path)) return withOwnWellKnown(res, ctx.baseUrl);
    return res;
  };

  const server = new LocalServer({
    host: opts.listenHost, port: opts.listenPort, maxRequestBodyBytes: opts.maxBodyBytes,
    logger: log, carry: handle,
    ...(opts.allowedOrigins ? { allowedOrigins: opts.allowedOrigins } : {}),
    ...(opts.allowedHostNames ? { allowedHostNames: opts.allowedHostNames } : {}),
    ...(opts.maxConnections !== undefined ? { maxConnections: opts.maxConnections } : {}),
    ...(opts.receiveTimeoutMs !== undefined ? { receiveTimeoutMs: opts.receiveTimeoutMs } : {}),
    status: () => status(),
    onExchange: (rec, req) => {
      const tokenHex = tokenOf.get(req);
      const acc = tokenHex ? byToken.get(tokenHex) : undefined;
      if (tokenHex) setTimeout(() => byToken.delete(tokenHex), 60_000).unref();
      const rep: ExchangeReport = { ...rec, ...(acc ?? emptyCounts()) };
      for (const l of exchangeListeners) l(rep);
    },
  });
  let port: number;
  try {
    port = await server.listen();
  } catch (e) {
    await radio.close();
    throw new TrickleError('ERR_CONFIG', 'host', (e as Error).message);
  }
  log.info({ port, device: radio.link.name, allowedOrigins: opts.allowedOrigins ?? [] }, `Matrix clients can use http://${opts.listenHost.includes(':') ? `[${opts.listenHost}]` : opts.listenHost}:${port} as their homeserver`);

  const status = (): Record<string, unknown> => ({
    role: 'host', requests: { ...counters }, localApi: { ...server.stats(), tokens: { ...registry.status(), ...auth.status() } },
    session: session.status(), pushSync: push?.status() ?? null, radio: radio.status(),
    ...(localLogin ? { localLogin: localLogin.status() } : {}),
  });
  return {
    port, radio,
    onExchange: (l) => { exchangeListeners.push(l); },
    status,
    async close() {
      push?.close();
      await server.close();
      await radio.close();
    },
  };
}

function json(status: number, v: unknown): HttpResponseLike {
  return { status, contentType: 'application/json', body: utf8.encode(JSON.stringify(v)) };
}

/** A login answer whose well_known names the kit (local-api-policy.ts rewriteWellKnown). */
function withOwnWellKnown(res: HttpResponseLike, baseUrl: string): HttpResponseLike {
  if (res.status !== 200) return res;
  let body: Record<string, unknown>;
  try { body = JSON.parse(utf8.decode(res.body)) as Record<string, unknown>; } catch { return res; }
  if (!body || typeof body !== 'object' || body['well_known'] === undefined) return res;
  return { ...res, body: utf8.encode(JSON.stringify({ ...body, well_known: rewriteWellKnown(body['well_known'], baseUrl) })) };
}
