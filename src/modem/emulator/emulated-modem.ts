/**
 * An emulated board running Trickle firmware: it speaks the native protocol
 * (firmware-protocol/spec/) byte for byte on a Link (the device side of a PTY pair, or a
 * memory link in tests) and transmits on a simulated RfMedium.
 *
 * It behaves as the spec says a firmware must: answers every command with its reply or an
 * ERROR naming the command (and seq / param), refuses TRANSMIT and CAD before SET_RADIO,
 * answers BUSY while transmitting, reports TX_DONE with the airtime after the frame has
 * left (on the medium's clock), and pushes RECEIVE for every frame the medium delivers.
 *
 * Test hooks (things real hardware does that a test needs on demand):
 * - `misreport`: GET_RADIO answers these values instead of the settings in force (a board
 *   that silently clamps a value);
 * - `hang()` / `unhang()`: stop answering anything (a wedged firmware);
 * - `reboot(reason)`: lose the configuration and announce BOOT;
 * - `attach(link)`: move to a new link (the USB device re-enumerated), optionally rebooting.
 */
import type { Link } from '../../link/link.ts';
import type { Clock } from '../../util/clock.ts';
import { NativeDeframer, encodeNativeFrame, nativeMessage } from '../native/codec.ts';
import {
  BANDWIDTHS_HZ, BootReason, Chip, MESSAGE_LAYOUTS, MessageType, NativeErrorCode, Param, PROTOCOL_VERSION, RadioFlags, Features,
  type ChipName, type NativeMessage, type RadioFields, type StatsFields,
} from '../native/protocol-generated.ts';
import type { RfMedium, RfNode, RfPosition, RfRadioConfig } from './rf-medium.ts';

export interface EmulatedModemOptions {
  /** Name on the medium and in logs. */
  name: string;
  positionM?: RfPosition;
  crystalPpm?: number;
  chip?: ChipName;
  firmwareName?: string;
  firmwareVersion?: [number, number, number];
  frequencyMinHz?: number;
  frequencyMaxHz?: number;
  maxPayload?: number;
  txPowerMinDbm?: number;
  txPowerMaxDbm?: number;
  /** GET_RADIO reports these values instead of the real ones (to test read-back checks). */
  misreport?: Partial<RadioFields>;
}

const SX127X: readonly ChipName[] = ['SX1272', 'SX1276', 'SX1277', 'SX1278', 'SX1279'];

/** RadioFields (wire form) → the medium's config. */
export function radioFieldsToConfig(r: RadioFields): RfRadioConfig {
  return {
    frequencyHz: r.frequencyHz, bandwidthHz: r.bandwidthHz, sf: r.sf, codingRate: r.codingRate, txPowerDbm: r.txPowerDbm,
    preambleSymbols: r.preambleSymbols, syncWord: r.syncWord,
    crcOn: (r.flags & RadioFlags.CRC_ON) !== 0,
    implicitHeader: (r.flags & RadioFlags.IMPLICIT_HEADER) !== 0,
    invertIq: (r.flags & RadioFlags.INVERT_IQ) !== 0,
  };
}

type Settings = RadioFields;

/** Power-on register defaults of the emulated chip (unconfigured until SET_RADIO). */
const POWER_ON_SETTINGS: Settings = {
  frequencyHz: 868_100_000, bandwidthHz: 125_000, sf: 7, codingRate: 5, txPowerDbm: 14,
  preambleSymbols: 8, syncWord: 0x12, flags: RadioFlags.CRC_ON,
};

export class EmulatedModem {
  readonly options: Required<Omit<EmulatedModemOptions, 'misreport' | 'positionM' | 'crystalPpm'>> & Pick<EmulatedModemOptions, 'misreport'>;
  readonly node: RfNode;
  private link: Link | undefined;
  private deframer = new NativeDeframer();
  private settings: Settings = { ...POWER_ON_SETTINGS };
  private configured = false;
  private cadBusy = false;
  private hung = false;
  private everAttached = false;
  private bootMs: number;
  private stats: Omit<StatsFields, 'uptimeMs'> = zeroStats();
  private readonly clock: Clock;

