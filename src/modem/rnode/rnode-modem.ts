/**
 * The RNode dialect: a LoRa board running the RNode firmware (RNode, LilyGO T-Beam/LoRa32,
 * Heltec, RAK4631 …) in host-controlled mode, spoken to with the KISS-framed RNode command
 * set (rnode-protocol.ts, which cites where each number comes from).
 *
 * Start sequence (what Reticulum's RNodeInterface does, per the protocol description):
 *
 *   CMD_DETECT 0x73 → 0x46, CMD_FW_VERSION → [major, minor] (≥ 1.52),
 *   CMD_FREQUENCY, CMD_BANDWIDTH, CMD_TXPOWER, CMD_SF, CMD_CR, [CMD_ST_ALOCK, CMD_LT_ALOCK],
 *   CMD_RADIO_STATE on.
 *
 * Every setting command is answered by the firmware with the value now in force. We wait
 * for each answer and VERIFY it: a board that clamps or ignores a value (a TX power its
 * amplifier cannot do, a bandwidth its chip lacks) makes `start` reject with an
 * RNodeConfigError (code ERR_MODEM_CONFIG) naming the setting, the wanted and the reported
 * value, and the link is closed. The frequency may differ by up to `frequencyToleranceHz`
 * (default 100 Hz, Reticulum's tolerance: the firmware reports the synthesiser's step).
 *
 * Receive: the firmware sends CMD_STAT_RSSI and CMD_STAT_SNR just before each CMD_DATA; they
 * become the frame's `rssiDbm` / `snrDb`. CMD_STAT_CHTM (sent about once a second) is kept
 * as `channelStats` (own airtime and channel load, short and long term).
 *
 * Frame size: `send` takes up to 508 bytes (the firmware's HW_MTU). The firmware sends up to
 * 254 bytes as one LoRa packet and 255..508 bytes as two (the split flag in its one-byte
 * on-air header, see rnode-protocol.ts); the peer RNode joins them. So the on-air cost is
 * one header byte per LoRa packet: 1 byte up to 254, 2 bytes above. Lower `maxFrameLen`
 * to 254 to keep every frame in one LoRa packet (a lost half loses the whole frame, and
 * the split pair cannot be interleaved with other traffic).
 *
 * Duty cycle: the scheduler owns the legal limit. `setAirtimeLocks` (or `airtimeLocks` at
 * start) sets the firmware's own short-term (15 s) and long-term (1 h) airtime locks as a
 * second line of defence: past the lock the firmware holds packets back by itself.
 * `rnodeAirtimeLocksForDutyCycle` turns the region's duty cycle into lock values.
 *
 * Reconnection contract. An RNodeModem lives exactly as long as its link. When the device
 * disappears (USB unplugged, the PTY's other side gone) the link fails, pending and later
 * `send`s reject with ERR_LINK_*, and `onClose` fires once with the link's ERR_LINK_IO; a
 * CMD_RESET from the board (it rebooted and lost its settings) closes the modem the same
 * way with ERR_MODEM_DEVICE. The OWNER reopens: it opens the device again (the same path,
 * `openRNodeModem(path, options)`, with `openAttempts`/`retryDelayMs` to wait for the USB
 * device to come back) and gets a new RNodeModem that has re-run detect, configure and
 * verify: a returning board may have rebooted with other settings, so nothing is assumed.
 */
import { ConfigError, TrickleError, type ErrorCode, type Layer, type WireError } from '../../errors.ts';
import type { Link } from '../../link/link.ts';
import { LinkEvents } from '../../link/link-events.ts';
import { openSerialLink } from '../../link/serial.ts';
import { systemClock, type Clock, type TimerHandle } from '../../util/clock.ts';
import { toHex } from '../../util/bytes.ts';
import type { Modem, ModemCapabilities, ModemStats, ReceivedFrameMeta, SendReport } from '../modem.ts';
import { ModemCounters } from '../modem-counters.ts';
import {
  DETECT_REQ, DETECT_RESP, LEAVE_BYTE, RADIO_STATE_OFF, RADIO_STATE_ON, RNODE_HW_MTU, RNODE_MIN_FIRMWARE, RNodeCmd, RNodeDecoder,
  RNodeError, decodeAirtimeLock, decodeChannelStats, decodeInt8, decodeRssi, decodeSnr, encodeAirtimeLock, encodeRNodeFrame,
  encodeTxPower, readU32be, rnodeErrorName, rnodeOnAirOverhead, rnodeSerialOverhead, u32be, type RNodeChannelStats,
} from './rnode-protocol.ts';

