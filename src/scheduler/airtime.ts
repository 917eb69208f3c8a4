/**
 * Time on air of one radio frame. Pure: no clock, no I/O.
 *
 * LoRa: the Semtech time-on-air formula.
 *   SX1276/77/78/79 datasheet §4.1.1.7 ("Time on air") and AN1200.13 "LoRa Modem Designer's Guide":
 *     T_sym      = 2^SF / BW
 *     T_preamble = (n_preamble + 4.25) · T_sym
 *     n_payload  = 8 + max(ceil((8·PL − 4·SF + 28 + 16·CRC − 20·IH) / (4·(SF − 2·DE))) · (CR + 4), 0)
 *   SX1261/2 datasheet §6.1.4 ("LoRa Time-on-Air") writes the same thing for SF7–SF12 as
 *     N_sym = n_preamble + 4.25 + 8 + ceil(max(8·PL + N_bit_CRC − 4·SF + 8 + N_sym_header, 0) / (4·(SF − 2·DE))) · (CR + 4)
 *   (N_bit_CRC = 16 or 0, N_sym_header = 20 explicit or 0 implicit: 8 + 20 = 28 and 8 + 0 = 28 − 20), and
 *   gives a different variant for SF5 and SF6 (SX126x/SX128x only):
 *     N_sym = n_preamble + 6.25 + 8 + ceil(max(8·PL + N_bit_CRC − 4·SF + N_sym_header, 0) / (4·SF)) · (CR + 4)
 *   CR is 1..4 in the formula; Trickle names the coding rate by its denominator (5..8 for 4/5..4/8).
 *   Low data rate optimisation (DE) is mandated by Semtech when a symbol lasts 16 ms or more
 *   (SX1276 datasheet §4.1.1.6; SX126x §6.1.1.4); 'auto' applies exactly that rule.
 *
 * Bandwidths: the chips derive them from a 32 MHz crystal, so the "7.8 kHz" setting is really
 * 500/64 kHz = 7812.5 Hz, "10.4 kHz" is 125/12 kHz, and so on. Callers may pass either the
 * nominal value in Hz (7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000)
 * or the exact one; the formula always uses the exact one. (With it every LoRa airtime on these
 * bandwidths is a whole number of microseconds.)
 *
 * FSK / AFSK: bits on air divided by the bit rate; see `fskAirtimeMs` and `ax25AfskAirtimeMs`.
 */
import { TrickleError } from '../errors.ts';

export type LoraChip = 'sx127x' | 'sx126x';

export interface LoraParams {
  /** PHY payload length in bytes (what the radio's FIFO holds), 0..255. */
  payloadBytes: number;
  /** Spreading factor 5..12 (5 needs an SX126x; 6 on an SX127x needs an implicit header). */
  sf: number;
  /** Bandwidth in Hz, nominal or exact (see the module comment). */
  bandwidthHz: number;
  /** Coding rate denominator: 5, 6, 7 or 8 for 4/5 .. 4/8. */
  codingRate: number;
  /** Programmed preamble length in symbols (6..65535). Default 8. */
  preambleSymbols?: number;
  /** Explicit (variable-length) header. Default true. */
  explicitHeader?: boolean;
  /** Payload CRC on. Default true. */
  crc?: boolean;
  /** Low data rate optimisation: 'auto' (default) turns it on when a symbol lasts ≥ 16 ms. */
  lowDataRateOptimize?: 'auto' | boolean;
  /**
   * Which formula family. Only matters for SF5/SF6: 'sx126x' (default, also SX128x-style) uses the
   * SF5/6 variant; 'sx127x' uses the classic formula and refuses SF5.
   */
  chip?: LoraChip;
}

export interface LoraAirtime {
  airtimeMs: number;
  symbolMs: number;
  preambleMs: number;
  payloadSymbols: number;
  /** Total symbols including the preamble (may end in .25). */
  totalSymbols: number;
  lowDataRateOptimize: boolean;
  /** The exact bandwidth the formula used. */
  bandwidthHz: number;
}

