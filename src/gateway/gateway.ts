/**
 * `trickle gateway`: takes Matrix requests from the radio link, performs them against the
 * homeserver, and sends the answers back. Composition root: radio stack + homeserver client.
 *
 * Authenticate-only mode (`boundAccounts`, SECURITY.md "Amateur radio"): every frame is readable
 * on air, so no secret may be in one. Each request runs with the access token of the Matrix
 * account bound to the sending kit's authenticated static key (radio.peerStatic(); `trickle keys
 * bind`), looked up at every request and every push-sync poll. A request that carries an access
 * token, logs in, logs out, registers, refreshes or holds a password (matrix/air-secrets.ts) is
 * answered 403 M_FORBIDDEN and never performed; a kit with no binding gets 401 M_UNKNOWN_TOKEN
 * saying which command binds it.
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from '../log.ts';
import { TrickleError, isTrickleError } from '../errors.ts';
import { openRadioStack, type RadioStackOptions, type RadioStack } from '../net/radio-stack.ts';
import { GatewaySession } from '../matrix/session.ts';
import { randomBytes } from 'node:crypto';
import type { StateStore, CoapSessionState } from '../net/radio-stack.ts';
import type { Modem } from '../modem/modem.ts';
import type { SecureLinkSnapshot } from '../secure/secure-link.ts';
import { openPeerTable, type PeerTable } from '../net/peer-table.ts';
import { formatAddress } from '../net/link-address.ts';
import { matrixError } from '../matrix/http.ts';
import { HomeserverClient } from './homeserver-client.ts';
import { SyncPusher } from './sync-pusher.ts';
import { TxnNamespaces } from './txn-namespace.ts';
import { toHex } from '../util/bytes.ts';
import { getOptions } from '../coap/message.ts';
import { Opt } from '../coap/numbers.ts';
import { airSecretRefusal } from '../matrix/air-secrets.ts';
import { fingerprint } from '../secure/fingerprint.ts';
import { throttle } from '../util/throttle.ts';
import { sameHomeserver, type BoundAccount } from './bound-accounts.ts';

/** The radio stack's options (device or link, modem, radio, security, …) plus the app's own. */
export interface GatewayOptions extends RadioStackOptions {
  homeserverUrl: string;
  /** Where to serve /_trickle/status (undefined: not served). */
  statusHost?: string;
  statusPort?: number;
  homeserverTimeoutMs: number;
  /** An answer that would wait longer than this for the duty cycle is replaced by M_LIMIT_EXCEEDED (default 30 s). */
  maxDutyCycleWaitMs?: number;
  /** Where the Matrix session (handles, access token, txn ids) is persisted; written 0600. */
  matrixStateStore?: StateStore<unknown>;
  /** Where push sync (the reducer's position, the field kit's registration) is persisted. */
  syncStateStore?: StateStore<unknown>;
  /** Where the per-kit homeserver txn namespaces are persisted (gateway/txn-namespace.ts). */
  txnStateStore?: StateStore<unknown>;
  /** Ephemeral data pushed over the air (default none: local clients still get well-formed, empty sections). */
  pushCarry?: { typing?: boolean; receipts?: boolean; presence?: boolean };
  /**
   * Authenticate-only mode: the Matrix account bound to a field kit's static key (cli/keys.ts
   * reads accounts-gateway.json), whose token that kit's requests run with. Set ⇔ no access
   * token or password is ever taken from the air (see the header).
   */
  boundAccounts?: (kitStatic: Uint8Array) => BoundAccount | undefined;
  /**
   * A shared channel (net/link-address.ts): one gateway, many field kits, each with its
   * own security session, CoAP endpoint, Matrix session and push registrations, keyed by its link
   * address (net/peer-table.ts). `kitStores(address)` gives each kit's state files; the stores
   * above (coap, matrix, sync, security persist/restore) are then not used. Omitted: one kit
   * over a point-to-point link, as before.
   */
  shared?: { kitStores: (address: number) => KitStores; knownAddresses?: () => number[] };
  logger: Logger;
}

/** One kit's state on a gateway that serves several (its own files). */
export interface KitStores {
  coapStateStore?: StateStore<CoapSessionState>;
  matrixStateStore?: StateStore<unknown>;
  syncStateStore?: StateStore<unknown>;
  /** The kit's secure-link snapshot. */
  secure?: { persist: (snapshot: SecureLinkSnapshot) => void; restore: SecureLinkSnapshot | undefined };
}

