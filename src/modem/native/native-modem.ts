/**
 * The native dialect: a LoRa board (SX126x/SX127x) running Trickle firmware, spoken to with
 * Trickle's own host⇄modem protocol (firmware-protocol/spec/, constants generated from
 * firmware-protocol/protocol.json).
 *
 * Lifecycle (firmware-protocol/spec/03-sessions.md):
 *
 *   start:  HELLO → VERSION, GET_CAPABILITIES → CAPABILITIES, SET_RADIO → OK, GET_RADIO → RADIO.
 *           The wanted settings are checked against CAPABILITIES first, and the read-back must
 *           equal them field by field; otherwise `NativeModem.start` rejects with a
 *           NativeConfigError (a ConfigError, code ERR_MODEM_CONFIG) that names the setting,
 *           the wanted and the reported value. A board that never answers HELLO rejects with
 *           ERR_MODEM_TIMEOUT (it is probably not running Trickle firmware).
 *   send:   TRANSMIT(seq, frame) → TX_DONE(seq, airtimeUs). `send` resolves at TX_DONE, so the
 *           SendReport carries the measured airtime; one TRANSMIT is outstanding at a time
 *           (the firmware holds one frame) and concurrent `send` calls are written in call
 *           order, each after the previous TX_DONE. An ERROR for that seq rejects the send.
 *   receive: RECEIVE pushes frames with RSSI (dBm), SNR (dB) and frequency error (Hz).
 *   liveness: when nothing has come from the board for `pingIntervalMs`, PING; no PONG within
 *           `replyTimeoutMs` means the firmware is wedged: the modem closes and `onClose`
 *           gets ERR_MODEM_TIMEOUT (reopening the port would not unwedge it).
 *   BOOT:   the board restarted on its own (watchdog, brownout) and lost its settings: the
 *           modem re-runs the start sequence; sends wait for it.
 *
 * Reconnection. The modem reopens the device itself, because only it knows how to bring a
 * fresh board back to the configured state (handshake + settings + read-back). It needs a
 * link factory for that (`reopenLink`; `openNativeModem(path)` passes one that reopens the
 * same path). When the link fails (EIO: USB unplugged, the PTY's other side gone) the modem
 * enters 'reconnecting': pending and new sends reject with ERR_LINK_IO at once (the scheduler
 * decides what to retry), and it retries with exponential backoff (250 ms doubling to 5 s by
 * default, forever unless `reconnect.maxAttempts` is set). Once the device is back and the
 * start sequence succeeds, state is 'ready' again and `onStateChange` reports it. `onClose`
 * fires only when the modem gives up: `close()`, a liveness timeout, no `reopenLink`, the
 * attempts are used up, or the returning device refuses the settings (a mismatch is not
 * going to fix itself).
 */
import { ConfigError, TrickleError, type ErrorCode, type Layer } from '../../errors.ts';
import type { Link } from '../../link/link.ts';
import { LinkEvents } from '../../link/link-events.ts';
import { openSerialLink } from '../../link/serial.ts';
import { systemClock, type Clock, type TimerHandle } from '../../util/clock.ts';
import { slipEscapedLength } from '../transparent/slip.ts';
import type { ChannelSenseResult, Modem, ModemCapabilities, ModemStats, ReceivedFrameMeta, SendReport } from '../modem.ts';
import { ERR_NATIVE_PROTOCOL, NativeDeframer, encodeNativeFrame, nativeMessage } from './codec.ts';
import {
  BANDWIDTHS_HZ, CHIP_NAMES, Features, MessageType, NATIVE_ERROR_CODE_NAMES, PARAM_NAMES, PROTOCOL_VERSION, RadioFlags,
  REPLY_TIMEOUT_MS, type CapabilitiesFields, type MessageName, type NativeMessage, type RadioFields, type StatsFields, type VersionFields,
} from './protocol-generated.ts';

/** Radio settings in host terms (the wire form packs the booleans into `flags`). */
export interface NativeRadioSettings {
  frequencyHz: number;
  /** Nominal LoRa bandwidth in Hz (7800 … 500000). */
  bandwidthHz: number;
  sf: number;
  /** Coding rate denominator 5..8 (4/5 .. 4/8). */
  codingRate: number;
  txPowerDbm: number;
  preambleSymbols: number;
  /** SX127x one-byte form: 0x12 private networks (default), 0x34 LoRaWAN public. */
  syncWord: number;
  crcOn: boolean;
  implicitHeader: boolean;
  invertIq: boolean;
}

export type NativeRadioInput = Pick<NativeRadioSettings, 'frequencyHz' | 'bandwidthHz' | 'sf'> & Partial<NativeRadioSettings>;