export interface RNodeRadioSettings {
  frequencyHz: number;
  /** LoRa bandwidth in Hz as the firmware takes it (7800 … 500000; 812500/1625000 on SX128x). */
  bandwidthHz: number;
  sf: number;
  /** Coding rate denominator 5..8 (4/5 .. 4/8). */
  codingRate: number;
  txPowerDbm: number;
}

export type RNodeRadioInput = Pick<RNodeRadioSettings, 'frequencyHz' | 'bandwidthHz' | 'sf'> & Partial<RNodeRadioSettings>;

export const RNODE_RADIO_DEFAULTS = { codingRate: 5, txPowerDbm: 14 } as const;

export interface RNodeAirtimeLocks {
  /** Share of the last 15 s the firmware may transmit, percent (0.01 % steps). */
  shortTermPct: number;
  /** Share of the last hour, percent (0.01 % steps). */
  longTermPct: number;
}

export interface RNodeModemOptions {
  radio: RNodeRadioInput;
  /** Set the firmware's airtime locks at start (see setAirtimeLocks). */
  airtimeLocks?: RNodeAirtimeLocks;
  /** Largest frame `send` accepts: 1..508 (default 508: the firmware splits above 254). */
  maxFrameLen?: number;
  /** Wait for CMD_READY before handing the next frame to the firmware (Reticulum's flow_control). Default false. */
  flowControl?: boolean;
  /** Longest wait for the answer to a command. Default 1000 ms. */
  replyTimeoutMs?: number;
  /** Longest wait for CMD_READY with flowControl. Default 30 s. */
  readyTimeoutMs?: number;
  /** Accept a reported frequency this close to the wanted one. Default 100 Hz. */
  frequencyToleranceHz?: number;
  /** Oldest firmware accepted. Default 1.52 (what Reticulum requires). */
  minFirmware?: readonly [number, number];
  clock?: Clock;
}

/** Options after validation, with defaults filled in. */
export interface RNodeModemConfig {
  radio: RNodeRadioSettings;
  airtimeLocks: RNodeAirtimeLocks | undefined;
  maxFrameLen: number;
  flowControl: boolean;
  replyTimeoutMs: number;
  readyTimeoutMs: number;
  frequencyToleranceHz: number;
  minFirmware: readonly [number, number];
}

/** ERR_MODEM_CONFIG: the RNode refused or did not apply a setting. detail: { setting, wanted, reported?, allowed?, device }. */
export class RNodeConfigError extends ConfigError {
  override readonly code: ErrorCode = 'ERR_MODEM_CONFIG';
  override readonly layer: Layer = 'modem';
  constructor(message: string, detail: { setting: string; wanted: unknown; reported?: unknown; allowed?: string; device: string }) {
    super(message, detail);
    this.name = 'RNodeConfigError';
  }
}

function badOption(key: string, value: unknown, allowed: string): ConfigError {
  return new ConfigError(`RNode ${key} ${String(value)} is not allowed; allowed: ${allowed}`, { key, value, allowed });
}

function intIn(key: string, v: unknown, lo: number, hi: number, allowed = `an integer from ${lo} to ${hi}`): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw badOption(key, v, allowed);
  return v;
}

function checkLocks(l: RNodeAirtimeLocks): RNodeAirtimeLocks {
  for (const key of ['shortTermPct', 'longTermPct'] as const) {
    const v = l[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 100) {
      throw badOption(`airtimeLocks.${key}`, v, 'a percentage from 0 to 100 (0.01 % steps; 0 turns the lock off)');
    }
  }
  return { shortTermPct: Math.round(l.shortTermPct * 100) / 100, longTermPct: Math.round(l.longTermPct * 100) / 100 };
}