  constructor(medium: RfMedium, options: EmulatedModemOptions) {
    const chip = options.chip ?? 'SX1262';
    const sx127x = SX127X.includes(chip);
    this.options = {
      name: options.name,
      chip,
      firmwareName: options.firmwareName ?? 'trickle-emulator',
      firmwareVersion: options.firmwareVersion ?? [0, 1, 0],
      frequencyMinHz: options.frequencyMinHz ?? (sx127x ? 137_000_000 : 150_000_000),
      frequencyMaxHz: options.frequencyMaxHz ?? (sx127x ? 1_020_000_000 : 960_000_000),
      maxPayload: options.maxPayload ?? 255,
      txPowerMinDbm: options.txPowerMinDbm ?? (sx127x ? 2 : -9),
      txPowerMaxDbm: options.txPowerMaxDbm ?? (sx127x ? 20 : 22),
      ...(options.misreport ? { misreport: options.misreport } : {}),
    };
    this.clock = medium.clock;
    this.bootMs = this.clock.now();
    this.node = medium.join({
      name: options.name,
      ...(options.positionM ? { positionM: options.positionM } : {}),
      ...(options.crystalPpm !== undefined ? { crystalPpm: options.crystalPpm } : {}),
      chip: sx127x ? 'sx127x' : 'sx126x',
      config: () => (this.configured && !this.hung ? radioFieldsToConfig(this.settings) : undefined),
      onReceive: (frame, meta) => {
        this.stats.rxFrames++;
        this.stats.rxBytes += frame.length;
        this.stats.rxAirtimeMs += Math.round(meta.airtimeMs);
        this.send(nativeMessage('RECEIVE', {
          rssiDbm: meta.rssiDbm, snrQuarterDb: clamp(Math.round(meta.snrDb * 4), -128, 127),
          frequencyErrorHz: meta.frequencyErrorHz, frame,
        }));
      },
    });
  }

  get name(): string { return this.options.name; }
  /** Settings in force (wire form), or undefined before SET_RADIO. */
  get radio(): RadioFields | undefined { return this.configured ? { ...this.settings } : undefined; }
  get transmitting(): boolean { return this.node.transmitting; }

  /**
   * Serve the protocol on `link` (replacing any previous link). The first attach is the
   * power-on; `reboot` resets the firmware state again (a USB re-plug power-cycles the board).
   * Either way the firmware announces BOOT(POWER_ON), as the spec requires after every start.
   */
  attach(link: Link, options: { reboot?: boolean } = {}): void {
    const powerOn = options.reboot === true || !this.everAttached;
    if (options.reboot) this.resetState();
    this.everAttached = true;
    this.link = link;
    this.deframer = new NativeDeframer();
    link.onData((chunk) => { if (this.link === link) this.onBytes(chunk); });
    link.onClose(() => { if (this.link === link) this.link = undefined; });
    if (powerOn) this.send(nativeMessage('BOOT', { reason: BootReason.POWER_ON }));
  }

  /** Stop serving the current link (without closing it). */
  detach(): void { this.link = undefined; }

  /** Wedge the firmware: nothing is answered and nothing is received until `unhang()`. */
  hang(): void { this.hung = true; }
  unhang(): void { this.hung = false; }

  /** Restart the firmware: configuration and counters are lost; BOOT is announced. */
  reboot(reason: keyof typeof BootReason = 'WATCHDOG'): void {
    this.resetState();
    this.send(nativeMessage('BOOT', { reason: BootReason[reason] }));
  }

  /** Leave the medium and drop the link (does not close it: its owner does). */
  shutdown(): void {
    this.node.leave();
    this.link = undefined;
  }

  private resetState(): void {
    this.settings = { ...POWER_ON_SETTINGS };
    this.configured = false;
    this.cadBusy = false;
    this.hung = false;
    this.stats = zeroStats();
    this.bootMs = this.clock.now();
  }

  private send(msg: NativeMessage): void {
    if (this.hung) return;
    const link = this.link;
    if (link === undefined) return;
    link.write(encodeNativeFrame(msg)).catch(() => { /* the link reports its own close */ });
  }

