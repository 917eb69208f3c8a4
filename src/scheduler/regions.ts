/**
 * Region rules: where a channel may sit and how much of the time it may be on air.
 * Pure data plus `resolveChannel`, which checks a configured channel once at start.
 *
 * Every row cites the regulation it comes from (see also hardware/regions.md). A channel
 * occupies [freqHz − bandwidthHz/2, freqHz + bandwidthHz/2]; BOTH edges must lie inside one
 * sub-band (edges may touch the sub-band's edges). A channel that straddles two sub-bands, sits
 * in a gap between them or outside the region is refused with a message naming the legal
 * sub-bands and a sensible channel in each.
 *
 * The limits a channel carries (`ChannelRules.limits`) are sliding-window budgets enforced by
 * DutyCycleLedger:
 * - duty cycle: airtime in any window of 3600 s ≤ dutyCycle × 3600 s (ETSI EN 300 220-1 defines
 *   duty cycle as on-time relative to an observation period of one hour; we apply it to EVERY
 *   one-hour window, which is never less strict than any fixed hour);
 * - dwell: airtime on one channel in any window of windowMs ≤ budgetMs (FCC 15.247);
 * - maxFrameAirtimeMs: no single transmission longer than this (AS923 / FCC 400 ms dwell).
 */
import { ConfigError, type ErrorCode } from '../errors.ts';

export type RegionId = 'eu868' | 'us915' | 'as923' | 'custom' | 'amateur';

/** A windowed airtime budget: airtime in any [t, t + windowMs) ≤ budgetMs. */
export interface WindowLimit {
  /** What it is, for status output: 'duty-cycle' or 'dwell'. */
  kind: 'duty-cycle' | 'dwell';
  windowMs: number;
  budgetMs: number;
}

/** A dwell rule that applies to channels of a given bandwidth range. */
export interface DwellRule {
  minBandwidthHz: number;
  maxBandwidthHz: number;
  /** Windowed dwell budget per channel, if any. */
  window?: { windowMs: number; budgetMs: number };
  /** Longest single transmission, if limited. */
  maxFrameAirtimeMs?: number;
  regulation: string;
}

export interface SubBand {
  /** Stable id, used as the ledger key and in status output. */
  id: string;
  lowHz: number;
  highHz: number;
  /** Fraction of any hour the device may transmit (0.001, 0.01, 0.1), or null for no duty-cycle limit. */
  dutyCycle: number | null;
  /** Maximum radiated power in mW e.r.p. (EU) / conducted (FCC), when the row has one. */
  maxPowerMw?: number;
  /** Dwell rules by channel bandwidth (the first matching rule applies). */
  dwell?: readonly DwellRule[];
  /** The citation for this row. */
  regulation: string;
  /** A channel that is legal in this sub-band, offered in error messages. */
  suggestedChannel: { freqHz: number; bandwidthHz: number };
  note?: string;
}

export interface Region {
  id: RegionId;
  name: string;
  subBands: readonly SubBand[];
  /** The channel used when the configuration names none. Must resolve. */
  defaultChannel: { freqHz: number; bandwidthHz: number };
  /** True for an explicit licensed (e.g. amateur) override: no duty-cycle limit from us. */
  licensed: boolean;
  regulation: string;
}

export interface ChannelRules {
  /** Ledger key: duty cycle is per sub-band. */
  subBandId: string;
  dutyCycle: number | null;
  limits: readonly WindowLimit[];
  maxFrameAirtimeMs: number | null;
  regulation: string;
}

export interface ResolvedChannel {
  regionId: RegionId;
  freqHz: number;
  bandwidthHz: number;
  lowEdgeHz: number;
  highEdgeHz: number;
  subBand: SubBand;
  rules: ChannelRules;
  licensed: boolean;
}

export const HOUR_MS = 3_600_000;

const EN300220 = 'ETSI EN 300 220-2 V3.2.1 Annex B (Table B.1) / ERC Recommendation 70-03 Annex 1';

/**
 * EU 863–870 MHz, non-specific short range devices: the bands K, L, M, N, P, Q of the harmonised
 * standard EN 300 220-2 (Annex B), which implement ERC/REC 70-03 Annex 1 and Commission
 * Implementing Decision (EU) 2019/1345. 70-03 also has a 0.1 % band over the whole of 863–870 MHz;
 * Trickle does not use that overlap: it takes the disjoint rows below, so a channel sits in
 * exactly one row and the gaps (868.6–868.7, 869.2–869.4, 869.65–869.7 MHz) are refused.
 */
