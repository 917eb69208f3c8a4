/**
 * The `trickle` command. Thin: it parses flags, builds the root logger, and starts what
 * host/ and gateway/ compose. Errors the user can fix are printed as one clear message
 * and a non-zero exit code, never a stack trace.
 */
import { createLogger, type Logger } from '../log.ts';
import { isTrickleError, TrickleError } from '../errors.ts';
import { buildSecurity, stateStores, parseSecurityMode, secretsPolicy, sharedKitStores } from './security.ts';
import { defaultStateDir, loadOrCreateIdentity } from './keys.ts';
import { deriveKitAddress, formatAddress, parseLinkAddress } from '../net/link-address.ts';
import { lockStateDir } from '../util/state-lock.ts';
import { parseFlags, intFlag, hostPortFlag, requiredFlag, pushCarryFlag, listFlag } from './args.ts';
import { checkListenAddress, parseAllowedOrigin } from '../host/local-api-policy.ts';
import { startHost } from '../host/host.ts';
import { startGateway } from '../gateway/gateway.ts';
import { MODEM_FLAG_OPTIONS, MODEM_USAGE, resolveModemFlags, type ResolvedModemFlags } from './modem-options.ts';

const COMMON_USAGE = `  --baud N           UART speed of the modem (default 9600; 115200 with --modem native, rnode, meshtastic)
  --max-frame N      largest radio frame payload in bytes (default 255)
  --region R         eu868 (default), us915, as923, or none for a cable/loopback with no airtime rules
  --freq HZ          channel centre frequency (default: the region's default, 869525000 in eu868)
  --bw HZ            LoRa bandwidth (default 125000)
  --sf N             LoRa spreading factor 5-12 (default 9)
  --cr N             LoRa coding rate 4/N, N = 5-8 (default 5)
  --max-body-bytes N largest request or response body carried (default 16777216)
  --security MODE    encrypt (default), authenticate-only (amateur bands: cleartext, signed; no
                     password or token on air: see trickle keys bind / local-account), none (tests)
  --state-dir DIR    keys and session state (default $TRICKLE_STATE_DIR or ~/.local/state/trickle)
  --network MODE     p2p (default: one kit and one gateway, frames carry no address) or shared
                     (one gateway, many kits on one channel: every frame carries a 1-byte link
                     address; gateway and all its kits must use shared)
  --link-address N   field kit on a shared channel: its address 0-126 (default auto: derived from
                     this kit's key; set it when the gateway reports two kits on one address)
${MODEM_USAGE}`;

const HOST_USAGE = `usage: trickle host (--device PATH | --kiss-tcp HOST:PORT --callsign CALL) [--listen HOST:PORT]
  --device PATH      serial device of the radio modem (or KISS TNC), e.g. /dev/ttyUSB0
  --listen HOST:PORT where Matrix clients connect (default 127.0.0.1:8008); an address other
                     than loopback is refused unless --allow-lan
  --allow-lan        let --listen use a network address: anyone on that network can reach the kit
                     (every request still needs a valid access token)
  --allow-origin O   let web pages from origin O (e.g. https://app.element.io) use the kit; repeat
                     for more. Requests from any other web page are refused (default: none)
  --allow-host NAME  answer to the host name NAME (e.g. kit.local) besides IP addresses and
                     localhost; other names are refused (DNS rebinding); repeatable
  --max-connections N  local connections served at once (default 256); more get 429
  --receive-timeout-ms N  time a client has to send a request body (default 30000); then 408
  --poll-sync        carry every client /sync long-poll over the radio instead of push sync
                     (default: /sync is answered locally and the gateway pushes what changed)
  --send-typing      carry the local clients' typing notifications over the radio
                     (default: answered here, others do not see you typing)
${COMMON_USAGE}`;

const GATEWAY_USAGE = `usage: trickle gateway (--device PATH | --kiss-tcp HOST:PORT --callsign CALL) --homeserver URL [--listen HOST:PORT]
  --device PATH      serial device of the radio modem (or KISS TNC), e.g. /dev/ttyUSB0
  --homeserver URL   the homeserver to talk to, e.g. https://matrix.example.org
  --listen HOST:PORT serve GET /_trickle/status here (default: not served)
  --push-carry LIST  ephemeral data pushed to the field kit, comma-separated from
                     typing,receipts,presence (default: none, the cheapest)
${COMMON_USAGE}`;

const USAGE = `usage: trickle <command> [flags]

commands:
  host       run a field kit: a local Matrix server whose requests cross the radio
  gateway    run a gateway: performs requests from the radio against a homeserver
  demo       run the whole path locally with a throwaway Synapse (same as npm run demo)
  airtime    LoRa time on air and frames per hour for given radio settings
  keys       this machine's key, authorized field kits, trusted gateways (trickle keys help)
  frame      frame explain <hex>: every layer of a captured frame
  ports      serial devices and which modem dialect answers on each (trickle ports --help)
  help       this text

${HOST_USAGE}

${GATEWAY_USAGE}`;