  private error(code: keyof typeof NativeErrorCode, command: number, extra: { seq?: number; param?: number; message?: string } = {}): void {
    this.send(nativeMessage('ERROR', {
      code: NativeErrorCode[code], command, seq: extra.seq ?? 0, param: extra.param ?? Param.NONE, message: extra.message ?? '',
    }));
  }

  private onBytes(chunk: Uint8Array): void {
    if (this.hung) return;
    const { messages, errors } = this.deframer.push(chunk);
    for (const e of errors) {
      this.stats.serialErrors++;
      const reason = (e.detail as { reason?: string } | undefined)?.reason;
      const type = (e.detail as { type?: number } | undefined)?.type ?? 0;
      if (reason === 'unknown-type') this.error('UNKNOWN_COMMAND', type, { message: e.message.slice(0, 64) });
      else if (reason === 'short-payload' || reason === 'bad-length') this.error('BAD_LENGTH', type, { message: e.message.slice(0, 64) });
      else if (e.code !== 'ERR_FRAME_NOISE') this.error('BAD_FRAME', 0, { message: e.code });
    }
    for (const m of messages) this.handle(m);
  }

  private handle(m: NativeMessage): void {
    if (MESSAGE_LAYOUTS[m.name].direction !== 'host-to-modem') {
      this.error('UNKNOWN_COMMAND', MessageType[m.name], { message: `${m.name} is a modem-to-host message` });
      return;
    }
    const cmd = MessageType[m.name];
    switch (m.name) {
      case 'HELLO': {
        if (m.minVersion > PROTOCOL_VERSION || m.maxVersion < PROTOCOL_VERSION) {
          this.error('VERSION_UNSUPPORTED', cmd, { param: Param.PROTOCOL_VERSION, message: `this firmware speaks version ${PROTOCOL_VERSION} only` });
          return;
        }
        const [major, minor, patch] = this.options.firmwareVersion;
        this.send(nativeMessage('VERSION', {
          protocolVersion: PROTOCOL_VERSION, firmwareMajor: major, firmwareMinor: minor, firmwarePatch: patch,
          chip: Chip[this.options.chip], firmwareName: this.options.firmwareName,
        }));
        return;
      }
      case 'GET_CAPABILITIES': {
        const sx127x = SX127X.includes(this.options.chip);
        let sfMask = 0;
        for (let sf = sx127x ? 6 : 5; sf <= 12; sf++) sfMask |= 1 << sf;
        const bandwidthMask = BANDWIDTHS_HZ.reduce((mask, _bw, i) => mask | (1 << i), 0);
        this.send(nativeMessage('CAPABILITIES', {
          frequencyMinHz: this.options.frequencyMinHz, frequencyMaxHz: this.options.frequencyMaxHz,
          maxPayload: this.options.maxPayload, sfMask, bandwidthMask, codingRateMask: 0b1111,
          txPowerMinDbm: this.options.txPowerMinDbm, txPowerMaxDbm: this.options.txPowerMaxDbm,
          features: Features.CAD | Features.FREQUENCY_ERROR,
        }));
        return;
      }
      case 'SET_RADIO': {
        if (this.node.transmitting || this.cadBusy) { this.error('BUSY', cmd); return; }
        const { name: _n, ...wanted } = m;
        const bad = this.checkSettings(wanted);
        if (bad) { this.error('BAD_PARAMETER', cmd, bad); return; }
        this.settings = wanted;
        this.configured = true;
        this.send(nativeMessage('OK', { command: cmd }));
        return;
      }
      case 'GET_RADIO':
        this.send(nativeMessage('RADIO', { ...this.settings, ...this.options.misreport }));
        return;
      case 'TRANSMIT': {
        const seq = m.seq;
        if (!this.configured) { this.error('NOT_CONFIGURED', cmd, { seq }); return; }
        if (this.node.transmitting || this.cadBusy) { this.error('BUSY', cmd, { seq }); return; }
        if (m.frame.length === 0) { this.error('BAD_PARAMETER', cmd, { seq, param: Param.PAYLOAD, message: 'empty frame' }); return; }
        if (m.frame.length > this.options.maxPayload) {
          this.error('PAYLOAD_TOO_LONG', cmd, { seq, param: Param.PAYLOAD, message: `max ${this.options.maxPayload} bytes` });
          return;
        }
        const len = m.frame.length;
        this.node.transmit(m.frame, (airtimeMs) => {
          this.stats.txFrames++;
          this.stats.txBytes += len;
          this.stats.txAirtimeMs += Math.round(airtimeMs);
          this.send(nativeMessage('TX_DONE', { seq, airtimeUs: Math.round(airtimeMs * 1000) }));
        });
        return;
      }
      case 'CAD': {
        if (!this.configured) { this.error('NOT_CONFIGURED', cmd); return; }
        if (this.node.transmitting || this.cadBusy) { this.error('BUSY', cmd); return; }
        if (![1, 2, 4, 8, 16].includes(m.symbols)) {
          this.error('BAD_PARAMETER', cmd, { param: Param.CAD_SYMBOLS, message: 'symbols must be 1, 2, 4, 8 or 16' });
          return;
        }
        this.cadBusy = true;
        this.node.cad(m.symbols, (detected, durationMs) => {
          this.cadBusy = false;
          this.send(nativeMessage('CAD_RESULT', { detected: detected ? 1 : 0, durationUs: Math.round(durationMs * 1000) }));
        });
        return;
      }
      case 'GET_STATS':
        this.send(nativeMessage('STATS', { uptimeMs: Math.max(0, Math.round(this.clock.now() - this.bootMs)) >>> 0, ...wrap32(this.stats) }));
        return;
      case 'PING':
        this.send(nativeMessage('PONG', { nonce: m.nonce }));
        return;
      case 'RESET':
        this.send(nativeMessage('OK', { command: cmd }));
        this.clock.setTimer(10, () => this.reboot('RESET_COMMAND'));
        return;
      default:
        this.error('UNKNOWN_COMMAND', cmd);
    }
  }

