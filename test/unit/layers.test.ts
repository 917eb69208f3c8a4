/**
 * The layering of ../shared/DESIGN.md, checked on every import in src/:
 *   util ← link ← modem ← scheduler ← coap ← net ← matrix ← host / gateway ← cli
 * with codec and secure depending on util alone (and usable from coap upwards).
 * errors.ts is usable everywhere; log.ts only as a type, except in I/O shells.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const src = fileURLToPath(new URL('../../src/', import.meta.url));

// The modem emulator (src/modem/emulator) simulates radios and the RF medium for the demo and
// tests: it sits above the stack like an app, so it may use the scheduler's airtime formula.
const RANK: Record<string, number> = { util: 0, link: 1, modem: 2, scheduler: 3, coap: 4, net: 4.5, matrix: 5, host: 6, gateway: 6, emulator: 6, cli: 7 };
const SIDE = new Set(['codec', 'secure']);

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function layerOf(path: string): string {
  const rel = relative(src, path);
  if (rel.startsWith('modem/emulator/')) return 'emulator';
  return rel.includes('/') ? rel.split('/')[0]! : rel.replace(/\.ts$/, '');
}

function allowed(from: string, to: string): boolean {
  if (from === to) return true;
  if (to === 'errors') return true;
  if (to === 'index') return false;
  if (SIDE.has(from)) return to === 'util';
  if (SIDE.has(to)) return (RANK[from] ?? -1) >= RANK['coap']!;
  const a = RANK[from];
  const b = RANK[to];
  if (a === undefined || b === undefined) return false;
  if (from === 'host' && to === 'gateway') return false;
  if (from === 'gateway' && to === 'host') return false;
  if (to === 'emulator') return from === 'cli';
  return b < a;
}

const IMPORT = /^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'|import\('([^']+)'\)/gm;

describe('layering', () => {
  const violations: string[] = [];
  let scanned = 0;
  for (const file of files(src)) {
    const from = layerOf(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(IMPORT)) {
      const spec = m[3] ?? m[4] ?? m[5]!;
      const typeOnly = Boolean(m[2]);
      if (!spec.startsWith('.')) continue;
      scanned++;
      const target = resolve(dirname(file), spec);
      if (!target.startsWith(src)) {
        // Only the demo may reach outside src/, for the throwaway Synapse of scripts/.
        if (!(relative(src, file) === 'cli/demo.ts' && spec.endsWith('scripts/synapse.ts'))) violations.push(`${relative(src, file)} → ${spec}`);
        continue;
      }
      const to = layerOf(target);
      if (to === 'log') {
        if (!typeOnly && !['cli', 'host', 'gateway'].includes(from)) violations.push(`${relative(src, file)} imports the logger (pure layers do not log)`);
        continue;
      }
      if (!allowed(from, to)) violations.push(`${relative(src, file)} (${from}) → ${relative(src, target)} (${to})`);
    }
  }

  it('every import in src/ points down the layer stack', () => {
    expect(scanned).toBeGreaterThan(50);
    expect(violations).toEqual([]);
  });

  it('the checker itself rejects an upward import', () => {
    expect(allowed('coap', 'matrix')).toBe(false);
    expect(allowed('codec', 'coap')).toBe(false);
    expect(allowed('host', 'gateway')).toBe(false);
    expect(allowed('matrix', 'coap')).toBe(true);
  });
});