/** Validate options and fill in defaults; throws ConfigError naming the bad key and the allowed values. */
export function resolveRNodeModemConfig(o: RNodeModemOptions): RNodeModemConfig {
  if (o === undefined || o === null || o.radio === undefined) {
    throw new ConfigError('RNode radio settings are required: frequencyHz, bandwidthHz and sf (e.g. 869525000, 125000, 9)', { key: 'radio' });
  }
  const r = o.radio;
  const radio: RNodeRadioSettings = {
    // The firmware's and Reticulum's frequency range for single-radio RNodes.
    frequencyHz: intIn('radio.frequencyHz', r.frequencyHz, 137_000_000, 3_000_000_000, 'an integer number of Hz from 137000000 to 3000000000'),
    bandwidthHz: intIn('radio.bandwidthHz', r.bandwidthHz, 7_800, 1_625_000, 'an integer number of Hz from 7800 to 1625000 (LoRa: 7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000)'),
    sf: intIn('radio.sf', r.sf, 5, 12),
    codingRate: intIn('radio.codingRate', r.codingRate ?? RNODE_RADIO_DEFAULTS.codingRate, 5, 8, '5, 6, 7 or 8 (4/5 .. 4/8)'),
    txPowerDbm: intIn('radio.txPowerDbm', r.txPowerDbm ?? RNODE_RADIO_DEFAULTS.txPowerDbm, -9, 37, 'an integer dBm from -9 to 37 (what the board can do is checked against its answer)'),
  };
  return {
    radio,
    airtimeLocks: o.airtimeLocks === undefined ? undefined : checkLocks(o.airtimeLocks),
    maxFrameLen: intIn('maxFrameLen', o.maxFrameLen ?? RNODE_HW_MTU, 1, RNODE_HW_MTU,
      `an integer from 1 to ${RNODE_HW_MTU} (the RNode's HW_MTU; ≤ 254 keeps every frame in one LoRa packet)`),
    flowControl: o.flowControl ?? false,
    replyTimeoutMs: intIn('replyTimeoutMs', o.replyTimeoutMs ?? 1_000, 1, 60_000),
    readyTimeoutMs: intIn('readyTimeoutMs', o.readyTimeoutMs ?? 30_000, 1, 600_000),
    frequencyToleranceHz: intIn('frequencyToleranceHz', o.frequencyToleranceHz ?? 100, 0, 100_000),
    minFirmware: o.minFirmware ?? RNODE_MIN_FIRMWARE,
  };
}

/**
 * Airtime locks for a channel whose rules allow `dutyCycle` (a fraction, 0.01 = 1 %) per
 * hour. Long term: exactly the legal share (the firmware's long-term window is the same
 * hour), so the lock only bites if the scheduler's ledger were wrong. Short term: 100 %
 * (no lock) by default, because an hourly budget may legally be spent in one burst: any
 * 15 s lock derived from it would be stricter than the law and second-guess the scheduler.
 */
export function rnodeAirtimeLocksForDutyCycle(dutyCycle: number, options: { shortTermPct?: number } = {}): RNodeAirtimeLocks {
  if (!(typeof dutyCycle === 'number' && dutyCycle > 0 && dutyCycle <= 1)) {
    throw new ConfigError(`duty cycle must be a fraction in (0, 1] (0.01 for 1 %), got ${String(dutyCycle)}`, { key: 'dutyCycle', value: dutyCycle });
  }
  // Rounded down to the firmware's 0.01 % step so the lock is never above the legal share.
  return checkLocks({ shortTermPct: options.shortTermPct ?? 100, longTermPct: Math.floor(dutyCycle * 10_000) / 100 });
}

export interface RNodeDeviceInfo {
  firmwareVersion: string;
  firmwareMajor: number;
  firmwareMinor: number;
}

export type RNodeModemState = 'starting' | 'ready' | 'closed';

interface Pending {
  cmd: number;
  what: string;
  resolve: (data: Uint8Array) => void;
  reject: (e: Error) => void;
  timer: TimerHandle;
}

const SILENT_STATS = new Set<number>([
  RNodeCmd.STAT_RX, RNodeCmd.STAT_TX, RNodeCmd.STAT_PHYPRM, RNodeCmd.STAT_BAT, RNodeCmd.STAT_CSMA, RNodeCmd.STAT_TEMP,
  RNodeCmd.RANDOM, RNodeCmd.PLATFORM, RNodeCmd.MCU, RNodeCmd.RADIO_LOCK,
  // Echoes of settings that nobody waits for (the firmware repeats them on its own at times).
  RNodeCmd.FREQUENCY, RNodeCmd.BANDWIDTH, RNodeCmd.TXPOWER, RNodeCmd.SF, RNodeCmd.CR, RNodeCmd.RADIO_STATE,
  RNodeCmd.ST_ALOCK, RNodeCmd.LT_ALOCK, RNodeCmd.DETECT, RNodeCmd.FW_VERSION,
]);

