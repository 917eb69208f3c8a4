/**
 * `npm run fuzz`: run the decoder fuzzers (test/fuzz/targets.ts) for as long as asked.
 *
 *   npm run fuzz -- [--seconds N] [--target NAME]… [--seed S] [--json] [--out DIR]
 *                   [--slow-ms MS] [--hang-ms MS] [--allow-known] [--list]
 *
 *   --seconds N    total time, split evenly across the targets (default 180)
 *   --target NAME  fuzz only this target (repeatable; default all; --list names them)
 *   --seed S       campaign seed (default random; always printed, so a run can be repeated)
 *   --json         print the results as JSON on stdout (progress stays on stderr)
 *   --out DIR      where failing inputs are saved (default ./fuzz-failures, git-ignored)
 *   --slow-ms MS   a call reproducibly slower than this is a failure (default 50; some targets
 *                  that do public-key crypto per input set their own, higher, bound)
 *   --hang-ms MS   a call running longer than this is a hang: the worker is killed (default 5000)
 *   --allow-known  exit 0 when every failure is a known issue (test/fuzz/known-issues.ts)
 *
 * Progress every ~10 s; at the end a table (target, inputs tried, inputs/s, distinct failures,
 * slowest call). Each failure is printed with its target, input (hex) and error, and saved as
 * <out>/<target>-<id>.hex and .json. Exit status 1 when anything failed, 2 on bad usage.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { randomInt } from 'node:crypto';
import { TARGETS } from '../test/fuzz/targets.ts';
import { runCampaign, type TargetResult } from '../test/fuzz/campaign.ts';
import { hash32, type FuzzFailure } from '../test/fuzz/engine.ts';
import { knownIssue } from '../test/fuzz/known-issues.ts';

const USAGE = 'usage: npm run fuzz -- [--seconds N] [--target NAME]... [--seed S] [--json] [--out DIR] [--slow-ms MS] [--hang-ms MS] [--allow-known] [--list]';

function fail(message: string): never {
  process.stderr.write(`${message}\n${USAGE}\n`);
  process.exit(2);
}

function positiveNumber(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) fail(`--${name} must be a positive number, got ${JSON.stringify(v)}`);
  return n;
}

let args;
try {
  args = parseArgs({
    options: {
      seconds: { type: 'string' }, target: { type: 'string', multiple: true }, seed: { type: 'string' }, json: { type: 'boolean' },
      out: { type: 'string' }, 'slow-ms': { type: 'string' }, 'hang-ms': { type: 'string' }, 'allow-known': { type: 'boolean' },
      list: { type: 'boolean' }, help: { type: 'boolean' },
    },
    allowPositionals: false,
  }).values;
} catch (e) {
  fail((e as Error).message);
}

if (args.help) { process.stdout.write(`${USAGE}\n`); process.exit(0); }
if (args.list) {
  for (const t of TARGETS) process.stdout.write(`${t.name.padEnd(24)} ${t.description}\n`);
  process.exit(0);
}

const seconds = positiveNumber(args.seconds, 'seconds', 180);
const slowMs = positiveNumber(args['slow-ms'], 'slow-ms', 50);
const hangMs = positiveNumber(args['hang-ms'], 'hang-ms', 5000);
const outDir = resolve(args.out ?? 'fuzz-failures');
let seed: number;
if (args.seed === undefined) seed = randomInt(0, 2 ** 31);
else if (/^\d+$/.test(args.seed)) seed = Number(args.seed) >>> 0;
else seed = hash32(args.seed);
const names = args.target ?? TARGETS.map((t) => t.name);
for (const n of names) if (!TARGETS.some((t) => t.name === n)) fail(`unknown target ${JSON.stringify(n)}; targets: ${TARGETS.map((t) => t.name).join(', ')}`);

const log = (s: string): void => { process.stderr.write(`${s}\n`); };
const perTargetMs = (seconds * 1000) / names.length;
log(`fuzz: ${names.length} target(s), ${seconds} s (${(perTargetMs / 1000).toFixed(1)} s each), seed ${seed}${args.seed === undefined ? ' (random; repeat with --seed)' : ''}`);

const started = Date.now();
let lastPrint = started;
const inputsByTarget = new Map<string, number>();
let failuresSoFar = 0;
const saved: string[] = [];

function save(f: FuzzFailure): string {
  mkdirSync(outDir, { recursive: true });
  const id = hash32(f.signature).toString(16).padStart(8, '0');
  const base = join(outDir, `${f.target}-${id}`);
  writeFileSync(`${base}.hex`, `${f.inputHex}\n`);
  writeFileSync(`${base}.json`, `${JSON.stringify({ ...f, seed, known: knownIssue(f)?.summary ?? null }, null, 2)}\n`);
  return `${base}.hex`;
}

const results: TargetResult[] = await runCampaign({
  targets: names, seed, slowMs, hangMs,
  plan: () => ({ budgetMs: perTargetMs }),
  onProgress: (p) => {
    inputsByTarget.set(p.target, p.inputs);
    const now = Date.now();
    if (now - lastPrint < 10_000) return;
    lastPrint = now;
    log(`[${String(Math.round((now - started) / 1000)).padStart(4)} s] ${p.index + 1}/${names.length} ${p.target}: ${p.inputs} inputs, ${p.failures} failure(s); total ${[...inputsByTarget.values()].reduce((a, b) => a + b, 0)} inputs, ${failuresSoFar} failure(s)`);
  },
  onFailure: (f) => {
    failuresSoFar++;
    const known = knownIssue(f);
    const path = save(f);
    saved.push(path);
    log(`\nFAILURE ${f.target} (${f.kind}${known ? `, known: ${known.summary}` : ''})\n  error: ${f.error.split('\n')[0]!.slice(0, 400)}`
      + `\n  input (${f.inputHex.length / 2} bytes): ${f.inputHex.length > 1024 ? `${f.inputHex.slice(0, 1024)}…` : f.inputHex}\n  saved: ${path}\n`);
  },
});

const rows = results.map((r) => ({
  target: r.target,
  inputs: r.inputs,
  inputsPerSec: Math.round(r.inputs / Math.max(0.001, r.ms / 1000)),
  failures: r.failures.length,
  known: r.failures.filter((f) => knownIssue(f)).length,
  slowestMs: Math.round(r.slowestMs * 10) / 10,
  restarts: r.restarts,
}));
const failures = results.flatMap((r) => r.failures);
const unknown = failures.filter((f) => !knownIssue(f));

if (args.json) {
  process.stdout.write(`${JSON.stringify({ seed, seconds, slowMs, hangMs, targets: rows, failures: failures.map((f) => ({ ...f, known: knownIssue(f)?.summary ?? null })) }, null, 2)}\n`);
} else {
  const header = ['target', 'inputs', 'inputs/s', 'failures', 'slowest ms'];
  const lines = rows.map((r) => [r.target, String(r.inputs), String(r.inputsPerSec), r.known > 0 ? `${r.failures} (${r.known} known)` : String(r.failures), r.slowestMs.toFixed(1)]);
  const total = ['total', String(rows.reduce((n, r) => n + r.inputs, 0)), String(Math.round(rows.reduce((n, r) => n + r.inputs, 0) / ((Date.now() - started) / 1000))), String(failures.length), Math.max(0, ...rows.map((r) => r.slowestMs)).toFixed(1)];
  const all = [header, ...lines, total];
  const widths = header.map((_, i) => Math.max(...all.map((l) => l[i]!.length)));
  const fmt = (l: string[]): string => l.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  process.stdout.write(`\nseed ${seed}, ${seconds} s\n${fmt(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n${lines.map(fmt).join('\n')}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n${fmt(total)}\n`);
  if (failures.length > 0) {
    process.stdout.write(`\n${failures.length} distinct failure(s)${unknown.length < failures.length ? `, ${failures.length - unknown.length} known` : ''}; inputs saved under ${outDir}\n`);
    for (const f of failures) {
      process.stdout.write(`  ${f.target} [${f.kind}${knownIssue(f) ? ', known' : ''}] ×${f.count}: ${f.error.split('\n')[0]!.slice(0, 200)}\n    ${f.inputHex.length > 200 ? `${f.inputHex.slice(0, 200)}…` : f.inputHex}\n`);
    }
  }
}

process.exit(unknown.length > 0 || (failures.length > 0 && !args['allow-known']) ? 1 : 0);
