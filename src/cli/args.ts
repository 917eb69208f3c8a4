/** Small, strict flag parsing shared by the commands: unknown flags and bad values are named. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { TrickleError } from '../errors.ts';

export type Flags = Record<string, string | boolean | undefined>;

export function parseFlags(argv: string[], options: NonNullable<ParseArgsConfig['options']>, usage: string): { flags: Flags; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { flags: values as Flags, positionals };
  } catch (e) {
    throw new TrickleError('ERR_USAGE', 'cli', `${(e as Error).message}\n\n${usage}`);
  }
}

export function intFlag(flags: Flags, name: string, fallback: number, min: number, max: number): number {
  const raw = flags[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (typeof raw !== 'string' || !Number.isInteger(n) || n < min || n > max) {
    throw new TrickleError('ERR_CONFIG', 'config', `--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

export function hostPortFlag(flags: Flags, name: string, fallback: string): { host: string; port: number } {
  const raw = (flags[name] as string | undefined) ?? fallback;
  const m = /^(?:(\[[^\]]+\]|[^:]+):)?(\d{1,5})$/.exec(raw);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    throw new TrickleError('ERR_CONFIG', 'config', `--${name} must be HOST:PORT or PORT (e.g. 127.0.0.1:8008), got ${JSON.stringify(raw)}`);
  }
  return { host: (m[1] ?? '127.0.0.1').replace(/^\[|\]$/g, ''), port };
}

/** A repeatable string flag (`multiple: true` in its parseArgs option): every value given, in order. */
export function listFlag(flags: Flags, name: string): string[] {
  const raw = (flags as Record<string, unknown>)[name];
  if (raw === undefined) return [];
  const values = Array.isArray(raw) ? raw : [raw];
  return values.map((v) => {
    if (typeof v !== 'string' || v === '') throw new TrickleError('ERR_CONFIG', 'config', `--${name} needs a value`);
    return v;
  });
}

export function requiredFlag(flags: Flags, name: string, usage: string): string {
  const v = flags[name];
  if (typeof v !== 'string' || v === '') throw new TrickleError('ERR_USAGE', 'cli', `--${name} is required\n\n${usage}`);
  return v;
}

/** `--push-carry typing,receipts,presence` (any subset; empty or absent: none). */
export function pushCarryFlag(v: string | undefined): { typing: boolean; receipts: boolean; presence: boolean } {
  const items = (v ?? '').split(',').map((x) => x.trim()).filter(Boolean);
  const known = ['typing', 'receipts', 'presence'];
  const bad = items.filter((x) => !known.includes(x));
  if (bad.length > 0) throw new TrickleError('ERR_CONFIG', 'config', `--push-carry: unknown item ${bad.map((b) => JSON.stringify(b)).join(', ')}; use a comma-separated list of ${known.join(', ')}`);
  return { typing: items.includes('typing'), receipts: items.includes('receipts'), presence: items.includes('presence') };
}