export const NATIVE_RADIO_DEFAULTS: Omit<NativeRadioSettings, 'frequencyHz' | 'bandwidthHz' | 'sf'> = {
  codingRate: 5, txPowerDbm: 14, preambleSymbols: 8, syncWord: 0x12, crcOn: true, implicitHeader: false, invertIq: false,
};

export type NativeModemState = 'starting' | 'ready' | 'reconnecting' | 'closed';

export interface NativeModemOptions {
  radio: NativeRadioInput;
  /** Reopens the device after it went away; without it a lost device closes the modem. */
  reopenLink?: () => Promise<Link>;
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number; maxAttempts?: number };
  clock?: Clock;
  /** Longest wait for the answer to a command. Default REPLY_TIMEOUT_MS (1000) from the protocol. */
  replyTimeoutMs?: number;
  /** PING after this long without hearing from the board; 0 disables. Default 5000. */
  pingIntervalMs?: number;
  /** Cap `capabilities.maxFrameLen` below the board's maxPayload (both ends must agree). */
  maxFrameLen?: number;
}

export interface NativeDeviceInfo {
  protocolVersion: number;
  firmwareName: string;
  firmwareVersion: string;
  chip: string;
  capabilities: CapabilitiesFields;
}

export interface NativeReceivedFrameMeta extends ReceivedFrameMeta {
  rssiDbm: number;
  snrDb: number;
  frequencyErrorHz: number;
}

/**
 * The board cannot be brought to the wanted settings: a value outside its capabilities,
 * refused by SET_RADIO, or read back different. A ConfigError with code ERR_MODEM_CONFIG;
 * detail: { setting, wanted, reported?, allowed?, device }.
 */
export class NativeConfigError extends ConfigError {
  override readonly code: ErrorCode = 'ERR_MODEM_CONFIG';
  override readonly layer: Layer = 'modem';
  constructor(message: string, detail: { setting: string; wanted: unknown; reported?: unknown; allowed?: string; device: string }) {
    super(message, detail);
    this.name = 'NativeConfigError';
  }
}

/** ERROR from the board in answer to one of our commands. */
export class NativeDeviceError extends TrickleError {
  constructor(message: string, readonly errorName: string, readonly param: string | undefined, detail: Record<string, unknown>) {
    super('ERR_MODEM_CONFIG', 'modem', message, detail);
    this.name = 'NativeDeviceError';
  }
}

type MessageOf<K extends MessageName> = Extract<NativeMessage, { name: K }>;

interface PendingControl {
  command: number;
  reply: MessageName;
  resolve: (m: NativeMessage) => void;
  reject: (e: Error) => void;
  timer: TimerHandle;
}

interface PendingTx {
  seq: number;
  wireBytes: number;
  resolve: (r: SendReport) => void;
  reject: (e: Error) => void;
  timer: TimerHandle;
}

const SETTING_NAMES: (keyof NativeRadioSettings)[] = [
  'frequencyHz', 'bandwidthHz', 'sf', 'codingRate', 'txPowerDbm', 'preambleSymbols', 'syncWord', 'crcOn', 'implicitHeader', 'invertIq',
];

/** Wire param id → host setting name, for ERROR.param. */
const PARAM_TO_SETTING: Readonly<Record<string, string>> = {
  FREQUENCY_HZ: 'frequencyHz', BANDWIDTH_HZ: 'bandwidthHz', SF: 'sf', CODING_RATE: 'codingRate', TX_POWER_DBM: 'txPowerDbm',
  PREAMBLE_SYMBOLS: 'preambleSymbols', SYNC_WORD: 'syncWord', FLAGS: 'crcOn/implicitHeader/invertIq', PAYLOAD: 'frame',
  PROTOCOL_VERSION: 'protocolVersion', CAD_SYMBOLS: 'symbols',
};

export function radioSettingsToWire(s: NativeRadioSettings): RadioFields {
  return {
    frequencyHz: s.frequencyHz, bandwidthHz: s.bandwidthHz, sf: s.sf, codingRate: s.codingRate, txPowerDbm: s.txPowerDbm,
    preambleSymbols: s.preambleSymbols, syncWord: s.syncWord,
    flags: (s.crcOn ? RadioFlags.CRC_ON : 0) | (s.implicitHeader ? RadioFlags.IMPLICIT_HEADER : 0) | (s.invertIq ? RadioFlags.INVERT_IQ : 0),
  };
}

export function radioSettingsFromWire(r: RadioFields): NativeRadioSettings {
  return {
    frequencyHz: r.frequencyHz, bandwidthHz: r.bandwidthHz, sf: r.sf, codingRate: r.codingRate, txPowerDbm: r.txPowerDbm,
    preambleSymbols: r.preambleSymbols, syncWord: r.syncWord,
    crcOn: (r.flags & RadioFlags.CRC_ON) !== 0,
    implicitHeader: (r.flags & RadioFlags.IMPLICIT_HEADER) !== 0,
    invertIq: (r.flags & RadioFlags.INVERT_IQ) !== 0,
  };
}