export class RNodeModem implements Modem {
  readonly dialect = 'rnode';
  readonly config: RNodeModemConfig;
  /** Resolves when detect, configure and verify succeeded; rejects (and the link closes) otherwise. */
  readonly ready: Promise<void>;
  private readonly clock: Clock;
  private readonly decoder = new RNodeDecoder({ maxFrameLen: RNODE_HW_MTU });
  private stateValue: RNodeModemState = 'starting';
  private info: RNodeDeviceInfo | undefined;
  private locks: RNodeAirtimeLocks | undefined;
  private stats_: RNodeChannelStats | undefined;
  private pending: Pending | undefined;
  private commandChain: Promise<unknown> = Promise.resolve();
  private txChain: Promise<unknown> = Promise.resolve();
  private deviceReady: { wait: Promise<void>; release: () => void } | undefined;
  private rxRssi: number | undefined;
  private rxSnr: number | undefined;
  private readonly closeEvents = new LinkEvents();
  private readonly frameListeners: ((frame: Uint8Array, meta: ReceivedFrameMeta) => void)[] = [];
  private readonly book = new ModemCounters();
  private readonly chtmListeners: ((s: RNodeChannelStats) => void)[] = [];
  private readonly counters = this.book.counters;

  /**
   * Throws ConfigError for bad options; starts the detect/configure/verify sequence at once
   * (`ready`). Usable as a `createModem` hook through `rnodeModemFactory`; `send` waits for
   * `ready`. Prefer `RNodeModem.start` when you can await.
   */
  constructor(private readonly link: Link, options: RNodeModemOptions) {
    this.config = resolveRNodeModemConfig(options);
    this.clock = options.clock ?? systemClock;
    link.onData((chunk) => this.receive(chunk));
    link.onClose((err) => this.finish(err));
    this.ready = this.configure().then(() => {
      if (this.stateValue === 'starting') this.stateValue = 'ready';
    }, async (err: unknown) => {
      // The owner learns about a refused start through onClose too (createModem callers do not await).
      this.finish(err as Error);
      await this.link.close();
      throw err;
    });
    this.ready.catch(() => { /* reported through onClose */ });
  }

  /** Run the start sequence on `link`; resolves with a ready modem or rejects (the link is closed then). */
  static async start(link: Link, options: RNodeModemOptions): Promise<RNodeModem> {
    const modem = new RNodeModem(link, options);
    await modem.ready;
    return modem;
  }

  get state(): RNodeModemState { return this.stateValue; }
  get device(): RNodeDeviceInfo | undefined { return this.info ? { ...this.info } : undefined; }
  /** The radio settings as the board reported them (after a successful start). */
  get radioSettings(): RNodeRadioSettings { return { ...this.config.radio }; }
  /** The airtime locks in force, as the board echoed them. */
  get airtimeLocks(): RNodeAirtimeLocks | undefined { return this.locks ? { ...this.locks } : undefined; }
  /** The latest CMD_STAT_CHTM report. */
  get channelStats(): RNodeChannelStats | undefined { return this.stats_ ? { ...this.stats_ } : undefined; }

  get capabilities(): ModemCapabilities {
    const locked = this.locks !== undefined && (this.locks.longTermPct > 0 || (this.locks.shortTermPct > 0 && this.locks.shortTermPct < 100));
    // The firmware runs its own CSMA (carrier detect, contention window: CMD_STAT_CSMA reports it) before each
    // packet; no command asks it for a sense now (CMD_STAT_CHTM only reports load and RSSI about once a second).
    return { maxFrameLen: this.config.maxFrameLen, enforcesDutyCycle: locked, reportsAirtime: false, channelSense: 'firmware' };
  }