  /** First unsupported value, as ERROR fields; undefined when all are fine. */
  private checkSettings(s: Settings): { param: number; message: string } | undefined {
    const o = this.options;
    const sx127x = SX127X.includes(o.chip);
    if (s.frequencyHz < o.frequencyMinHz || s.frequencyHz > o.frequencyMaxHz) {
      return { param: Param.FREQUENCY_HZ, message: `frequency ${o.frequencyMinHz}..${o.frequencyMaxHz} Hz` };
    }
    if (!(BANDWIDTHS_HZ as readonly number[]).includes(s.bandwidthHz)) return { param: Param.BANDWIDTH_HZ, message: 'not a LoRa bandwidth' };
    if (s.sf < (sx127x ? 6 : 5) || s.sf > 12) return { param: Param.SF, message: sx127x ? 'sf 6..12' : 'sf 5..12' };
    if (sx127x && s.sf === 6 && (s.flags & RadioFlags.IMPLICIT_HEADER) === 0) return { param: Param.SF, message: 'sf 6 needs implicit header' };
    if (s.codingRate < 5 || s.codingRate > 8) return { param: Param.CODING_RATE, message: 'coding rate 5..8' };
    if (s.txPowerDbm < o.txPowerMinDbm || s.txPowerDbm > o.txPowerMaxDbm) {
      return { param: Param.TX_POWER_DBM, message: `tx power ${o.txPowerMinDbm}..${o.txPowerMaxDbm} dBm` };
    }
    if (s.preambleSymbols < 6) return { param: Param.PREAMBLE_SYMBOLS, message: 'preamble 6..65535' };
    if ((s.flags & ~(RadioFlags.CRC_ON | RadioFlags.IMPLICIT_HEADER | RadioFlags.INVERT_IQ)) !== 0) {
      return { param: Param.FLAGS, message: 'unknown flag bits' };
    }
    return undefined;
  }
}

function zeroStats(): Omit<StatsFields, 'uptimeMs'> {
  return {
    txFrames: 0, txBytes: 0, txAirtimeMs: 0, rxFrames: 0, rxBytes: 0, rxAirtimeMs: 0,
    rxCrcErrors: 0, rxHeaderErrors: 0, serialErrors: 0,
  };
}

function wrap32<T extends Record<string, number>>(o: T): T {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(o)) out[k] = v >>> 0;
  return out as T;
}

function clamp(v: number, lo: number, hi: number): number { return Math.min(hi, Math.max(lo, v)); }