const EU868_SUBBANDS: readonly SubBand[] = [
  {
    id: 'eu868-863-865', lowHz: 863_000_000, highHz: 865_000_000, dutyCycle: 0.001, maxPowerMw: 25,
    regulation: `${EN300220} band K (863–865 MHz, ≤ 25 mW e.r.p., ≤ 0.1 % duty cycle)`,
    suggestedChannel: { freqHz: 864_000_000, bandwidthHz: 125_000 },
  },
  {
    id: 'eu868-865-868', lowHz: 865_000_000, highHz: 868_000_000, dutyCycle: 0.01, maxPowerMw: 25,
    regulation: `${EN300220} band L (865–868 MHz, ≤ 25 mW e.r.p., ≤ 1 % duty cycle)`,
    suggestedChannel: { freqHz: 867_100_000, bandwidthHz: 125_000 },
  },
  {
    id: 'eu868-868.0-868.6', lowHz: 868_000_000, highHz: 868_600_000, dutyCycle: 0.01, maxPowerMw: 25,
    regulation: `${EN300220} band M (868.0–868.6 MHz, ≤ 25 mW e.r.p., ≤ 1 % duty cycle)`,
    suggestedChannel: { freqHz: 868_100_000, bandwidthHz: 125_000 },
  },
  {
    id: 'eu868-868.7-869.2', lowHz: 868_700_000, highHz: 869_200_000, dutyCycle: 0.001, maxPowerMw: 25,
    regulation: `${EN300220} band N (868.7–869.2 MHz, ≤ 25 mW e.r.p., ≤ 0.1 % duty cycle)`,
    suggestedChannel: { freqHz: 868_950_000, bandwidthHz: 125_000 },
  },
  {
    id: 'eu868-869.4-869.65', lowHz: 869_400_000, highHz: 869_650_000, dutyCycle: 0.1, maxPowerMw: 500,
    regulation: `${EN300220} band P (869.40–869.65 MHz, ≤ 500 mW e.r.p., ≤ 10 % duty cycle)`,
    suggestedChannel: { freqHz: 869_525_000, bandwidthHz: 125_000 },
    note: 'LoRaWAN gateways answer on 869.525 MHz (RX2); expect to share it.',
  },
  {
    id: 'eu868-869.7-870', lowHz: 869_700_000, highHz: 870_000_000, dutyCycle: 0.01, maxPowerMw: 25,
    regulation: `${EN300220} band Q (869.70–870.00 MHz, ≤ 25 mW e.r.p., ≤ 1 % duty cycle; ≤ 5 mW without a limit is not used)`,
    suggestedChannel: { freqHz: 869_850_000, bandwidthHz: 125_000 },
  },
];

/**
 * 47 CFR §15.247(a)(1)(i): in 902–928 MHz a frequency-hopping system whose 20 dB bandwidth is
 * below 250 kHz may occupy any one frequency for at most 0.4 s within a 20 s period (and must hop
 * over ≥ 50 channels); at 250 kHz or more, 0.4 s within 10 s (≥ 25 channels). §15.247(a)(2): a
 * digitally modulated system with a 6 dB bandwidth of at least 500 kHz has no dwell limit (LoRa
 * BW500). Trickle enforces the per-channel dwell and the 400 ms per transmission; hopping, if
 * any, is the modem's business.
 */
const FCC_DWELL: readonly DwellRule[] = [
  {
    minBandwidthHz: 0, maxBandwidthHz: 249_999,
    window: { windowMs: 20_000, budgetMs: 400 }, maxFrameAirtimeMs: 400,
    regulation: '47 CFR §15.247(a)(1)(i): ≤ 0.4 s per channel in any 20 s (20 dB bandwidth < 250 kHz)',
  },
  {
    minBandwidthHz: 250_000, maxBandwidthHz: 499_999,
    window: { windowMs: 10_000, budgetMs: 400 }, maxFrameAirtimeMs: 400,
    regulation: '47 CFR §15.247(a)(1)(i): ≤ 0.4 s per channel in any 10 s (20 dB bandwidth ≥ 250 kHz)',
  },
  {
    minBandwidthHz: 500_000, maxBandwidthHz: Number.MAX_SAFE_INTEGER,
    regulation: '47 CFR §15.247(a)(2): digital modulation, 6 dB bandwidth ≥ 500 kHz, no dwell limit',
  },
];