/** Nominal LoRa bandwidths in Hz (as people write them) → exact values. */
export const LORA_BANDWIDTHS_HZ: readonly { nominalHz: number; exactHz: number }[] = [
  { nominalHz: 7_800, exactHz: 500_000 / 64 },
  { nominalHz: 10_400, exactHz: 125_000 / 12 },
  { nominalHz: 15_600, exactHz: 125_000 / 8 },
  { nominalHz: 20_800, exactHz: 125_000 / 6 },
  { nominalHz: 31_250, exactHz: 31_250 },
  { nominalHz: 41_700, exactHz: 125_000 / 3 },
  { nominalHz: 62_500, exactHz: 62_500 },
  { nominalHz: 125_000, exactHz: 125_000 },
  { nominalHz: 250_000, exactHz: 250_000 },
  { nominalHz: 500_000, exactHz: 500_000 },
];

const ALLOWED_BW_TEXT = LORA_BANDWIDTHS_HZ.map((b) => b.nominalHz).join(', ');

/** Symbol time at or above which Semtech mandates low data rate optimisation. */
export const LDRO_SYMBOL_MS = 16;

function paramsError(message: string, detail: Record<string, unknown>): TrickleError {
  return new TrickleError('ERR_AIRTIME_PARAMS', 'scheduler', message, detail);
}

/** Map a nominal or exact bandwidth to the exact one; throws ERR_AIRTIME_PARAMS otherwise. */
export function exactLoraBandwidthHz(bandwidthHz: number): number {
  if (Number.isFinite(bandwidthHz)) {
    for (const b of LORA_BANDWIDTHS_HZ) {
      // 0.5 % tolerance: 41_666, 41_667, 41_700 and 41_670 all mean the 41.7 kHz setting.
      if (Math.abs(bandwidthHz - b.exactHz) <= b.exactHz * 0.005) return b.exactHz;
    }
  }
  throw paramsError(`bandwidthHz ${String(bandwidthHz)} is not a LoRa bandwidth; allowed (Hz): ${ALLOWED_BW_TEXT}`, { bandwidthHz });
}

function checkInt(name: string, v: unknown, lo: number, hi: number, allowedText: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw paramsError(`${name} ${String(v)} is not allowed; allowed: ${allowedText}`, { [name]: v });
  }
  return v;
}