/**
 * Bytes on the serial line for a TRANSMIT carrying `payload`: END, type, seq (2), FCS (2),
 * END, plus SLIP escapes of the payload. The seq and FCS may need up to 4 more escape bytes,
 * which depend on the sequence number and are not counted (this function is pure).
 */
export function nativeTransmitSerialOverhead(payload: Uint8Array): number {
  return 2 + 1 + 2 + 2 + (slipEscapedLength(payload) - payload.length);
}

/**
 * A generous upper bound on the time on air of `len` bytes, for the TX_DONE watchdog only
 * (the airtime itself comes from TX_DONE; the exact formula lives in the scheduler, which
 * this layer must not import): explicit header, CRC, low-data-rate optimisation on, SF5/6
 * preamble surcharge, every symbol as long as the nominal bandwidth makes it.
 */
function airtimeUpperBoundMs(len: number, s: NativeRadioSettings): number {
  const symbolMs = (2 ** s.sf / s.bandwidthHz) * 1000;
  const payloadSymbols = 8 + Math.ceil((8 * len + 16 + 28) / (4 * Math.max(s.sf - 2, 1))) * s.codingRate;
  return (s.preambleSymbols + 6.25 + payloadSymbols) * symbolMs;
}

export class NativeModem implements Modem {
  readonly dialect = 'native';
  private readonly opts: NativeModemOptions;
  private readonly wanted: NativeRadioSettings;
  private readonly clock: Clock;
  private readonly replyTimeoutMs: number;
  private readonly pingIntervalMs: number;
  private link: Link;
  private generation = 0;
  private deframer = new NativeDeframer();
  private stateValue: NativeModemState = 'starting';
  private info: NativeDeviceInfo | undefined;
  private radio: NativeRadioSettings | undefined;
  private controlChain: Promise<unknown> = Promise.resolve();
  private pendingControl: PendingControl | undefined;
  private txChain: Promise<unknown> = Promise.resolve();
  private pendingTx: PendingTx | undefined;
  private nextSeq = 1;
  /** Resolved while usable; replaced by a pending promise while re-running the start sequence after BOOT. */
  private gate: Promise<void> = Promise.resolve();
  private lastHeardMs: number;
  private pingTimer: TimerHandle | undefined;
  private sleeping: { timer: TimerHandle; wake: () => void } | undefined;
  private readonly closeEvents = new LinkEvents();
  private readonly frameListeners: ((frame: Uint8Array, meta: ReceivedFrameMeta) => void)[] = [];
  private readonly dropListeners: ((code: ErrorCode, detail: Record<string, unknown>) => void)[] = [];
  private readonly stateListeners: ((state: NativeModemState, err?: Error) => void)[] = [];
  private readonly counters: ModemStats = { framesSent: 0, framesReceived: 0, wireBytesSent: 0, wireBytesReceived: 0, dropped: {} };
  private reconnectCount = 0;
  private started = false;

  /** Use `NativeModem.start` (or `openNativeModem`): the modem is only usable after the start sequence. */
  private constructor(link: Link, options: NativeModemOptions) {
    this.opts = options;
    this.wanted = { ...NATIVE_RADIO_DEFAULTS, ...options.radio };
    this.clock = options.clock ?? systemClock;
    this.replyTimeoutMs = options.replyTimeoutMs ?? REPLY_TIMEOUT_MS;
    this.pingIntervalMs = options.pingIntervalMs ?? 5_000;
    this.lastHeardMs = this.clock.now();
    this.link = link;
    this.attach(link);
  }

  /**
   * Run the start sequence on `link` and resolve with a ready modem. Rejects with
   * NativeConfigError (settings), NativeDeviceError (an ERROR answer), ERR_MODEM_TIMEOUT
   * (no answer) or ERR_LINK_* (the device failed); the link is closed then.
   */
  static async start(link: Link, options: NativeModemOptions): Promise<NativeModem> {
    const modem = new NativeModem(link, options);
    try {
      await modem.configure();
    } catch (err) {
      modem.stateValue = 'closed';
      modem.generation++;
      modem.failPending(err as Error);
      await link.close();
      throw err;
    }
    modem.started = true;
    modem.setState('ready');
    modem.schedulePing();
    return modem;
  }

  get state(): NativeModemState { return this.stateValue; }
  /** What the board said about itself at the last (re)start. */
  get device(): NativeDeviceInfo | undefined { return this.info; }
  /** Settings in force, as read back from the board. */
  get radioSettings(): NativeRadioSettings | undefined { return this.radio ? { ...this.radio } : undefined; }
  /** The current link (it changes after a reconnection). */
  get currentLink(): Link { return this.link; }
  get reconnects(): number { return this.reconnectCount; }

