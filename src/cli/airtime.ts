/**
 * `trickle airtime`: how long is this frame on air, and how many per hour may I send?
 *
 *   trickle airtime --sf 9 --bw 125000 --cr 5 --bytes 20 [--preamble 8] [--implicit-header]
 *                   [--no-crc] [--ldro auto|on|off] [--chip sx126x|sx127x]
 *                   [--region eu868|us915|as923 [--freq HZ]] [--json]
 *
 * Without --region it prints the frames per hour at the three EU duty cycles (0.1, 1, 10 %).
 * Thin: parses flags, calls scheduler/airtime.ts and scheduler/regions.ts, formats.
 */
import { isTrickleError } from '../errors.ts';
import { loraAirtime, type LoraParams } from '../scheduler/airtime.ts';
import { getRegion, HOUR_MS, resolveChannel, type ChannelRules } from '../scheduler/regions.ts';

const USAGE = `usage: trickle airtime --sf 5..12 --bw HZ --cr 5..8 --bytes 0..255
         [--preamble 6..65535] [--implicit-header] [--no-crc] [--ldro auto|on|off]
         [--chip sx126x|sx127x] [--region eu868|us915|as923 [--freq HZ]] [--json]
  --bw in Hz: 7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000
  --cr is the coding-rate denominator: 5 = 4/5 … 8 = 4/8`;

class UsageError extends Error {}

interface Parsed {
  radio: LoraParams;
  region?: string;
  freqHz?: number;
  json: boolean;
}