/** Full LoRa time-on-air breakdown. Throws ERR_AIRTIME_PARAMS naming the allowed values. */
export function loraAirtime(p: LoraParams): LoraAirtime {
  const chip: LoraChip = p.chip ?? 'sx126x';
  if (chip !== 'sx127x' && chip !== 'sx126x') {
    throw paramsError(`chip ${String(chip)} is not allowed; allowed: sx127x, sx126x`, { chip });
  }
  const sf = checkInt('sf', p.sf, chip === 'sx127x' ? 6 : 5, 12, chip === 'sx127x' ? '6..12 on an SX127x' : '5..12');
  const cr = checkInt('codingRate', p.codingRate, 5, 8, '5, 6, 7, 8 (meaning 4/5 .. 4/8)');
  const pl = checkInt('payloadBytes', p.payloadBytes, 0, 255, '0..255');
  const nPre = checkInt('preambleSymbols', p.preambleSymbols ?? 8, 6, 65_535, '6..65535');
  const bw = exactLoraBandwidthHz(p.bandwidthHz);
  const explicitHeader = p.explicitHeader ?? true;
  const crc = p.crc ?? true;
  if (typeof explicitHeader !== 'boolean') throw paramsError('explicitHeader must be true or false', { explicitHeader });
  if (typeof crc !== 'boolean') throw paramsError('crc must be true or false', { crc });
  if (chip === 'sx127x' && sf === 6 && explicitHeader) {
    // SX1276 datasheet §4.1.1.2: SF6 works in implicit header mode only.
    throw paramsError('sf 6 on an SX127x needs explicitHeader: false (implicit header); allowed with an explicit header: sf 7..12', { sf, chip });
  }
  const ldroOpt = p.lowDataRateOptimize ?? 'auto';
  if (ldroOpt !== 'auto' && typeof ldroOpt !== 'boolean') {
    throw paramsError(`lowDataRateOptimize ${String(ldroOpt)} is not allowed; allowed: 'auto', true, false`, { lowDataRateOptimize: ldroOpt });
  }

  const symbolMs = (2 ** sf / bw) * 1000;
  const de = ldroOpt === 'auto' ? symbolMs >= LDRO_SYMBOL_MS : ldroOpt;
  const crcBits = crc ? 16 : 0;
  const headerBits = explicitHeader ? 20 : 0;
  const crIndex = cr - 4; // 1..4

  let preambleSymbols: number;
  let numerator: number;
  let denominator: number;
  if (sf <= 6 && chip === 'sx126x') {
    preambleSymbols = nPre + 6.25;
    numerator = 8 * pl + crcBits - 4 * sf + headerBits;
    denominator = 4 * sf;
  } else {
    preambleSymbols = nPre + 4.25;
    numerator = 8 * pl + crcBits - 4 * sf + 8 + headerBits;
    denominator = 4 * (sf - (de ? 2 : 0));
  }
  const payloadSymbols = 8 + Math.ceil(Math.max(numerator, 0) / denominator) * (crIndex + 4);
  const totalSymbols = preambleSymbols + payloadSymbols;
  // Computed in microseconds first: 2^SF·1e6/BW is an integer multiple of 0.25 µs on every
  // supported bandwidth, so this avoids drifting float noise (56.576 stays 56.576).
  const symbolUs = (2 ** sf * 1e6) / bw;
  const airtimeMs = Math.round(totalSymbols * symbolUs * 1000) / 1e6;
  return {
    airtimeMs,
    symbolMs,
    preambleMs: Math.round(preambleSymbols * symbolUs * 1000) / 1e6,
    payloadSymbols,
    totalSymbols,
    lowDataRateOptimize: de,
    bandwidthHz: bw,
  };
}

/** LoRa time on air in milliseconds. */
export function loraAirtimeMs(p: LoraParams): number {
  return loraAirtime(p).airtimeMs;
}

/**
 * The largest payload (bytes, ≤ 255) whose airtime is ≤ maxAirtimeMs with these settings,
 * or -1 when even an empty payload is too long.
 */