  get capabilities(): ModemCapabilities {
    const devMax = this.info?.capabilities.maxPayload ?? 255;
    return {
      maxFrameLen: Math.min(devMax, this.opts.maxFrameLen ?? devMax),
      enforcesDutyCycle: false,
      reportsAirtime: true,
      // CAD (firmware-protocol/spec/02-messages.md) on a board that announces it.
      channelSense: this.info === undefined || (this.info.capabilities.features & Features.CAD) !== 0 ? 'host' : 'none',
    };
  }

  /** Modem.senseChannel: a CAD of 2 symbols (Semtech AN1200.48: about 2.5 symbol times with processing). */
  async senseChannel(): Promise<ChannelSenseResult> {
    const r = await this.cad(2);
    return { busy: r.detected, durationMs: r.durationUs / 1000 };
  }

  send(frame: Uint8Array): Promise<SendReport> {
    const { maxFrameLen } = this.capabilities;
    if (frame.length === 0 || frame.length > maxFrameLen) {
      return Promise.reject(new TrickleError('ERR_MODEM_MTU', 'modem',
        `frame of ${frame.length} bytes cannot be sent: the native modem carries 1 to ${maxFrameLen} bytes`,
        { len: frame.length, maxFrameLen }));
    }
    const notUsable = this.unusableError();
    if (notUsable) return Promise.reject(notUsable);
    const copy = frame.slice();
    const run = this.txChain.then(() => this.transmit(copy));
    this.txChain = run.catch(() => undefined);
    return run;
  }

  /** The LoRa PHY header is not counted (DESIGN.md budget); the TRANSMIT framing crosses the cable only. */
  framingOverhead(payload: Uint8Array): { onAir: number; serial: number } {
    return { onAir: 0, serial: nativeTransmitSerialOverhead(payload) };
  }

  onFrame(listener: (frame: Uint8Array, meta: ReceivedFrameMeta) => void): void { this.frameListeners.push(listener); }
  onDrop(listener: (code: ErrorCode, detail: Record<string, unknown>) => void): void { this.dropListeners.push(listener); }
  onClose(listener: (err?: Error) => void): void { this.closeEvents.onClose(listener); }
  /** Every state change: 'reconnecting' (with the link's error), 'ready' after a (re)start, 'closed'. */
  onStateChange(listener: (state: NativeModemState, err?: Error) => void): void { this.stateListeners.push(listener); }

  stats(): ModemStats { return { ...this.counters, dropped: { ...this.counters.dropped } }; }

  /** Channel activity detection for `symbols` (1, 2, 4, 8, 16) symbols. */
  async cad(symbols = 2): Promise<{ detected: boolean; durationUs: number }> {
    const r = await this.command(nativeMessage('CAD', { symbols }), 'CAD_RESULT', this.replyTimeoutMs + 1_000);
    return { detected: r.detected !== 0, durationUs: r.durationUs };
  }

  /** The board's own counters (GET_STATS). */
  async deviceStats(): Promise<StatsFields> {
    const { name: _n, ...s } = await this.command(nativeMessage('GET_STATS', {}), 'STATS');
    return s;
  }

  /** Round trip to the board (PING/PONG), in ms of the modem's clock. */
  async ping(): Promise<number> {
    const t0 = this.clock.now();
    const nonce = Math.floor(Math.random() * 0xffff_ffff) >>> 0;
    const r = await this.command(nativeMessage('PING', { nonce }), 'PONG');
    if (r.nonce !== nonce) throw new TrickleError('ERR_MODEM_TIMEOUT', 'modem', `PONG nonce ${r.nonce} does not match PING ${nonce}`);
    return this.clock.now() - t0;
  }

  async close(): Promise<void> {
    if (this.stateValue === 'closed') return;
    await this.shutdown(undefined);
  }

  // ---------------------------------------------------------------------------------------

  private setState(s: NativeModemState, err?: Error): void {
    this.stateValue = s;
    for (const l of this.stateListeners) l(s, err);
  }

  private unusableError(): TrickleError | undefined {
    if (this.stateValue === 'closed') {
      return new TrickleError('ERR_LINK_CLOSED', 'link', `native modem on ${this.link.name} is closed`, { link: this.link.name });
    }
    if (this.stateValue === 'reconnecting') {
      return new TrickleError('ERR_LINK_IO', 'link', `native modem device ${this.link.name} is gone; reconnecting`, { link: this.link.name });
    }
    return undefined;
  }