  async send(frame: Uint8Array): Promise<SendReport> {
    const { maxFrameLen } = this.config;
    if (frame.length === 0 || frame.length > maxFrameLen) {
      throw new TrickleError('ERR_MODEM_MTU', 'modem',
        `frame of ${frame.length} bytes cannot be sent: the RNode modem carries 1 to ${maxFrameLen} bytes` +
        (maxFrameLen === RNODE_HW_MTU ? ' (its HW_MTU; above 254 the firmware splits it into two LoRa packets)' : ''),
        { len: frame.length, maxFrameLen });
    }
    await this.usable();
    const wire = encodeRNodeFrame(RNodeCmd.DATA, frame);
    const run = this.txChain.then(async () => {
      await this.usable();
      if (this.config.flowControl) await this.waitDeviceReady();
      await this.link.write(wire);
      if (this.config.flowControl) this.armDeviceReady();
      this.counters.framesSent++;
      this.counters.wireBytesSent += wire.length;
      return { wireBytes: wire.length };
    });
    this.txChain = run.catch(() => undefined);
    return run;
  }

  /** On air: the firmware's one-byte header per LoRa packet (2 above 254 bytes). Serial: KISS framing. */
  framingOverhead(payload: Uint8Array): { onAir: number; serial: number } {
    return { onAir: rnodeOnAirOverhead(payload.length), serial: rnodeSerialOverhead(payload) };
  }

  /**
   * Set the firmware's airtime locks (percent of the last 15 s and of the last hour, 0.01 %
   * steps, 0 = off) and verify the echoes. Rejects with RNodeConfigError if the board
   * reports other values.
   */
  async setAirtimeLocks(shortTermPct: number, longTermPct: number): Promise<RNodeAirtimeLocks> {
    if (this.stateValue !== 'starting') await this.usable();
    const locks = checkLocks({ shortTermPct, longTermPct });
    const st = await this.setting('airtimeLocks.shortTermPct', RNodeCmd.ST_ALOCK, encodeAirtimeLock(locks.shortTermPct),
      decodeAirtimeLock, locks.shortTermPct);
    const lt = await this.setting('airtimeLocks.longTermPct', RNodeCmd.LT_ALOCK, encodeAirtimeLock(locks.longTermPct),
      decodeAirtimeLock, locks.longTermPct);
    this.locks = { shortTermPct: st, longTermPct: lt };
    return { ...this.locks };
  }

  onFrame(listener: (frame: Uint8Array, meta: ReceivedFrameMeta) => void): void { this.frameListeners.push(listener); }
  onDrop(listener: (code: ErrorCode, detail: Record<string, unknown>) => void): void { this.book.onDrop(listener); }
  onClose(listener: (err?: Error) => void): void { this.closeEvents.onClose(listener); }
  /** Every CMD_STAT_CHTM report (about once a second while the radio is on). */
  onChannelStats(listener: (stats: RNodeChannelStats) => void): void { this.chtmListeners.push(listener); }

  stats(): ModemStats { return this.book.snapshot(); }

  /** Turn the radio off, tell the firmware the host leaves (CMD_LEAVE), close the link. */
  async close(): Promise<void> {
    if (this.stateValue === 'closed') return;
    const goodbye = [encodeRNodeFrame(RNodeCmd.RADIO_STATE, Uint8Array.of(RADIO_STATE_OFF)), encodeRNodeFrame(RNodeCmd.LEAVE, Uint8Array.of(LEAVE_BYTE))];
    for (const b of goodbye) await this.link.write(b).catch(() => undefined);
    this.finish(undefined);
    await this.link.close();
  }

  // ---------------------------------------------------------------------------------------

  private get name(): string { return this.link.name; }

  private async usable(): Promise<void> {
    if (this.stateValue === 'starting') await this.ready;
    if (this.stateValue === 'closed') {
      throw new TrickleError('ERR_LINK_CLOSED', 'link', `RNode on ${this.name} is closed; reopen the device (openRNodeModem)`, { link: this.name });
    }
  }

  private finish(err: Error | undefined): void {
    if (this.stateValue === 'closed') return;
    this.stateValue = 'closed';
    const p = this.pending;
    this.pending = undefined;
    if (p) {
      p.timer.cancel();
      p.reject(err ?? new TrickleError('ERR_LINK_CLOSED', 'link', `RNode on ${this.name} closed while waiting for ${p.what}`, { link: this.name }));
    }
    this.deviceReady?.release();
    this.closeEvents.emitClose(err);
  }