const US915_SUBBANDS: readonly SubBand[] = [
  {
    id: 'us915-902-928', lowHz: 902_000_000, highHz: 928_000_000, dutyCycle: null, maxPowerMw: 1000,
    dwell: FCC_DWELL,
    regulation: '47 CFR §15.247 (902–928 MHz ISM band)',
    suggestedChannel: { freqHz: 903_900_000, bandwidthHz: 125_000 },
  },
];

/**
 * AS923 (LoRaWAN Regional Parameters RP002-1.0.4 §2.8): 915–928 MHz with national variations;
 * where the national rules impose a dwell time (e.g. Japan, ARIB STD-T108) end devices keep every
 * transmission ≤ 400 ms (UplinkDwellTime = 1). Trickle always applies the 400 ms per-transmission
 * dwell here. National duty-cycle or LBT rules beyond that are not modelled: configure a custom
 * region for them.
 */
const AS923_SUBBANDS: readonly SubBand[] = [
  {
    id: 'as923-915-928', lowHz: 915_000_000, highHz: 928_000_000, dutyCycle: null,
    dwell: [{
      minBandwidthHz: 0, maxBandwidthHz: Number.MAX_SAFE_INTEGER, maxFrameAirtimeMs: 400,
      regulation: 'LoRaWAN RP002-1.0.4 §2.8 AS923: 400 ms dwell per transmission (ARIB STD-T108 and similar)',
    }],
    regulation: 'LoRaWAN RP002-1.0.4 §2.8 (AS923), national rules apply',
    suggestedChannel: { freqHz: 923_200_000, bandwidthHz: 125_000 },
  },
];

export const REGIONS: Readonly<Record<'eu868' | 'us915' | 'as923', Region>> = {
  eu868: {
    id: 'eu868', name: 'EU 863–870 MHz (SRD)', subBands: EU868_SUBBANDS, licensed: false,
    // 869.525 MHz in the 10 % / 500 mW sub-band: the most airtime and power a licence-free EU
    // node can have. With BW125 its edges are 869.4625–869.5875 MHz; BW250 exactly fills the band.
    defaultChannel: { freqHz: 869_525_000, bandwidthHz: 125_000 },
    regulation: EN300220,
  },
  us915: {
    id: 'us915', name: 'US 902–928 MHz (FCC Part 15)', subBands: US915_SUBBANDS, licensed: false,
    defaultChannel: { freqHz: 903_900_000, bandwidthHz: 125_000 },
    regulation: '47 CFR §15.247',
  },
  as923: {
    id: 'as923', name: 'AS923 (915–928 MHz)', subBands: AS923_SUBBANDS, licensed: false,
    defaultChannel: { freqHz: 923_200_000, bandwidthHz: 125_000 },
    regulation: 'LoRaWAN RP002-1.0.4 §2.8',
  },
};

export const REGION_IDS: readonly RegionId[] = ['eu868', 'us915', 'as923', 'custom', 'amateur'];

// ---------------------------------------------------------------------------------------------
// Custom and licensed regions

export interface CustomSubBandConfig {
  lowHz: number;
  highHz: number;
  /** Fraction of any hour, (0, 1]; omit (or null) for no duty-cycle limit. */
  dutyCycle?: number | null;
  /** Per-channel dwell: airtime in any windowMs ≤ budgetMs. */
  dwell?: { windowMs: number; budgetMs: number };
  maxFrameAirtimeMs?: number;
  /** What regulation this row implements (required: every row cites its rule). */
  regulation: string;
  id?: string;
}