  private attach(link: Link): void {
    const gen = ++this.generation;
    this.link = link;
    this.deframer = new NativeDeframer();
    link.onData((chunk) => { if (gen === this.generation) this.onBytes(chunk); });
    link.onClose((err) => { if (gen === this.generation) this.onLinkClosed(err); });
  }

  private deviceName(): string { return this.link.name; }

  /** HELLO, capabilities check, SET_RADIO, read-back. */
  private async configure(): Promise<void> {
    const dev = this.deviceName();
    let version: MessageOf<'VERSION'>;
    try {
      version = await this.command(nativeMessage('HELLO', { minVersion: 1, maxVersion: PROTOCOL_VERSION }), 'VERSION');
    } catch (e) {
      if (e instanceof TrickleError && e.code === 'ERR_MODEM_TIMEOUT') {
        throw new TrickleError('ERR_MODEM_TIMEOUT', 'modem',
          `no answer to HELLO from ${dev} within ${this.replyTimeoutMs} ms: the board is not running Trickle firmware, ` +
          `or is still booting; for a transparent serial radio (EBYTE, SiK, HC-12) use the transparent dialect`,
          { device: dev }, { cause: e });
      }
      throw e;
    }
    if (version.protocolVersion < 1 || version.protocolVersion > PROTOCOL_VERSION) {
      throw new NativeConfigError(`${dev} chose protocol version ${version.protocolVersion}; this host speaks 1..${PROTOCOL_VERSION}`,
        { setting: 'protocolVersion', wanted: PROTOCOL_VERSION, reported: version.protocolVersion, device: dev });
    }
    const { name: _c, ...caps } = await this.command(nativeMessage('GET_CAPABILITIES', {}), 'CAPABILITIES');
    this.info = {
      protocolVersion: version.protocolVersion,
      firmwareName: version.firmwareName,
      firmwareVersion: `${version.firmwareMajor}.${version.firmwareMinor}.${version.firmwarePatch}`,
      chip: CHIP_NAMES[version.chip] ?? `unknown chip ${version.chip}`,
      capabilities: caps,
    };
    this.checkCapabilities(caps, version, dev);
    try {
      await this.command(nativeMessage('SET_RADIO', radioSettingsToWire(this.wanted)), 'OK');
    } catch (e) {
      if (e instanceof NativeDeviceError && e.errorName === 'BAD_PARAMETER') {
        const setting = e.param ? (PARAM_TO_SETTING[e.param] ?? e.param) : 'a setting';
        throw new NativeConfigError(
          `${dev} refused ${setting} = ${describeWanted(this.wanted, setting)}: ${String(e.detail?.['message'] || 'unsupported value')}`,
          { setting, wanted: describeWanted(this.wanted, setting), device: dev });
      }
      throw e;
    }
    const reported = radioSettingsFromWire(await this.command(nativeMessage('GET_RADIO', {}), 'RADIO'));
    for (const key of SETTING_NAMES) {
      if (reported[key] !== this.wanted[key]) {
        throw new NativeConfigError(
          `${dev} did not apply ${key}: wanted ${String(this.wanted[key])}, the board reports ${String(reported[key])}; ` +
          `refusing to start (check that the value is legal for this board and region, or configure ${String(reported[key])})`,
          { setting: key, wanted: this.wanted[key], reported: reported[key], device: dev });
      }
    }
    this.radio = reported;
  }

  private checkCapabilities(caps: CapabilitiesFields, version: VersionFields, dev: string): void {
    const w = this.wanted;
    const fail = (setting: keyof NativeRadioSettings, allowed: string): never => {
      throw new NativeConfigError(`${dev} (${CHIP_NAMES[version.chip] ?? 'unknown chip'}) cannot use ${setting} = ${String(w[setting])}; allowed: ${allowed}`,
        { setting, wanted: w[setting], allowed, device: dev });
    };
    if (w.frequencyHz < caps.frequencyMinHz || w.frequencyHz > caps.frequencyMaxHz) {
      fail('frequencyHz', `${caps.frequencyMinHz}..${caps.frequencyMaxHz} Hz`);
    }
    const bwIndex = (BANDWIDTHS_HZ as readonly number[]).indexOf(w.bandwidthHz);
    const bwAllowed = BANDWIDTHS_HZ.filter((_b, i) => (caps.bandwidthMask >> i) & 1).join(', ');
    if (bwIndex < 0 || ((caps.bandwidthMask >> bwIndex) & 1) === 0) fail('bandwidthHz', `${bwAllowed} Hz`);
    const sfs = [5, 6, 7, 8, 9, 10, 11, 12].filter((sf) => (caps.sfMask >> sf) & 1);
    if (!sfs.includes(w.sf)) fail('sf', sfs.join(', '));
    const crs = [5, 6, 7, 8].filter((cr) => (caps.codingRateMask >> (cr - 5)) & 1);
    if (!crs.includes(w.codingRate)) fail('codingRate', crs.join(', '));
    if (w.txPowerDbm < caps.txPowerMinDbm || w.txPowerDbm > caps.txPowerMaxDbm) {
      fail('txPowerDbm', `${caps.txPowerMinDbm}..${caps.txPowerMaxDbm} dBm`);
    }
    if (!w.crcOn) fail('crcOn', 'true (Trickle relies on the LoRa payload CRC)');
    if (w.implicitHeader) fail('implicitHeader', 'false (Trickle frames have variable length)');
    if (this.opts.maxFrameLen !== undefined && this.opts.maxFrameLen > caps.maxPayload) {
      throw new NativeConfigError(`${dev} carries at most ${caps.maxPayload} bytes per frame; maxFrameLen ${this.opts.maxFrameLen} is too large`,
        { setting: 'maxFrameLen', wanted: this.opts.maxFrameLen, allowed: `1..${caps.maxPayload}`, device: dev });
    }
  }