  private armDeviceReady(): void {
    let release!: () => void;
    const wait = new Promise<void>((r) => { release = r; });
    this.deviceReady = { wait, release };
  }

  private async waitDeviceReady(): Promise<void> {
    const r = this.deviceReady;
    if (!r) return;
    let timer: TimerHandle | undefined;
    await Promise.race([r.wait, new Promise<void>((resolve) => {
      timer = this.clock.setTimer(this.config.readyTimeoutMs, () => {
        this.drop('ERR_MODEM_TIMEOUT', `no CMD_READY from the RNode on ${this.name} within ${this.config.readyTimeoutMs} ms; sending anyway`);
        resolve();
      });
    })]);
    timer?.cancel();
    this.deviceReady = undefined;
  }

  /** Send one command and resolve with the data of the first answer carrying `cmd`. */
  private command(cmd: number, data: Uint8Array, what: string): Promise<Uint8Array> {
    const run = this.commandChain.then(() => new Promise<Uint8Array>((resolve, reject) => {
      if (this.stateValue === 'closed') {
        reject(new TrickleError('ERR_LINK_CLOSED', 'link', `RNode on ${this.name} is closed`, { link: this.name }));
        return;
      }
      const timer = this.clock.setTimer(this.config.replyTimeoutMs, () => {
        if (this.pending?.timer !== timer) return;
        this.pending = undefined;
        reject(new TrickleError('ERR_MODEM_TIMEOUT', 'modem',
          `the RNode on ${this.name} did not answer ${what} within ${this.config.replyTimeoutMs} ms`, { device: this.name, command: cmd }));
      });
      this.pending = { cmd, what, resolve, reject, timer };
      const wire = encodeRNodeFrame(cmd, data);
      this.counters.wireBytesSent += wire.length;
      this.link.write(wire).catch((e: unknown) => {
        if (this.pending?.timer === timer) { this.pending = undefined; timer.cancel(); reject(e as Error); }
      });
    }));
    this.commandChain = run.catch(() => undefined);
    return run;
  }

  /** Send a setting, check the echo, return the reported value. */
  private async setting<T>(setting: string, cmd: number, data: Uint8Array, decode: (d: Uint8Array) => T | undefined, wanted: T,
    same: (a: T, b: T) => boolean = (a, b) => a === b): Promise<T> {
    const reply = await this.command(cmd, data, `${setting} (command 0x${cmd.toString(16).padStart(2, '0')})`);
    const reported = decode(reply);
    if (reported === undefined || !same(reported, wanted)) {
      const shown = reported === undefined ? `an answer of ${reply.length} bytes that is not a ${setting}` : String(reported);
      throw new RNodeConfigError(
        `the RNode on ${this.name} did not apply ${setting}: wanted ${String(wanted)}, the board reports ${shown}; ` +
        `refusing to start (check that the value is legal for this board and its radio chip, or configure ${shown})`,
        { setting, wanted, reported: reported ?? Array.from(reply), device: this.name });
    }
    return reported;
  }