const COMMON_OPTIONS = {
  device: { type: 'string' },
  baud: { type: 'string' },
  'max-frame': { type: 'string' },
  region: { type: 'string' },
  freq: { type: 'string' },
  bw: { type: 'string' },
  sf: { type: 'string' },
  cr: { type: 'string' },
  'max-body-bytes': { type: 'string' },
  listen: { type: 'string' },
  security: { type: 'string' },
  'state-dir': { type: 'string' },
  codec: { type: 'string' },
  network: { type: 'string' },
  'link-address': { type: 'string' },
  'push-sync': { type: 'boolean' },
  'poll-sync': { type: 'boolean' },
  'push-carry': { type: 'string' },
  'send-typing': { type: 'boolean' },
  ...MODEM_FLAG_OPTIONS,
} as const;

const HOST_OPTIONS = {
  ...COMMON_OPTIONS,
  'allow-lan': { type: 'boolean' },
  'allow-origin': { type: 'string', multiple: true },
  'allow-host': { type: 'string', multiple: true },
  'max-connections': { type: 'string' },
  'receive-timeout-ms': { type: 'string' },
} as const;

/** The host's local-API flags, checked before anything is opened. */
function localApiFlags(flags: Record<string, string | boolean | undefined>, listenHost: string) {
  const allowLan = flags['allow-lan'] === true;
  checkListenAddress(listenHost, allowLan); // refuses a network address without --allow-lan
  const allowedHostNames = listFlag(flags, 'allow-host').map((n) => {
    if (!/^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/i.test(n)) throw new TrickleError('ERR_CONFIG', 'config', `--allow-host must be a host name such as kit.local, got ${JSON.stringify(n)}`);
    return n.toLowerCase();
  });
  return {
    allowLan,
    allowedOrigins: listFlag(flags, 'allow-origin').map(parseAllowedOrigin),
    allowedHostNames,
    maxConnections: intFlag(flags, 'max-connections', 256, 1, 10_000),
    receiveTimeoutMs: intFlag(flags, 'receive-timeout-ms', 30_000, 100, 3_600_000),
  };
}