  /** One control command at a time; resolves with the expected reply. */
  private command<K extends MessageName>(msg: NativeMessage, reply: K, timeoutMs = this.replyTimeoutMs): Promise<MessageOf<K>> {
    const run = this.controlChain.then(() => this.exchange(msg, reply, timeoutMs));
    this.controlChain = run.catch(() => undefined);
    return run as Promise<MessageOf<K>>;
  }

  private exchange(msg: NativeMessage, reply: MessageName, timeoutMs: number): Promise<NativeMessage> {
    if (this.stateValue === 'closed') {
      return Promise.reject(new TrickleError('ERR_LINK_CLOSED', 'link', `native modem on ${this.link.name} is closed`));
    }
    const command = MessageType[msg.name];
    return new Promise<NativeMessage>((resolve, reject) => {
      const timer = this.clock.setTimer(timeoutMs, () => {
        if (this.pendingControl?.timer !== timer) return;
        this.pendingControl = undefined;
        reject(new TrickleError('ERR_MODEM_TIMEOUT', 'modem', `no ${reply} from ${this.link.name} within ${timeoutMs} ms after ${msg.name}`,
          { device: this.link.name, command: msg.name, timeoutMs }));
      });
      this.pendingControl = { command, reply, resolve, reject, timer };
      this.write(encodeNativeFrame(msg)).catch((e: unknown) => {
        if (this.pendingControl?.timer !== timer) return;
        this.pendingControl = undefined;
        timer.cancel();
        reject(e as Error);
      });
    });
  }

  private async transmit(frame: Uint8Array): Promise<SendReport> {
    await this.gate;
    const notUsable = this.unusableError();
    if (notUsable) throw notUsable;
    const seq = this.nextSeq;
    this.nextSeq = (this.nextSeq + 1) & 0xffff;
    const wire = encodeNativeFrame(nativeMessage('TRANSMIT', { seq, frame }));
    const radio = this.radio ?? this.wanted;
    const timeoutMs = Math.ceil(2 * airtimeUpperBoundMs(frame.length, radio)) + this.replyTimeoutMs;
    return new Promise<SendReport>((resolve, reject) => {
      const timer = this.clock.setTimer(timeoutMs, () => {
        if (this.pendingTx?.timer !== timer) return;
        this.pendingTx = undefined;
        reject(new TrickleError('ERR_MODEM_TIMEOUT', 'modem', `no TX_DONE for seq ${seq} from ${this.link.name} within ${timeoutMs} ms`,
          { device: this.link.name, seq, timeoutMs }));
      });
      this.pendingTx = { seq, wireBytes: wire.length, resolve, reject, timer };
      this.write(wire).catch((e: unknown) => {
        if (this.pendingTx?.timer !== timer) return;
        this.pendingTx = undefined;
        timer.cancel();
        reject(e as Error);
      });
    });
  }

  private async write(bytes: Uint8Array): Promise<void> {
    await this.link.write(bytes);
    this.counters.wireBytesSent += bytes.length;
  }

  private drop(code: ErrorCode, detail: Record<string, unknown>): void {
    this.counters.dropped[code] = (this.counters.dropped[code] ?? 0) + 1;
    for (const l of this.dropListeners) l(code, detail);
  }

  private onBytes(chunk: Uint8Array): void {
    this.counters.wireBytesReceived += chunk.length;
    this.lastHeardMs = this.clock.now();
    const { messages, errors } = this.deframer.push(chunk);
    for (const e of errors) this.drop(e.code, { ...e.detail, message: e.message });
    for (const m of messages) this.dispatch(m);
  }