export function loraMaxPayloadBytes(p: Omit<LoraParams, 'payloadBytes'>, maxAirtimeMs: number): number {
  let best = -1;
  for (let n = 0; n <= 255; n++) {
    if (loraAirtimeMs({ ...p, payloadBytes: n }) <= maxAirtimeMs) best = n;
    else break; // airtime is nondecreasing in payload length
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// FSK and AFSK (KISS TNCs)

export interface FskParams {
  payloadBytes: number;
  /** Bit rate in bit/s (e.g. 1200, 9600, 50000). */
  bitRateBps: number;
  /** Preamble bytes (0x55/0xAA). Default 5 (LoRaWAN FSK uses 5 bytes). */
  preambleBytes?: number;
  /** Sync word bytes. Default 3 (LoRaWAN FSK: 0xC194C1). */
  syncWordBytes?: number;
  /** Variable-length packets carry a length byte. Default true. */
  lengthByte?: boolean;
  /** CRC bytes appended by the radio. Default 2. */
  crcBytes?: number;
}

/** Packet-mode (G)FSK airtime: every byte is 8 bits at bitRateBps. */
export function fskAirtimeMs(p: FskParams): number {
  const pl = checkInt('payloadBytes', p.payloadBytes, 0, 65_535, '0..65535');
  if (!(typeof p.bitRateBps === 'number' && Number.isFinite(p.bitRateBps) && p.bitRateBps > 0)) {
    throw paramsError(`bitRateBps ${String(p.bitRateBps)} is not allowed; allowed: a positive number of bit/s (e.g. 1200, 9600, 50000)`, { bitRateBps: p.bitRateBps });
  }
  const pre = checkInt('preambleBytes', p.preambleBytes ?? 5, 0, 65_535, '0..65535');
  const sync = checkInt('syncWordBytes', p.syncWordBytes ?? 3, 0, 8, '0..8');
  const crc = checkInt('crcBytes', p.crcBytes ?? 2, 0, 4, '0..4');
  const bytes = pre + sync + ((p.lengthByte ?? true) ? 1 : 0) + pl + crc;
  return (bytes * 8 * 1000) / p.bitRateBps;
}

/**
 * Bit stuffing (HDLC, ISO/IEC 13239 §4.3.1; AX.25 v2.2 §3.6): after five consecutive 1 bits the
 * sender inserts a 0. 'worst' assumes all ones (one extra bit per five); 'expected' assumes
 * uniformly random bits, for which a run of five ones (counted from the last 0, sent or stuffed)
 * takes on average 2^6 − 2 = 62 bits, so 1/62 extra; 'none' ignores stuffing.
 */
export type BitStuffing = 'worst' | 'expected' | 'none';

export interface Ax25AfskParams {
  /**
   * Bytes handed to the KISS TNC for one frame: the AX.25 frame from the first address byte to
   * the end of the information field (no flags, no FCS; the TNC adds them).
   */
  frameBytes: number;
  /** Modem baud rate. Default 1200 (Bell 202 AFSK). */
  baud?: number;
  /** Key-up delay: KISS TXDELAY (command 0x01) × 10 ms. Default 300 ms (TXDELAY 30). */
  txDelayMs?: number;
  /** Time the transmitter stays keyed after the frame (TXTAIL). Default 0. */
  txTailMs?: number;
  /** Flags (0x7E) before the frame after TXDELAY. Default 1. */
  openingFlags?: number;
  /** Flags after the FCS. Default 1. */
  closingFlags?: number;
  /** Default 'worst', so the duty-cycle ledger never under-counts. */
  stuffing?: BitStuffing;
}

/** Exact number of stuffed bits for these bytes sent LSB first (HDLC/AX.25 bit order). */
export function hdlcStuffedBits(bytes: Uint8Array): number {
  let ones = 0;
  let stuffed = 0;
  for (const b of bytes) {
    for (let i = 0; i < 8; i++) {
      if ((b >> i) & 1) {
        ones++;
        if (ones === 5) { stuffed++; ones = 0; }
      } else {
        ones = 0;
      }
    }
  }
  return stuffed;
}

/** AX.25 over AFSK (or any HDLC-framed FSK) airtime, including TXDELAY, flags, FCS and stuffing. */
export function ax25AfskAirtimeMs(p: Ax25AfskParams): number {
  const n = checkInt('frameBytes', p.frameBytes, 1, 65_535, '1..65535');
  const baud = p.baud ?? 1200;
  if (!(Number.isFinite(baud) && baud > 0)) {
    throw paramsError(`baud ${String(baud)} is not allowed; allowed: a positive number (e.g. 300, 1200, 9600)`, { baud });
  }
  const txDelayMs = p.txDelayMs ?? 300;
  const txTailMs = p.txTailMs ?? 0;
  if (!(txDelayMs >= 0 && txTailMs >= 0)) throw paramsError('txDelayMs and txTailMs must be ≥ 0', { txDelayMs, txTailMs });
  const opening = checkInt('openingFlags', p.openingFlags ?? 1, 0, 1000, '0..1000');
  const closing = checkInt('closingFlags', p.closingFlags ?? 1, 1, 1000, '1..1000');
  const stuffing = p.stuffing ?? 'worst';
  const dataBits = (n + 2) * 8; // + 16-bit FCS (AX.25 v2.2 §3.8)
  let stuffedBits: number;
  if (stuffing === 'worst') stuffedBits = Math.floor(dataBits / 5);
  else if (stuffing === 'expected') stuffedBits = dataBits / 62;
  else if (stuffing === 'none') stuffedBits = 0;
  else throw paramsError(`stuffing ${String(stuffing)} is not allowed; allowed: worst, expected, none`, { stuffing });
  const bits = (opening + closing) * 8 + dataBits + stuffedBits;
  return txDelayMs + (bits * 1000) / baud + txTailMs;
}
