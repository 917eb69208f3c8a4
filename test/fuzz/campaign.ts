/**
 * A fuzzing campaign: targets run one after another in a worker thread, watched from here.
 *
 * A call that does not return within `hangMs` is a HANG: the worker is terminated (that stops
 * even a tight loop), the input it was running is read from shared memory, and a fresh worker
 * carries on with the rest of the target's budget. A worker that dies (out of memory: it runs
 * with a heap limit; or an uncaught error) is a CRASH, handled the same way. Both count as
 * failures with their input, like exceptions and oracle violations found inside the worker.
 */
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { hash32, type FuzzFailure } from './engine.ts';
import { SHARED, SHARED_BYTES, type RunRequest, type StatsSummary, type WorkerMessage } from './protocol.ts';

export interface CampaignPlan {
  readonly budgetMs?: number;
  readonly maxInputs?: number;
  /** Replay these inputs (hex), nothing else; failures are not minimized. */
  readonly inputsHex?: readonly string[];
}

export interface CampaignOptions {
  readonly targets: readonly string[];
  readonly seed: number;
  readonly plan: (target: string, index: number) => CampaignPlan;
  /** Calls slower than this (reproducibly) are failures. */
  readonly slowMs: number;
  /** A call running longer than this is a hang. */
  readonly hangMs: number;
  /** Heap limit of the worker, MiB (an allocation bomb becomes a crash, not our OOM). */
  readonly memoryMb?: number;
  /** Give up on a target after this many hangs/crashes (default 3). */
  readonly maxRestarts?: number;
  readonly onProgress?: (p: CampaignProgress) => void;
  readonly onFailure?: (f: FuzzFailure) => void;
}

export interface CampaignProgress {
  readonly target: string;
  readonly index: number;
  readonly inputs: number;
  readonly failures: number;
  readonly ms: number;
}

export interface TargetResult {
  target: string;
  inputs: number;
  ms: number;
  slowestMs: number;
  slowestInputHex: string;
  /** Distinct outcome signatures seen (a rough measure of how much of the decoder was reached). */
  outcomes: number;
  corpus: number;
  restarts: number;
  failures: FuzzFailure[];
}

function tsxWorker(sab: SharedArrayBuffer, memoryMb: number): Worker {
  // tsx's ESM API entry (its CJS twin cannot register the ESM loader), found from its package.json.
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  const api = pathToFileURL(join(dirname(pkgPath), pkg.exports['./esm/api']!.import.default)).href;
  const entry = new URL('./worker.ts', import.meta.url).href;
  // The worker is plain JavaScript until tsx's loader is registered in it; then it imports the TS.
  const boot = `import(${JSON.stringify(api)}).then((api) => { api.register(); return import(${JSON.stringify(entry)}); })`
    + '.catch((e) => { setImmediate(() => { throw e; }); });';
  return new Worker(boot, { eval: true, workerData: { sab }, resourceLimits: { maxOldGenerationSizeMb: memoryMb }, stdout: false, stderr: false });
}

type SegmentEnd =
  | { kind: 'done'; stats: StatsSummary }
  | { kind: 'hang' | 'crash'; stats: StatsSummary | undefined; input: Uint8Array | undefined; message: string };

class WorkerHandle {
  readonly sab = new SharedArrayBuffer(SHARED_BYTES);
  readonly ctl = new Int32Array(this.sab, 0, SHARED.CTL_INTS);
  readonly clock = new Float64Array(this.sab, SHARED.CLOCK_OFFSET, 1);
  readonly input = new Uint8Array(this.sab, SHARED.INPUT_OFFSET, SHARED.INPUT_CAP);
  readonly worker: Worker;
  private listener: ((m: WorkerMessage) => void) | undefined;
  private failed: ((message: string) => void) | undefined;
  readonly ready: Promise<void>;
  dead = false;

  constructor(memoryMb: number) {
    this.worker = tsxWorker(this.sab, memoryMb);
    this.ready = new Promise((resolve, reject) => {
      this.listener = (m) => { if (m.type === 'ready') resolve(); };
      this.failed = (message) => reject(new Error(`fuzz worker failed to start: ${message}`));
    });
    this.worker.on('message', (m: WorkerMessage) => this.listener?.(m));
    this.worker.on('error', (e: Error) => { this.dead = true; this.failed?.(`${e.name}: ${e.message}`); });
    this.worker.on('exit', (code) => { if (!this.dead) { this.dead = true; this.failed?.(`worker exited with code ${code}`); } });
  }

  /** The input of the call in progress, if any. */
  currentInput(): Uint8Array | undefined {
    if (Atomics.load(this.ctl, SHARED.IN_CALL) !== 1) return undefined;
    return this.input.slice(0, Atomics.load(this.ctl, SHARED.LEN));
  }