  private dispatch(m: NativeMessage): void {
    switch (m.name) {
      case 'RECEIVE': {
        if (this.stateValue === 'closed') return;
        this.counters.framesReceived++;
        const meta: NativeReceivedFrameMeta = { rssiDbm: m.rssiDbm, snrDb: m.snrQuarterDb / 4, frequencyErrorHz: m.frequencyErrorHz };
        for (const l of this.frameListeners) l(m.frame, meta);
        return;
      }
      case 'TX_DONE': {
        const p = this.pendingTx;
        if (p === undefined || p.seq !== m.seq) { this.unexpected(m); return; }
        this.pendingTx = undefined;
        p.timer.cancel();
        this.counters.framesSent++;
        p.resolve({ wireBytes: p.wireBytes, airtimeMs: m.airtimeUs / 1000 });
        return;
      }
      case 'ERROR': {
        const codeName = NATIVE_ERROR_CODE_NAMES[m.code] ?? `code ${m.code}`;
        const param = m.param !== 0 ? PARAM_NAMES[m.param] ?? `param ${m.param}` : undefined;
        const cmdName = nameOfType(m.command);
        const text = `${this.link.name} answered ${cmdName ?? `command 0x${m.command.toString(16)}`} with ERROR ${codeName}` +
          `${param ? ` (${param})` : ''}${m.message ? `: ${m.message}` : ''}`;
        const detail = { device: this.link.name, command: cmdName, error: codeName, param, message: m.message, seq: m.seq };
        if (m.command === MessageType.TRANSMIT) {
          const p = this.pendingTx;
          if (p === undefined || p.seq !== m.seq) { this.unexpected(m); return; }
          this.pendingTx = undefined;
          p.timer.cancel();
          p.reject(new NativeDeviceError(text, codeName, param, detail));
          return;
        }
        const c = this.pendingControl;
        if (c !== undefined && c.command === m.command) {
          this.pendingControl = undefined;
          c.timer.cancel();
          c.reject(new NativeDeviceError(text, codeName, param, detail));
          return;
        }
        this.drop(ERR_NATIVE_PROTOCOL, { reason: 'unmatched-error', ...detail });
        return;
      }
      case 'BOOT':
        if (this.stateValue === 'ready') void this.afterBoot();
        return;
      default: {
        const c = this.pendingControl;
        if (c !== undefined && c.reply === m.name && (m.name !== 'OK' || m.command === c.command)) {
          this.pendingControl = undefined;
          c.timer.cancel();
          c.resolve(m);
          return;
        }
        this.unexpected(m);
      }
    }
  }

  private unexpected(m: NativeMessage): void {
    this.drop(ERR_NATIVE_PROTOCOL, { reason: 'unexpected-message', type: m.name });
  }

  /** The board restarted by itself: re-run the start sequence; sends wait on the gate. */
  private async afterBoot(): Promise<void> {
    let open!: () => void;
    this.gate = new Promise<void>((resolve) => { open = resolve; });
    const p = this.pendingTx;
    if (p) {
      this.pendingTx = undefined;
      p.timer.cancel();
      p.reject(new TrickleError('ERR_MODEM_TIMEOUT', 'modem', `${this.link.name} rebooted before TX_DONE for seq ${p.seq}`, { seq: p.seq }));
    }
    this.setState('starting');
    try {
      await this.configure();
      if (this.stateValue === 'starting') this.setState('ready');
    } catch (err) {
      // If the device went away meanwhile, the reconnection loop has taken over.
      if (this.stateValue === 'starting') await this.shutdown(err as Error);
    } finally {
      open();
    }
  }

  private onLinkClosed(err: Error | undefined): void {
    const cause = err ?? new TrickleError('ERR_LINK_IO', 'link', `link ${this.link.name} closed`, { link: this.link.name });
    const lost = new TrickleError('ERR_LINK_IO', 'link', `native modem device ${this.link.name} went away: ${cause.message}`,
      { link: this.link.name }, { cause });
    this.failPending(lost);
    // Before the first start completed, `start` rejects through the failed command.
    if (!this.started) return;
    if (this.stateValue === 'ready' || this.stateValue === 'starting') {
      // 'starting' here is the restart after BOOT.
      if (this.opts.reopenLink) void this.reconnect(lost);
      else void this.shutdown(lost);
    }
    // 'reconnecting': the loop notices the failed handshake and tries again.
  }