/** The Matrix side of one kit. */
interface ServedKit {
  radio: RadioStack;
  status(): Record<string, unknown>;
  close(): void;
}

export interface Gateway {
  /** The radio stack of the one kit (point-to-point); undefined on a shared channel (see `kits`). */
  radio: RadioStack | undefined;
  modem: Modem;
  /** Each kit's radio stack (a shared channel: one per kit address heard; point-to-point: the one). */
  kits(): RadioStack[];
  homeserver: HomeserverClient;
  statusPort: number | undefined;
  status(): Record<string, unknown>;
  close(): Promise<void>;
}

export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const log = opts.logger.child({ component: 'gateway' });
  let hsUrl: URL;
  try { hsUrl = new URL(opts.homeserverUrl); } catch {
    throw new TrickleError('ERR_CONFIG', 'config', `--homeserver must be a URL such as https://matrix.example.org, got ${JSON.stringify(opts.homeserverUrl)}`);
  }
  if (hsUrl.protocol !== 'http:' && hsUrl.protocol !== 'https:') {
    throw new TrickleError('ERR_CONFIG', 'config', `--homeserver must be an http:// or https:// URL, got ${opts.homeserverUrl}`);
  }
  const hs = new HomeserverClient({ baseUrl: opts.homeserverUrl, requestTimeoutMs: opts.homeserverTimeoutMs });
  /** Requests performed, by method and first Uri-Path segment (the MSC3079 path enum). */
  const byRoute: Record<string, number> = {};
  let badRequests = 0;
  let dutyCycleRefusals = 0;
  let secretsRefused = 0;
  let unboundRefusals = 0;

  const warnOnce = throttle(600_000, Date.now);
  // Homeserver txn ids per kit, stable across link sessions (a retried send is posted once).
  const namespaces = new TxnNamespaces({ ...(opts.txnStateStore ? { store: opts.txnStateStore } : {}), randomBytes: (n) => new Uint8Array(randomBytes(n)) });

  /** One kit's Matrix side on its radio stack: session, push sync, the request handler. */
  const serveKit = (radio: RadioStack, stores: KitStores): ServedKit => {
    // Authenticate-only mode: the account bound to the kit the link session is with, if any (and
    // only for the homeserver that issued its token).
    const lookupBound = opts.boundAccounts;
    const boundAccount = (): BoundAccount | undefined => {
      const kit = radio.peerStatic();
      const b = kit && lookupBound ? lookupBound(kit) : undefined;
      if (b && !sameHomeserver(b.homeserver, hs.baseUrl)) {
        warnOnce(`hs:${b.kitKey}`, () => log.warn({ kit: b.kitName, bound: b.homeserver, homeserver: hs.baseUrl }, 'the account bound to this field kit belongs to another homeserver; its token is not used here: bind the kit again with this --homeserver'));
        return undefined;
      }
      return b;
    };
    const unboundMessage = (): string => {
      const kit = radio.peerStatic();
      const fp = kit ? fingerprint(kit) : '<kit>';
      return `trickle gateway: no Matrix account is bound to this field kit (${fp}) for ${hs.baseUrl}; `
        + `in authenticate-only mode the gateway holds the account's access token. On the gateway run: trickle keys bind ${fp} <@user:server> --homeserver ${hs.baseUrl}`;
    };
    const sessionOptions = lookupBound ? { boundAccessToken: () => boundAccount()?.accessToken } : {};

    // The Matrix session (handles, the session's access token, txn ids) lives as long as the link
    // session; its state holds the access token, so the store writes it with mode 0600.
    const newSessionId = (): string => BigInt(`0x${randomBytes(8).toString('hex')}`).toString(36);
    const freshSession = (): { id: string; session: GatewaySession } => {
      const id = newSessionId();
      return { id, session: new GatewaySession({ sessionId: id, maxBodyBytes: opts.maxBodyBytes, ...sessionOptions }) };
    };
    let current = freshSession();
    const saved = (radio.resumed ? stores.matrixStateStore?.load() : undefined) as { sessionId?: string; state?: unknown } | undefined;
    if (saved?.sessionId && saved.state !== undefined) {
      try {
        const restored = new GatewaySession({ sessionId: saved.sessionId, maxBodyBytes: opts.maxBodyBytes, ...sessionOptions });
        restored.importState(saved.state);
        current = { id: saved.sessionId, session: restored };
      } catch (e) { log.warn({ err: (e as Error).message }, 'Matrix session state unreadable; starting afresh'); }
    }
    const persistSession = (force = false): void => {
      if (stores.matrixStateStore && (force || current.session.mustPersist)) {
        stores.matrixStateStore.save({ sessionId: current.id, state: current.session.exportState() });
      }
    };
    radio.onSessionReset(() => { current = freshSession(); firstOfSession = true; persistSession(true); });
    let firstOfSession = true;

    const pusher = new SyncPusher({
      radio, homeserver: hs, session: () => current.session, logger: opts.logger,
      ...(stores.syncStateStore ? { store: stores.syncStateStore } : {}),
      ...(opts.pushCarry ? { reducer: opts.pushCarry } : {}),
      ...(lookupBound ? { boundAccessToken: () => boundAccount()?.accessToken } : {}),
    });

    radio.onRequest(async (req) => {
      const { session } = current;
      if (session.exhausted) {
        log.info('Matrix session handles exhausted: the next link session starts afresh');
      }
      let httpReq;
      try {
        const kit = radio.peerStatic();
        session.txnNamespace = namespaces.namespaceFor(kit ? toHex(kit) : 'anonymous', radio.peerSequence(), firstOfSession);
        firstOfSession = false;
        httpReq = session.decodeRequest(req);
      } catch (e) {
        persistSession();
        if (isTrickleError(e, 'ERR_MATRIX_UNBOUND')) {
          unboundRefusals++;
          warnOnce('unbound', () => log.warn({ code: e.code }, unboundMessage()));
          return session.encodeError(new TrickleError('ERR_MATRIX_UNBOUND', 'gateway', unboundMessage()));
        }
        if (isTrickleError(e, 'ERR_MATRIX_SECRET_ON_AIR')) {
          secretsRefused++;
          log.warn({ code: e.code }, 'refused a request that carried an access token over the air (authenticate-only mode); not performed');
          return session.encodeError(e);
        }
        badRequests++;
        log.warn({ code: (e as { code?: string }).code, err: (e as Error).message }, 'undecodable request');
        return session.encodeError(e);
      }
      const first = new TextDecoder().decode(getOptions(req.options, Opt.URI_PATH)[0] ?? new Uint8Array());
      const route = `${httpReq.method} /${first}${req.observe === 0 ? ' observe' : ''}`;
      byRoute[route] = (byRoute[route] ?? 0) + 1;
      const secret = lookupBound ? airSecretRefusal(httpReq) : undefined;
      if (secret !== undefined) {
        secretsRefused++;
        log.warn({ code: 'ERR_MATRIX_SECRET_ON_AIR', method: httpReq.method, path: httpReq.path }, 'refused a request that would put a secret on air (authenticate-only mode); not performed');
        persistSession();
        return session.encodeResponse(matrixError(403, 'M_FORBIDDEN', `trickle gateway (authenticate-only mode): ${secret}`));
      }
      if (req.observe === 1 && httpReq.method === 'GET' && /\/sync$/.test(httpReq.path)) {
        // A deregistration (RFC 7641 §3.6): never performed as a whole /sync over the air.
        persistSession();
        return session.encodeResponse({ status: 200, contentType: 'application/json', body: new TextEncoder().encode('{}') });
      }
      if (req.observe === 0 && httpReq.method === 'GET' && /\/sync$/.test(httpReq.path)) {
        persistSession();
        // The registering account's token, whatever others use later (bound mode: the bound one, looked up at each poll).
        return pusher.register(req.token, lookupBound ? undefined : httpReq.accessToken);
      }
      log.debug({ method: httpReq.method, path: httpReq.path }, 'request');
      const res = await hs.perform(httpReq);
      log.debug({ status: res.status, len: res.body.length, path: httpReq.path }, 'response');
      const encoded = session.encodeResponse(res, httpReq);
      // If our own duty-cycle budget cannot carry this answer soon, say so in a few bytes instead:
      // the host's client gets M_LIMIT_EXCEEDED with retry_after_ms rather than waiting.
      const waitMs = radio.estimateWaitMs(Math.min(encoded.payload.length + 16, radio.maxFrameLen));
      if (waitMs > (opts.maxDutyCycleWaitMs ?? 30_000)) {
        dutyCycleRefusals++;
        log.warn({ code: 'ERR_DUTY_CYCLE', waitMs, path: httpReq.path }, 'answer replaced: duty-cycle budget spent');
        // Short on purpose: this answer itself must fit what is left of the budget.
        return session.encodeResponse(matrixError(429, 'M_LIMIT_EXCEEDED', 'gateway duty cycle spent', { retry_after_ms: Math.ceil(waitMs) }));
      }
      persistSession(); // before the answer leaves: handle numbers must never be reused
      return encoded;
    });
    const kitStatus = (): Record<string, unknown> => ({
      session: current.session.status(),
      ...(lookupBound ? { boundAccount: { user: boundAccount()?.userId ?? null } } : {}),
      pushSync: pusher.status(),
    });
    return { radio, status: kitStatus, close: () => pusher.close() };
  };

  let single: ServedKit | undefined;
  let table: PeerTable | undefined;
  const served = new Map<number, ServedKit>();
  if (opts.shared) {
    const shared = opts.shared;
    table = await openPeerTable({
      ...opts,
      kitStores: (address) => {
        const st = shared.kitStores(address);
        return { ...(st.coapStateStore ? { coapStateStore: st.coapStateStore } : {}), ...(st.secure ? { secure: st.secure } : {}) };
      },
      onKit: (address, radio) => { served.set(address, serveKit(radio, shared.kitStores(address))); },
      ...(shared.knownAddresses ? { knownAddresses: shared.knownAddresses } : {}),
    });
  } else {
    single = serveKit(await openRadioStack(opts), { ...(opts.matrixStateStore ? { matrixStateStore: opts.matrixStateStore } : {}), ...(opts.syncStateStore ? { syncStateStore: opts.syncStateStore } : {}) });
  }
  const modem = single ? single.radio.modem : table!.station.modem;

  const status = (): Record<string, unknown> => {
    const common = {
      role: 'gateway',
      homeserver: hs.baseUrl,
      requests: { total: hs.requestsTotal, homeserverFailures: hs.failuresTotal, undecodable: badRequests, dutyCycleRefusals, byRoute: { ...byRoute } },
      txnNamespaceRegressions: namespaces.regressions,
      ...(opts.boundAccounts ? { boundAccounts: { secretsRefused, unboundRefusals } } : {}),
    };
    if (single) {
      // Point-to-point: the one kit's session and push sync at the top level, as always.
      const k = single.status();
      const bound = k['boundAccount'] as Record<string, unknown> | undefined;
      return { ...common, ...(bound ? { boundAccount: { secretsRefused, unboundRefusals, ...bound } } : {}), session: k['session'], pushSync: k['pushSync'], radio: single.radio.status() };
    }
    const t = table!;
    return { ...common, network: 'shared', radio: t.station.status(), kits: t.kitsStatus((address) => served.get(address)?.status() ?? {}) };
  };

  let server: Server | undefined;
  let statusPort: number | undefined;
  if (opts.statusPort !== undefined) {
    server = createServer((req, res) => {
      if (req.url === '/_trickle/status') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(status(), null, 2));
      } else {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errcode: 'M_NOT_FOUND', error: 'the gateway serves only /_trickle/status' }));
      }
    });
    const s = server;
    try {
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(opts.statusPort, opts.statusHost ?? '127.0.0.1', () => resolve());
      });
    } catch (e) {
      if (single) { single.close(); await single.radio.close(); }
      await table?.close();
      throw new TrickleError('ERR_CONFIG', 'gateway', `cannot serve status on ${opts.statusHost}:${opts.statusPort}: ${(e as Error).message}`);
    }
    const addr = s.address();
    statusPort = typeof addr === 'object' && addr ? addr.port : opts.statusPort;
  }
  log.info({ device: modem.dialect, network: table ? 'shared' : 'point-to-point', homeserver: hs.baseUrl, statusPort }, 'gateway running');

  return {
    radio: single?.radio, modem, statusPort, status, homeserver: hs,
    kits: () => (single ? [single.radio] : [...served.values()].map((k) => k.radio)),
    async close() {
      if (server) { server.closeAllConnections(); await new Promise<void>((r) => server!.close(() => r())); }
      for (const k of served.values()) k.close();
      single?.close();
      if (single) await single.radio.close();
      await table?.close();
    },
  };
}