/** A region built from the operator's own per-frequency limits. Throws ConfigError on bad rows. */
export function customRegion(rows: readonly CustomSubBandConfig[], name = 'custom'): Region {
  if (rows.length === 0) throw new ConfigError('region custom: at least one sub-band row is required (lowHz, highHz, dutyCycle, regulation)');
  const subBands: SubBand[] = rows.map((r, i) => {
    const key = `region custom row ${i}`;
    if (!(Number.isFinite(r.lowHz) && Number.isFinite(r.highHz) && r.lowHz > 0 && r.highHz > r.lowHz)) {
      throw new ConfigError(`${key}: lowHz and highHz must be positive with lowHz < highHz (got ${r.lowHz}, ${r.highHz})`, { row: i });
    }
    const dc = r.dutyCycle ?? null;
    if (dc !== null && !(dc > 0 && dc <= 1)) throw new ConfigError(`${key}: dutyCycle must be in (0, 1], e.g. 0.01 for 1 % (got ${dc})`, { row: i });
    if (r.dwell && !(r.dwell.windowMs > 0 && r.dwell.budgetMs > 0 && r.dwell.budgetMs <= r.dwell.windowMs)) {
      throw new ConfigError(`${key}: dwell needs 0 < budgetMs ≤ windowMs`, { row: i });
    }
    if (r.maxFrameAirtimeMs !== undefined && !(r.maxFrameAirtimeMs > 0)) throw new ConfigError(`${key}: maxFrameAirtimeMs must be > 0`, { row: i });
    if (typeof r.regulation !== 'string' || r.regulation.trim() === '') {
      throw new ConfigError(`${key}: regulation must name the rule this row implements`, { row: i });
    }
    const dwell: DwellRule[] = [];
    if (r.dwell || r.maxFrameAirtimeMs !== undefined) {
      dwell.push({
        minBandwidthHz: 0, maxBandwidthHz: Number.MAX_SAFE_INTEGER,
        ...(r.dwell ? { window: { ...r.dwell } } : {}),
        ...(r.maxFrameAirtimeMs !== undefined ? { maxFrameAirtimeMs: r.maxFrameAirtimeMs } : {}),
        regulation: r.regulation,
      });
    }
    const mid = Math.round((r.lowHz + r.highHz) / 2);
    const bw = [125_000, 62_500, 31_250, 15_600, 7_800].find((b) => b <= r.highHz - r.lowHz) ?? 7_800;
    return {
      id: r.id ?? `custom-${r.lowHz}-${r.highHz}`,
      lowHz: r.lowHz, highHz: r.highHz, dutyCycle: dc,
      ...(dwell.length ? { dwell } : {}),
      regulation: r.regulation,
      suggestedChannel: { freqHz: mid, bandwidthHz: bw },
    };
  });
  const sorted = [...subBands].sort((a, b) => a.lowHz - b.lowHz);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.lowHz < sorted[i - 1]!.highHz) {
      throw new ConfigError(`region custom: sub-bands ${sorted[i - 1]!.id} and ${sorted[i]!.id} overlap; rows must be disjoint`);
    }
  }
  const first = sorted[0]!;
  return { id: 'custom', name, subBands: sorted, defaultChannel: first.suggestedChannel, licensed: false, regulation: 'operator-supplied rows' };
}

export interface LicensedBandConfig {
  lowHz: number;
  highHz: number;
  /** The licence this runs under, e.g. a callsign: required, so the override is explicit. */
  licence: string;
  /** Optional self-imposed duty cycle. */
  dutyCycle?: number | null;
}

/**
 * An explicit licensed (e.g. amateur) override: 47 CFR Part 97 / CEPT T/R 61-01 and national
 * amateur licences put the operator, not a duty cycle, in charge. No limit unless one is given.
 * (Amateur rules also forbid encryption; the secure layer's authenticated-cleartext mode is for
 * that, and `ResolvedChannel.licensed` tells it.)
 */
export function amateurRegion(cfg: LicensedBandConfig): Region {
  if (typeof cfg.licence !== 'string' || cfg.licence.trim() === '') {
    throw new ConfigError('region amateur: licence (e.g. your callsign) is required to lift the licence-free limits');
  }
  const base = customRegion([{
    lowHz: cfg.lowHz, highHz: cfg.highHz, dutyCycle: cfg.dutyCycle ?? null, id: 'amateur',
    regulation: `licensed operation under ${cfg.licence.trim()} (e.g. 47 CFR Part 97, CEPT T/R 61-01)`,
  }], `licensed band (${cfg.licence.trim()})`);
  return { ...base, id: 'amateur', licensed: true, regulation: base.subBands[0]!.regulation };
}

// ---------------------------------------------------------------------------------------------
// Channel resolution

/** ConfigError with the scheduler's ERR_REGION_CHANNEL code (still `instanceof ConfigError`). */
export class RegionChannelError extends ConfigError {
  override readonly code: ErrorCode = 'ERR_REGION_CHANNEL';
  constructor(message: string, detail?: Record<string, unknown>) {
    super(message, detail);
    this.name = 'RegionChannelError';
  }
}

function mhz(hz: number): string {
  return `${(hz / 1e6).toFixed(4).replace(/0+$/, '').replace(/\.$/, '')} MHz`;
}

function pct(dc: number | null): string {
  return dc === null ? 'no duty-cycle limit' : `${+(dc * 100).toFixed(3)} %`;
}