  private async configure(): Promise<void> {
    const dev = this.name;
    let detect: Uint8Array;
    try {
      detect = await this.command(RNodeCmd.DETECT, Uint8Array.of(DETECT_REQ), 'CMD_DETECT');
    } catch (e) {
      if (e instanceof TrickleError && e.code === 'ERR_MODEM_TIMEOUT') {
        throw new TrickleError('ERR_MODEM_TIMEOUT', 'modem',
          `no answer to CMD_DETECT from ${dev} within ${this.config.replyTimeoutMs} ms: the device is not running the RNode firmware, ` +
          `is in TNC mode, or is still booting; flash or update it with rnodeconf (see hardware/rnode.md)`, { device: dev }, { cause: e });
      }
      throw e;
    }
    if (detect.length !== 1 || detect[0] !== DETECT_RESP) {
      throw new TrickleError('ERR_MODEM_CONFIG', 'modem', `${dev} answered CMD_DETECT with ${toHex(detect) || 'nothing'}, not 0x46: not an RNode`, { device: dev });
    }
    const fw = await this.command(RNodeCmd.FW_VERSION, Uint8Array.of(0x00), 'CMD_FW_VERSION');
    if (fw.length !== 2) throw new TrickleError('ERR_MODEM_CONFIG', 'modem', `${dev} sent a firmware version of ${fw.length} bytes (expected 2)`, { device: dev });
    const [major, minor] = [fw[0]!, fw[1]!];
    this.info = { firmwareMajor: major, firmwareMinor: minor, firmwareVersion: `${major}.${String(minor).padStart(2, '0')}` };
    const [minMaj, minMin] = this.config.minFirmware;
    if (major < minMaj || (major === minMaj && minor < minMin)) {
      throw new RNodeConfigError(`${dev} runs RNode firmware ${this.info.firmwareVersion}; ${minMaj}.${String(minMin).padStart(2, '0')} or newer is required: update it with \`rnodeconf ${dev} -u\``,
        { setting: 'firmwareVersion', wanted: `>= ${minMaj}.${minMin}`, reported: this.info.firmwareVersion, device: dev });
    }
    const r = this.config.radio;
    const tol = this.config.frequencyToleranceHz;
    const single = (d: Uint8Array): number | undefined => (d.length === 1 ? d[0] : undefined);
    await this.setting('frequencyHz', RNodeCmd.FREQUENCY, u32be(r.frequencyHz), readU32be, r.frequencyHz, (a, b) => Math.abs(a - b) <= tol);
    await this.setting('bandwidthHz', RNodeCmd.BANDWIDTH, u32be(r.bandwidthHz), readU32be, r.bandwidthHz);
    await this.setting('txPowerDbm', RNodeCmd.TXPOWER, encodeTxPower(r.txPowerDbm), (d) => (d.length === 1 ? decodeInt8(d[0]!) : undefined), r.txPowerDbm);
    await this.setting('sf', RNodeCmd.SF, Uint8Array.of(r.sf), single, r.sf);
    await this.setting('codingRate', RNodeCmd.CR, Uint8Array.of(r.codingRate), single, r.codingRate);
    if (this.config.airtimeLocks) await this.setAirtimeLocks(this.config.airtimeLocks.shortTermPct, this.config.airtimeLocks.longTermPct);
    try {
      await this.setting('radioState', RNodeCmd.RADIO_STATE, Uint8Array.of(RADIO_STATE_ON), single, RADIO_STATE_ON);
    } catch (e) {
      if (e instanceof TrickleError && e.code === 'ERR_MODEM_DEVICE') {
        throw new RNodeConfigError(`the RNode on ${dev} could not start its radio with these settings (${e.message}); ` +
          'check frequency, bandwidth and TX power against the board', { setting: 'radioState', wanted: 'on', reported: 'ERROR_INITRADIO', device: dev });
      }
      throw e;
    }
  }

  private drop(code: ErrorCode, message: string, detail: Readonly<Record<string, unknown>> = {}): void { this.book.drop(code, message, detail); }

  private dropError(err: WireError): void { this.book.dropError(err); }

  private receive(chunk: Uint8Array): void {
    this.counters.wireBytesReceived += chunk.length;
    const { frames, errors } = this.decoder.push(chunk);
    for (const e of errors) this.dropError(e);
    for (const f of frames) this.handle(f.cmd, f.data);
  }