  runSegment(req: RunRequest, hangMs: number, onProgress: (s: StatsSummary) => void, onFailure: (f: FuzzFailure) => void): Promise<SegmentEnd> {
    return new Promise((resolve) => {
      let last: StatsSummary | undefined;
      let settled = false;
      const finish = (end: SegmentEnd): void => {
        if (settled) return;
        settled = true;
        clearInterval(watchdog);
        resolve(end);
      };
      const watchdog = setInterval(() => {
        if (Atomics.load(this.ctl, SHARED.IN_CALL) === 1 && Date.now() - this.clock[0]! > hangMs) {
          const input = this.currentInput();
          finish({ kind: 'hang', stats: last, input, message: `no return within ${hangMs} ms (worker terminated)` });
        }
      }, Math.min(250, Math.max(20, hangMs / 4)));
      this.listener = (m) => {
        if (m.type === 'progress') { last = m.stats; onProgress(m.stats); }
        else if (m.type === 'failure') onFailure(m.failure);
        else if (m.type === 'done') finish({ kind: 'done', stats: m.stats });
        else if (m.type === 'error') finish({ kind: 'crash', stats: last, input: undefined, message: m.message });
      };
      this.failed = (message) => finish({ kind: 'crash', stats: last, input: this.currentInput(), message });
      if (this.dead) { this.failed('worker is not running'); return; }
      this.worker.postMessage(req);
    });
  }

  async kill(): Promise<void> {
    this.dead = true;
    await this.worker.terminate();
  }
}

const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

export async function runCampaign(o: CampaignOptions): Promise<TargetResult[]> {
  const memoryMb = o.memoryMb ?? 1024;
  const maxRestarts = o.maxRestarts ?? 3;
  let handle: WorkerHandle | undefined;
  const results: TargetResult[] = [];
  try {
    for (const [index, target] of o.targets.entries()) {
      const plan = o.plan(target, index);
      const res: TargetResult = { target, inputs: 0, ms: 0, slowestMs: 0, slowestInputHex: '', outcomes: 0, corpus: 0, restarts: 0, failures: [] };
      const bySig = new Map<string, FuzzFailure>();
      const addFailure = (f: FuzzFailure): void => {
        const known = bySig.get(f.signature);
        if (known) { known.count += f.count; return; }
        const copy = { ...f };
        bySig.set(f.signature, copy);
        res.failures.push(copy);
        o.onFailure?.(copy);
      };
      const started = Date.now();
      let remainingInputs = plan.maxInputs;
      let seed = o.seed;
      for (;;) {
        if (!handle || handle.dead) {
          handle = new WorkerHandle(memoryMb);
          await handle.ready;
        }
        const remainingMs = plan.budgetMs === undefined ? undefined : Math.max(0, plan.budgetMs - (Date.now() - started));
        const base = { inputs: res.inputs };
        const req: RunRequest = {
          target, seed, slowMs: o.slowMs,
          ...(remainingMs !== undefined ? { budgetMs: remainingMs } : {}),
          ...(remainingInputs !== undefined ? { maxInputs: remainingInputs } : {}),
          ...(plan.inputsHex !== undefined ? { inputsHex: plan.inputsHex.slice(res.inputs), minimize: false } : {}),
        };
        const merge = (s: StatsSummary): void => {
          res.inputs = base.inputs + s.inputs;
          if (s.slowestMs > res.slowestMs) { res.slowestMs = s.slowestMs; res.slowestInputHex = s.slowestInputHex; }
          res.outcomes = Math.max(res.outcomes, Object.keys(s.outcomes).length);
          res.corpus = Math.max(res.corpus, s.corpus);
        };
        const end = await handle.runSegment(req, o.hangMs,
          (s) => { merge(s); o.onProgress?.({ target, index, inputs: res.inputs, failures: res.failures.length, ms: Date.now() - started }); },
          addFailure);
        if (end.kind === 'done') { merge(end.stats); break; }
        // Hang or crash: record it with the input the worker was running, start a fresh worker.
        if (end.stats) merge(end.stats);
        res.inputs++;
        const input = end.input ?? new Uint8Array(0);
        addFailure({
          target, kind: end.kind, signature: `${target}|${end.kind}|${end.message.replace(/\d+/g, 'N')}`,
          error: `${end.kind === 'hang' ? 'Hang' : 'Crash'}: ${end.message}${end.input ? '' : ' (no call in progress)'}`,
          inputHex: toHex(input), count: 1,
        });
        await handle.kill();
        handle = undefined;
        res.restarts++;
        if (remainingInputs !== undefined) remainingInputs = Math.max(0, plan.maxInputs! - res.inputs);
        if (plan.inputsHex !== undefined && res.inputs >= plan.inputsHex.length) break;
        if (res.restarts >= maxRestarts || remainingInputs === 0 || (plan.budgetMs !== undefined && Date.now() - started >= plan.budgetMs)) break;
        seed = hash32(`${o.seed}:${target}:${res.restarts}`);
      }
      res.ms = Date.now() - started;
      results.push(res);
    }
  } finally {
    if (handle) await handle.kill();
  }
  return results;
}

/**
 * Replay inputs (hex) against a target, each on its own, under the same watchdog: the failures
 * of each input (empty when it behaves). For regression tests of fuzz-found inputs.
 */
export async function replay(target: string, inputsHex: readonly string[], o: { hangMs?: number; slowMs?: number } = {}): Promise<FuzzFailure[][]> {
  const results = await runCampaign({
    targets: inputsHex.map(() => target), seed: 1, slowMs: o.slowMs ?? 60_000, hangMs: o.hangMs ?? 5000, maxRestarts: 1,
    plan: (_t, i) => ({ inputsHex: [inputsHex[i]!] }),
  });
  return results.map((r) => r.failures);
}