/** One line per legal sub-band with a sensible channel in it. */
export function describeSubBands(region: Region): string {
  return region.subBands
    .map((s) => `  ${mhz(s.lowHz)}–${mhz(s.highHz)} (${pct(s.dutyCycle)}${s.maxPowerMw ? `, ${s.maxPowerMw} mW` : ''}): e.g. --freq ${s.suggestedChannel.freqHz} --bw ${s.suggestedChannel.bandwidthHz}`)
    .join('\n');
}

export function getRegion(id: string): Region {
  if (id === 'eu868' || id === 'us915' || id === 'as923') return REGIONS[id];
  if (id === 'custom' || id === 'amateur') {
    throw new ConfigError(`region ${id} needs its rows: use customRegion([...]) or amateurRegion({...}) in the configuration`);
  }
  throw new ConfigError(`region ${JSON.stringify(id)} is not known; allowed: ${REGION_IDS.join(', ')}`, { region: id });
}

function rulesFor(sb: SubBand, bandwidthHz: number): ChannelRules {
  const limits: WindowLimit[] = [];
  const regs: string[] = [sb.regulation];
  if (sb.dutyCycle !== null) limits.push({ kind: 'duty-cycle', windowMs: HOUR_MS, budgetMs: sb.dutyCycle * HOUR_MS });
  let maxFrame: number | null = null;
  const rule = sb.dwell?.find((d) => bandwidthHz >= d.minBandwidthHz && bandwidthHz <= d.maxBandwidthHz);
  if (rule) {
    if (rule.window) limits.push({ kind: 'dwell', windowMs: rule.window.windowMs, budgetMs: rule.window.budgetMs });
    if (rule.maxFrameAirtimeMs !== undefined) maxFrame = rule.maxFrameAirtimeMs;
    if (rule.regulation !== sb.regulation) regs.push(rule.regulation);
  }
  return { subBandId: sb.id, dutyCycle: sb.dutyCycle, limits, maxFrameAirtimeMs: maxFrame, regulation: regs.join('; ') };
}

/**
 * Check a channel against a region. Both channel edges must lie in one sub-band.
 * Throws RegionChannelError (a ConfigError, code ERR_REGION_CHANNEL) listing the legal sub-bands.
 */
export function resolveChannel(region: Region | RegionId, freqHz: number, bandwidthHz: number): ResolvedChannel {
  const r = typeof region === 'string' ? getRegion(region) : region;
  if (!(Number.isFinite(freqHz) && freqHz > 0)) {
    throw new RegionChannelError(`freqHz ${String(freqHz)} is not a frequency; legal sub-bands in ${r.name}:\n${describeSubBands(r)}`, { freqHz });
  }
  if (!(Number.isFinite(bandwidthHz) && bandwidthHz > 0)) {
    throw new RegionChannelError(`bandwidthHz ${String(bandwidthHz)} is not a bandwidth (e.g. 125000)`, { bandwidthHz });
  }
  const lowEdgeHz = freqHz - bandwidthHz / 2;
  const highEdgeHz = freqHz + bandwidthHz / 2;
  const home = r.subBands.find((s) => lowEdgeHz >= s.lowHz && highEdgeHz <= s.highHz);
  if (!home) {
    const touched = r.subBands.filter((s) => lowEdgeHz < s.highHz && highEdgeHz > s.lowHz);
    const where = touched.length >= 2
      ? `straddles sub-bands ${touched.map((s) => `${mhz(s.lowHz)}–${mhz(s.highHz)}`).join(' and ')}`
      : touched.length === 1
        ? `sticks out of sub-band ${mhz(touched[0]!.lowHz)}–${mhz(touched[0]!.highHz)}`
        : `is outside every sub-band of ${r.name}`;
    throw new RegionChannelError(
      `channel ${mhz(freqHz)} with bandwidth ${bandwidthHz / 1000} kHz occupies ${mhz(lowEdgeHz)}–${mhz(highEdgeHz)} and ${where}. ` +
        `Both edges must lie inside one sub-band. Legal sub-bands in ${r.name}:\n${describeSubBands(r)}`,
      { region: r.id, freqHz, bandwidthHz, lowEdgeHz, highEdgeHz, subBands: r.subBands.map((s) => s.id) },
    );
  }
  return {
    regionId: r.id, freqHz, bandwidthHz, lowEdgeHz, highEdgeHz, subBand: home,
    rules: rulesFor(home, bandwidthHz), licensed: r.licensed,
  };
}

/** Rules for a resolved channel (shorthand). */
export function channelRules(region: Region | RegionId, freqHz: number, bandwidthHz: number): ChannelRules {
  return resolveChannel(region, freqHz, bandwidthHz).rules;
}
