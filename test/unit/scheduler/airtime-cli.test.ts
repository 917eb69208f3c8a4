import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { framesPerHour, runAirtimeCommand } from '../../../src/cli/airtime.ts';
import { resolveChannel } from '../../../src/scheduler/regions.ts';

function run(...argv: string[]): { code: number; text: string } {
  const lines: string[] = [];
  const code = runAirtimeCommand(argv, (s) => lines.push(s));
  return { code, text: lines.join('\n') };
}

const vectors = JSON.parse(readFileSync(new URL('../../vectors/lora-airtime.json', import.meta.url), 'utf8')) as {
  airtime: { name: string; params: Record<string, unknown>; airtimeMs: number; ldro: boolean }[];
};

describe('trickle airtime', () => {
  it('agrees with every airtime vector (--json)', () => {
    for (const v of vectors.airtime) {
      const p = v.params;
      const argv = ['--sf', String(p['sf']), '--bw', String(p['bandwidthHz']), '--cr', String(p['codingRate']), '--bytes', String(p['payloadBytes']), '--json'];
      if (p['preambleSymbols'] !== undefined) argv.push('--preamble', String(p['preambleSymbols']));
      if (p['explicitHeader'] === false) argv.push('--implicit-header');
      if (p['crc'] === false) argv.push('--no-crc');
      if (p['chip'] !== undefined) argv.push('--chip', String(p['chip']));
      const { code, text } = run(...argv);
      expect(code, v.name).toBe(0);
      const out = JSON.parse(text) as { airtimeMs: number; lowDataRateOptimize: boolean };
      expect(out.airtimeMs, v.name).toBe(v.airtimeMs);
      expect(out.lowDataRateOptimize, v.name).toBe(v.ldro);
    }
  });

  it('prints airtime, symbol time, LDRO and frames per hour for a region channel', () => {
    const { code, text } = run('--sf', '9', '--bw', '125000', '--cr', '5', '--bytes', '20', '--region', 'eu868', '--freq', '869525000');
    expect(code).toBe(0);
    expect(text).toMatch(/airtime +185\.344 ms/);
    expect(text).toMatch(/symbol time +4\.096 ms/);
    expect(text).toMatch(/LDRO +off/);
    expect(text).toMatch(/per hour +1942 frames/); // floor(360 000 / 185.344)
  });

  it('JSON for US915 counts the dwell: 180 frames of 370.688 ms per hour (one per 20 s)', () => {
    const { code, text } = run('--sf', '10', '--bw', '125000', '--cr', '5', '--bytes', '24', '--region', 'us915', '--json');
    expect(code).toBe(0);
    const out = JSON.parse(text) as Record<string, unknown>;
    expect(out).toMatchObject({ airtimeMs: 370.688, framesPerHour: 180, maxFrameAirtimeMs: 400, subBand: 'us915-902-928' });
    expect(framesPerHour(resolveChannel('us915', 903_900_000, 125_000).rules, 401)).toBe(0);
  });

  it('bad flags: a clear message with the allowed values and a non-zero exit', () => {
    const cases: [string[], RegExp][] = [
      [['--sf', '13', '--bw', '125000', '--cr', '5', '--bytes', '20'], /sf 13 is not allowed; allowed: 5\.\.12/],
      [['--sf', '9', '--bw', '100000', '--cr', '5', '--bytes', '20'], /allowed \(Hz\): 7800, .*500000/],
      [['--sf', '9', '--bw', '125000', '--cr', 'x', '--bytes', '20'], /--cr "x" is not a number; allowed: 5, 6, 7, 8/],
      [['--sf', '9', '--bw', '125000', '--cr', '5'], /--bytes is required/],
      [['--sf', '9', '--bw', '125000', '--cr', '5', '--bytes', '20', '--ldro', 'maybe'], /allowed: auto, on, off/],
      [['--sf', '9', '--bw', '125000', '--cr', '5', '--bytes', '20', '--freq', '868100000'], /--freq needs --region/],
      [['--sf', '9', '--bw', '125000', '--cr', '5', '--bytes', '20', '--region', 'mars'], /allowed: eu868, us915, as923/],
      [['--sf', '9', '--bw', '125000', '--cr', '5', '--bytes', '20', '--region', 'eu868', '--freq', '868000000'], /straddles.*\n.*--freq 864000000/s],
      [['--frobnicate'], /unknown flag "--frobnicate"[\s\S]*usage: trickle airtime/],
    ];
    for (const [argv, msg] of cases) {
      const { code, text } = run(...argv);
      expect(code, argv.join(' ')).toBe(2);
      expect(text, argv.join(' ')).toMatch(msg);
    }
  });
});