  private handle(cmd: number, data: Uint8Array): void {
    const p = this.pending;
    if (cmd === RNodeCmd.ERROR) {
      const code = data[0] ?? 0;
      const err = new TrickleError('ERR_MODEM_DEVICE', 'modem', `the RNode on ${this.name} reported ERROR_${rnodeErrorName(code)} (0x${code.toString(16).padStart(2, '0')})`,
        { device: this.name, error: rnodeErrorName(code) });
      // During the start sequence an error answers the command in flight (INITRADIO answers RADIO_STATE).
      if (p && this.stateValue === 'starting') { this.pending = undefined; p.timer.cancel(); p.reject(err); return; }
      this.drop('ERR_MODEM_DEVICE', err.message, { error: rnodeErrorName(code), lostFrame: code === RNodeError.TXFAILED || code === RNodeError.QUEUE_FULL });
      return;
    }
    if (p && cmd === p.cmd) {
      this.pending = undefined;
      p.timer.cancel();
      p.resolve(data);
      return;
    }
    switch (cmd) {
      case RNodeCmd.DATA: {
        if (data.length === 0) { this.drop('ERR_FRAME_EMPTY', 'empty CMD_DATA from the RNode; dropped'); return; }
        const meta: ReceivedFrameMeta = {};
        if (this.rxRssi !== undefined) meta.rssiDbm = this.rxRssi;
        if (this.rxSnr !== undefined) meta.snrDb = this.rxSnr;
        this.rxRssi = undefined;
        this.rxSnr = undefined;
        if (this.stateValue !== 'ready') return; // not configured yet: whatever it heard is on unknown settings
        this.counters.framesReceived++;
        for (const l of this.frameListeners) l(data, meta);
        return;
      }
      case RNodeCmd.STAT_RSSI: if (data.length === 1) this.rxRssi = decodeRssi(data[0]!); return;
      case RNodeCmd.STAT_SNR: if (data.length === 1) this.rxSnr = decodeSnr(data[0]!); return;
      case RNodeCmd.STAT_CHTM: {
        const s = decodeChannelStats(data);
        if (!s) { this.drop('ERR_KISS_COMMAND', `CMD_STAT_CHTM of ${data.length} bytes (expected 8 or 11); ignored`, { len: data.length }); return; }
        this.stats_ = s;
        for (const l of this.chtmListeners) l({ ...s });
        return;
      }
      case RNodeCmd.READY: this.deviceReady?.release(); return;
      case RNodeCmd.RESET:
        if (this.stateValue === 'ready') {
          const err = new TrickleError('ERR_MODEM_DEVICE', 'modem',
            `the RNode on ${this.name} reset itself and lost its radio settings; reopen the device to configure it again`, { device: this.name });
          this.finish(err);
          void this.link.close();
        }
        return;
      default:
        if (SILENT_STATS.has(cmd)) return;
        this.drop('ERR_KISS_COMMAND', `RNode frame with unknown command 0x${cmd.toString(16).padStart(2, '0')} (${data.length} bytes); ignored`, { command: cmd, len: data.length });
    }
  }
}

/**
 * Validate `options` now (so a bad setting fails before any device is opened) and return a
 * factory for the radio stack's `createModem: (link) => Modem` hook. The modem configures
 * itself on the link; `send` waits until it is ready, and a refused start reaches `onClose`.
 */
export function rnodeModemFactory(options: RNodeModemOptions): (link: Link) => RNodeModem {
  resolveRNodeModemConfig(options);
  return (link) => new RNodeModem(link, options);
}

export interface OpenRNodeModemOptions extends RNodeModemOptions {
  /** Serial speed of the RNode's USB UART. Default 115200 (the RNode firmware's). */
  baudRate?: number;
  /** Tries to open the device before giving up (the USB device may be re-enumerating). Default 1. */
  openAttempts?: number;
  /** Wait between tries. Default 500 ms. */
  retryDelayMs?: number;
}

/** Open `path`, detect, configure and verify. Also how the owner reopens after `onClose` (see the module comment). */
export async function openRNodeModem(path: string, options: OpenRNodeModemOptions): Promise<RNodeModem> {
  const { baudRate = 115_200, openAttempts = 1, retryDelayMs = 500, ...modemOptions } = options;
  resolveRNodeModemConfig(modemOptions);
  const clock = modemOptions.clock ?? systemClock;
  for (let attempt = 1; ; attempt++) {
    let link: Link;
    try {
      link = await openSerialLink(path, { baudRate });
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (attempt >= openAttempts || (code !== 'ERR_LINK_NOT_FOUND' && code !== 'ERR_LINK_BUSY' && code !== 'ERR_LINK_OPEN')) throw e;
      await new Promise<void>((r) => clock.setTimer(retryDelayMs, r));
      continue;
    }
    try {
      return await RNodeModem.start(link, modemOptions);
    } catch (e) {
      // A board that has just come back (USB re-enumeration, a reboot) may miss the first
      // detect: within the attempts the owner allowed, open again rather than give up.
      if (attempt >= openAttempts || (e as { code?: string }).code !== 'ERR_MODEM_TIMEOUT') throw e;
      await link.close().catch(() => undefined);
      await new Promise<void>((r) => clock.setTimer(retryDelayMs, r));
    }
  }
}