function parse(argv: readonly string[]): Parsed | 'help' {
  const flags = new Map<string, string>();
  const bools = new Set<string>();
  const valued = new Set(['--sf', '--bw', '--cr', '--bytes', '--preamble', '--ldro', '--chip', '--region', '--freq']);
  const booleans = new Set(['--implicit-header', '--no-crc', '--json', '--help', '-h']);
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i]!;
    const eq = raw.indexOf('=');
    const name = raw.startsWith('--') && eq > 0 ? raw.slice(0, eq) : raw;
    if (booleans.has(name)) { bools.add(name); continue; }
    if (!valued.has(name)) throw new UsageError(`unknown flag ${JSON.stringify(raw)}`);
    const value = eq > 0 && raw.startsWith('--') ? raw.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new UsageError(`${name} needs a value`);
    flags.set(name, value);
  }
  if (bools.has('--help') || bools.has('-h')) return 'help';
  const num = (flag: string, allowed: string): number => {
    const v = flags.get(flag);
    if (v === undefined) throw new UsageError(`${flag} is required (${allowed})`);
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${flag} ${JSON.stringify(v)} is not a number; allowed: ${allowed}`);
    return n;
  };
  const ldroText = flags.get('--ldro') ?? 'auto';
  const ldroMap: Record<string, 'auto' | boolean> = { auto: 'auto', on: true, off: false };
  const ldro = ldroMap[ldroText];
  if (ldro === undefined) throw new UsageError(`--ldro ${JSON.stringify(ldroText)} is not allowed; allowed: auto, on, off`);
  const chip = flags.get('--chip') ?? 'sx126x';
  if (chip !== 'sx126x' && chip !== 'sx127x') throw new UsageError(`--chip ${JSON.stringify(chip)} is not allowed; allowed: sx126x, sx127x`);
  const radio: LoraParams = {
    sf: num('--sf', '5..12'),
    bandwidthHz: num('--bw', 'a LoRa bandwidth in Hz, e.g. 125000'),
    codingRate: num('--cr', '5, 6, 7, 8'),
    payloadBytes: num('--bytes', '0..255'),
    preambleSymbols: flags.has('--preamble') ? num('--preamble', '6..65535') : 8,
    explicitHeader: !bools.has('--implicit-header'),
    crc: !bools.has('--no-crc'),
    lowDataRateOptimize: ldro,
    chip,
  };
  const region = flags.get('--region');
  if (flags.has('--freq') && region === undefined) throw new UsageError('--freq needs --region (eu868, us915, as923)');
  const out: Parsed = { radio, json: bools.has('--json') };
  if (region !== undefined) out.region = region;
  if (flags.has('--freq')) out.freqHz = num('--freq', 'a frequency in Hz, e.g. 869525000');
  return out;
}

/** Frames of this airtime that fit the channel's rules per hour, in steady state. */
export function framesPerHour(rules: ChannelRules, airtimeMs: number): number {
  if (rules.maxFrameAirtimeMs !== null && airtimeMs > rules.maxFrameAirtimeMs) return 0;
  let perHour = Math.floor(HOUR_MS / airtimeMs); // back to back
  for (const l of rules.limits) {
    const perWindow = Math.floor(l.budgetMs / airtimeMs + 1e-9);
    perHour = Math.min(perHour, Math.floor(perWindow * (HOUR_MS / l.windowMs)));
  }
  return perHour;
}

function fmt(ms: number): string {
  return `${+ms.toFixed(3)} ms`;
}

/** Runs the command; returns the exit code (0 ok, 2 bad usage or parameters). */
export function runAirtimeCommand(argv: string[], out: (s: string) => void): number {
  let parsed: Parsed | 'help';
  try {
    parsed = parse(argv);
  } catch (e) {
    if (e instanceof UsageError) { out(`trickle airtime: ${e.message}\n${USAGE}`); return 2; }
    throw e;
  }
  if (parsed === 'help') { out(USAGE); return 0; }
  try {
    const r = loraAirtime(parsed.radio);
    const base = {
      airtimeMs: r.airtimeMs,
      symbolMs: r.symbolMs,
      preambleMs: r.preambleMs,
      payloadSymbols: r.payloadSymbols,
      lowDataRateOptimize: r.lowDataRateOptimize,
      radio: { ...parsed.radio, bandwidthHz: r.bandwidthHz },
    };
    if (parsed.region !== undefined) {
      const region = getRegion(parsed.region);
      const freqHz = parsed.freqHz ?? region.defaultChannel.freqHz;
      const ch = resolveChannel(region, freqHz, parsed.radio.bandwidthHz);
      const perHour = framesPerHour(ch.rules, r.airtimeMs);
      const limits = ch.rules.limits.map((l) => ({ kind: l.kind, windowMs: l.windowMs, budgetMs: l.budgetMs }));
      if (parsed.json) {
        out(JSON.stringify({ ...base, region: region.id, freqHz, subBand: ch.subBand.id, dutyCycle: ch.rules.dutyCycle, limits, maxFrameAirtimeMs: ch.rules.maxFrameAirtimeMs, framesPerHour: perHour, regulation: ch.rules.regulation }));
      } else {
        const lines = [
          `airtime      ${fmt(r.airtimeMs)}  (${r.payloadSymbols} payload symbols + preamble ${fmt(r.preambleMs)})`,
          `symbol time  ${fmt(r.symbolMs)}`,
          `LDRO         ${r.lowDataRateOptimize ? 'on' : 'off'}${parsed.radio.lowDataRateOptimize === 'auto' ? ' (auto: on when a symbol lasts ≥ 16 ms)' : ''}`,
          `channel      ${freqHz} Hz in ${ch.subBand.id} (${ch.rules.dutyCycle === null ? 'no duty-cycle limit' : `${+(ch.rules.dutyCycle * 100).toFixed(3)} % duty cycle`})`,
          ...limits.map((l) => `limit        ${l.kind}: ${fmt(l.budgetMs)} per ${l.windowMs / 1000} s`),
          ...(ch.rules.maxFrameAirtimeMs !== null ? [`max frame    ${fmt(ch.rules.maxFrameAirtimeMs)} per transmission${r.airtimeMs > ch.rules.maxFrameAirtimeMs ? '  ← this frame is too long here' : ''}`] : []),
          `per hour     ${perHour} frames`,
          `rule         ${ch.rules.regulation}`,
        ];
        out(lines.join('\n'));
      }
    } else {
      const classes = [0.001, 0.01, 0.1].map((dc) => ({ dutyCycle: dc, framesPerHour: Math.floor((dc * HOUR_MS) / r.airtimeMs + 1e-9) }));
      if (parsed.json) {
        out(JSON.stringify({ ...base, framesPerHourAtDutyCycle: classes }));
      } else {
        out([
          `airtime      ${fmt(r.airtimeMs)}  (${r.payloadSymbols} payload symbols + preamble ${fmt(r.preambleMs)})`,
          `symbol time  ${fmt(r.symbolMs)}`,
          `LDRO         ${r.lowDataRateOptimize ? 'on' : 'off'}${parsed.radio.lowDataRateOptimize === 'auto' ? ' (auto: on when a symbol lasts ≥ 16 ms)' : ''}`,
          ...classes.map((c) => `per hour     ${String(c.framesPerHour).padStart(6)} frames at ${c.dutyCycle * 100} % duty cycle`),
          `(add --region eu868|us915|as923 [--freq HZ] for a channel's own rules)`,
        ].join('\n'));
      }
    }
    return 0;
  } catch (e) {
    if (isTrickleError(e)) { out(`trickle airtime: ${e.message}`); return 2; }
    throw e;
  }
}