  private async reconnect(cause: Error): Promise<void> {
    this.stopPing();
    this.setState('reconnecting', cause);
    const initial = this.opts.reconnect?.initialDelayMs ?? 250;
    const maxDelay = this.opts.reconnect?.maxDelayMs ?? 5_000;
    const maxAttempts = this.opts.reconnect?.maxAttempts ?? Number.POSITIVE_INFINITY;
    let delay = initial;
    let lastError: Error = cause;
    for (let attempt = 1; ; attempt++) {
      if (attempt > maxAttempts) {
        await this.shutdown(new TrickleError('ERR_LINK_IO', 'link',
          `native modem device ${this.link.name} did not come back after ${maxAttempts} attempts: ${lastError.message}`,
          { link: this.link.name, attempts: maxAttempts }, { cause: lastError }));
        return;
      }
      await this.sleep(delay);
      delay = Math.min(delay * 2, maxDelay);
      if (this.stateValue !== 'reconnecting') return;
      let link: Link;
      try {
        link = await this.opts.reopenLink!();
      } catch (e) {
        lastError = e as Error;
        continue;
      }
      if (this.stateValue !== 'reconnecting') { await link.close(); return; }
      this.attach(link);
      try {
        await this.configure();
      } catch (e) {
        if (e instanceof NativeConfigError) { await this.shutdown(e); return; }
        lastError = e as Error;
        this.generation++; // ignore this link's close
        await link.close();
        continue;
      }
      if (this.stateValue !== 'reconnecting') return;
      this.reconnectCount++;
      this.lastHeardMs = this.clock.now();
      this.setState('ready');
      this.schedulePing();
      return;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = this.clock.setTimer(ms, () => { this.sleeping = undefined; resolve(); });
      this.sleeping = { timer, wake: resolve };
    });
  }

  private schedulePing(): void {
    this.stopPing();
    if (this.pingIntervalMs <= 0 || this.stateValue === 'closed') return;
    const due = this.lastHeardMs + this.pingIntervalMs - this.clock.now();
    this.pingTimer = this.clock.setTimer(Math.max(0, due), () => {
      this.pingTimer = undefined;
      if (this.stateValue !== 'ready') return;
      if (this.clock.now() - this.lastHeardMs < this.pingIntervalMs) { this.schedulePing(); return; }
      this.ping().then(() => this.schedulePing(), (err: unknown) => {
        if (this.stateValue !== 'ready') return;
        const e = err as Error;
        if (e instanceof TrickleError && e.code === 'ERR_MODEM_TIMEOUT') {
          void this.shutdown(new TrickleError('ERR_MODEM_TIMEOUT', 'modem',
            `${this.link.name} stopped answering (no PONG within ${this.replyTimeoutMs} ms): the firmware is wedged; power-cycle the board`,
            { device: this.link.name }, { cause: e }));
        } else {
          this.schedulePing();
        }
      });
    });
  }

  private stopPing(): void {
    this.pingTimer?.cancel();
    this.pingTimer = undefined;
  }

  private failPending(err: Error): void {
    const c = this.pendingControl;
    if (c) { this.pendingControl = undefined; c.timer.cancel(); c.reject(err); }
    const t = this.pendingTx;
    if (t) { this.pendingTx = undefined; t.timer.cancel(); t.reject(err); }
  }

  private async shutdown(err: Error | undefined): Promise<void> {
    if (this.stateValue === 'closed') return;
    this.stopPing();
    if (this.sleeping) { this.sleeping.timer.cancel(); this.sleeping.wake(); this.sleeping = undefined; }
    this.setState('closed', err);
    this.generation++;
    this.failPending(err ?? new TrickleError('ERR_LINK_CLOSED', 'link', `native modem on ${this.link.name} closed`));
    await this.link.close();
    this.closeEvents.emitClose(err);
  }
}

function nameOfType(type: number): MessageName | undefined {
  for (const [name, t] of Object.entries(MessageType)) if (t === type) return name as MessageName;
  return undefined;
}

function describeWanted(w: NativeRadioSettings, setting: string): string {
  if (setting in w) return String(w[setting as keyof NativeRadioSettings]);
  if (setting === 'crcOn/implicitHeader/invertIq') return `crcOn ${w.crcOn}, implicitHeader ${w.implicitHeader}, invertIq ${w.invertIq}`;
  return '?';
}

export interface OpenNativeModemOptions extends Omit<NativeModemOptions, 'reopenLink'> {
  /** UART speed for boards behind a USB-UART bridge (irrelevant for USB CDC and PTYs). Default 115200. */
  baudRate?: number;
  /** Reopen the device when it disappears (default true). */
  reconnectOnLoss?: boolean;
}

/** Open the serial device at `path`, run the start sequence, and reopen `path` if the device goes away. */
export async function openNativeModem(path: string, options: OpenNativeModemOptions): Promise<NativeModem> {
  const { baudRate = 115_200, reconnectOnLoss = true, ...rest } = options;
  const open = (): Promise<Link> => openSerialLink(path, { baudRate });
  const link = await open();
  return NativeModem.start(link, { ...rest, ...(reconnectOnLoss ? { reopenLink: open } : {}) });
}