function common(flags: Record<string, string | boolean | undefined>, role: 'host' | 'gateway', logger: Logger, modem: ResolvedModemFlags) {
  const stateDir = (flags['state-dir'] as string | undefined) ?? defaultStateDir();
  // Before anything is read: a second process on the same state would reuse nonces.
  lockStateDir(stateDir, `trickle ${role}`);
  const mode = parseSecurityMode((flags['security'] as string | undefined) ?? modem.defaultSecurity);
  const codec = (flags['codec'] as string | undefined) ?? 'compact';
  if (codec !== 'compact' && codec !== 'rfc7252') throw new TrickleError('ERR_CONFIG', 'config', `--codec must be compact (default) or rfc7252, got ${JSON.stringify(codec)}`);
  const security = buildSecurity(role, stateDir, mode, logger);
  const network = networkFlags(flags, role, stateDir, security, logger);
  return {
    ...network,
    ...(security ? { security } : {}),
    // authenticate-only: no password or access token crosses the air (local logins, bound accounts)
    ...stateStores(stateDir, role, logger),
    // after stateStores: in authenticate-only mode the host keeps its own tokens apart
    ...secretsPolicy(role, stateDir, mode, logger),
    codec: codec as 'compact' | 'rfc7252',
    ...(modem.link ? { link: modem.link } : {}),
    ...(modem.createModem ? { createModem: modem.createModem } : {}),
    baudRate: intFlag(flags, 'baud', 9600, 50, 4_000_000),
    maxFrameLen: intFlag(flags, 'max-frame', modem.defaultMaxFrameLen ?? 255, 32, 65_535),
    radio: modem.radio,
    maxBodyBytes: intFlag(flags, 'max-body-bytes', 16 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
  };
}

/** --network and --link-address: a kit's address, or a gateway's per-kit state (net/link-address.ts). */
function networkFlags(flags: Record<string, string | boolean | undefined>, role: 'host' | 'gateway', stateDir: string, security: ReturnType<typeof buildSecurity>, logger: Logger) {
  const network = (flags['network'] as string | undefined) ?? 'p2p';
  if (network !== 'p2p' && network !== 'shared') throw new TrickleError('ERR_CONFIG', 'config', `--network must be p2p (default: one kit, one gateway) or shared (one gateway, many kits on one channel), got ${JSON.stringify(network)}`);
  const rawAddress = flags['link-address'] as string | undefined;
  if (rawAddress !== undefined && (role !== 'host' || network !== 'shared')) {
    throw new TrickleError('ERR_CONFIG', 'config', role === 'host' ? '--link-address needs --network shared' : '--link-address is a field kit\'s flag: a gateway on a shared channel serves every address');
  }
  if (network === 'p2p') return {};
  if (role === 'gateway') return { shared: sharedKitStores(stateDir, logger) };
  const explicit = parseLinkAddress(rawAddress);
  const address = explicit ?? deriveKitAddress(security?.staticKeyPair.publicKey ?? loadOrCreateIdentity(stateDir).keyPair.publicKey);
  logger.info({ linkAddress: formatAddress(address), derived: explicit === undefined }, 'shared channel: this kit\'s link address');
  return { linkAddress: address };
}

function untilSignal(logger: Logger, close: () => Promise<void>, onDeviceLost?: (cb: (err?: Error) => void) => void): Promise<number> {
  return new Promise((resolve) => {
    let done = false;
    const stop = (code: number) => {
      if (done) return;
      done = true;
      close().catch((e: unknown) => logger.error({ err: e }, 'error while stopping')).finally(() => resolve(code));
    };
    process.once('SIGINT', () => stop(0));
    process.once('SIGTERM', () => stop(0));
    onDeviceLost?.((err) => {
      if (err) { logger.error({ err: err.message }, 'the radio link (serial device or KISS TNC) went away; stopping'); stop(1); }
    });
  });
}

async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'host': {
      const { flags } = parseFlags(rest, HOST_OPTIONS, HOST_USAGE);
      const listen = hostPortFlag(flags, 'listen', '127.0.0.1:8008');
      const localApi = localApiFlags(flags, listen.host);
      const modem = await resolveModemFlags(flags); // the last flag check: it connects to --kiss-tcp
      const logger = createLogger();
      let host;
      try {
        const device = modem.link ? undefined : requiredFlag(flags, 'device', HOST_USAGE);
        logger.info({ modem: modem.describe }, 'modem');
        host = await startHost({ ...(device ? { device } : {}), listenHost: listen.host, listenPort: listen.port, ...common(flags, 'host', logger, modem), requestTimeoutMs: 120_000, pushSync: flags['poll-sync'] !== true, sendTyping: flags['send-typing'] === true, ...localApi, logger });
      } catch (e) { await modem.close(); throw e; }
      return untilSignal(logger, () => host.close(), (cb) => host.radio.modem.onClose(cb));
    }
    case 'gateway': {
      const { flags } = parseFlags(rest, { ...COMMON_OPTIONS, homeserver: { type: 'string' } }, GATEWAY_USAGE);
      const homeserverUrl = requiredFlag(flags, 'homeserver', GATEWAY_USAGE);
      const listen = flags['listen'] === undefined ? undefined : hostPortFlag(flags, 'listen', '127.0.0.1:8009');
      const modem = await resolveModemFlags(flags); // the last flag check: it connects to --kiss-tcp
      const logger = createLogger();
      let gw;
      try {
        const device = modem.link ? undefined : requiredFlag(flags, 'device', GATEWAY_USAGE);
        logger.info({ modem: modem.describe }, 'modem');
        gw = await startGateway({
          ...(device ? { device } : {}), homeserverUrl, ...common(flags, 'gateway', logger, modem), homeserverTimeoutMs: 60_000, logger,
          ...(listen ? { statusHost: listen.host, statusPort: listen.port } : {}),
          pushCarry: pushCarryFlag(flags['push-carry'] as string | undefined),
        });
      } catch (e) { await modem.close(); throw e; }
      return untilSignal(logger, () => gw.close(), (cb) => gw.modem.onClose(cb));
    }
    case 'demo': {
      const { runDemo } = await import('./demo.ts');
      return runDemo(rest);
    }
    case 'keys': {
      const { runKeysCommand } = await import('./keys.ts');
      return runKeysCommand(rest, (s) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`));
    }
    case 'ports': {
      const { runPortsCommand } = await import('./ports.ts');
      return runPortsCommand(rest, (s) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`));
    }
    case 'frame': {
      const { runFrameCommand } = await import('./frame-explain.ts');
      return runFrameCommand(rest, (s) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`));
    }
    case 'airtime': {
      const { runAirtimeCommand } = await import('./airtime.ts');
      return runAirtimeCommand(rest, (s) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`));
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return cmd === undefined ? 2 : 0;
    default:
      process.stderr.write(`trickle: unknown command ${JSON.stringify(cmd)}\n\n${USAGE}\n`);
      return 2;
  }
}

try {
  const code = await run(process.argv.slice(2));
  process.exit(code);
} catch (e) {
  if (isTrickleError(e)) {
    process.stderr.write(`trickle: ${e.message} [${e.code}]\n`);
    process.exitCode = e.code === 'ERR_USAGE' ? 2 : 1;
  } else {
    process.stderr.write(`trickle: unexpected error: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 70;
  }
  // Nothing may keep a failed start alive (an open serial port or KISS TCP socket).
  process.exit(process.exitCode);
}

