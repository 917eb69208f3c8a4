/**
 * The fuzzing worker thread: runs targets on request and reports progress, failures and totals.
 * Before every call it writes the input and the time into shared memory, so the main thread's
 * watchdog (campaign.ts) can name the input of a call that never returns and kill the thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { runTarget, type FuzzFailure, type TargetStats } from './engine.ts';
import { targetByName } from './targets.ts';
import { SHARED, type RunRequest, type WorkerMessage } from './protocol.ts';

const port = parentPort;
if (!port) throw new Error('test/fuzz/worker.ts runs as a worker thread (campaign.ts starts it)');

const sab = (workerData as { sab: SharedArrayBuffer }).sab;
const ctl = new Int32Array(sab, 0, SHARED.CTL_INTS);
const clock = new Float64Array(sab, SHARED.CLOCK_OFFSET, 1);
const inputArea = new Uint8Array(sab, SHARED.INPUT_OFFSET, SHARED.INPUT_CAP);

const post = (m: WorkerMessage): void => port.postMessage(m);

function beforeCall(input: Uint8Array): void {
  const n = Math.min(input.length, SHARED.INPUT_CAP);
  inputArea.set(input.subarray(0, n));
  Atomics.store(ctl, SHARED.LEN, n);
  clock[0] = Date.now();
  Atomics.store(ctl, SHARED.IN_CALL, 1);
}

function afterCall(): void {
  Atomics.store(ctl, SHARED.IN_CALL, 0);
}

const summary = (s: TargetStats): Omit<TargetStats, 'failures'> => ({
  target: s.target, inputs: s.inputs, ms: s.ms, slowestMs: s.slowestMs, slowestInputHex: s.slowestInputHex, outcomes: s.outcomes, corpus: s.corpus,
});

port.on('message', (req: RunRequest) => {
  const target = targetByName(req.target);
  if (!target) {
    post({ type: 'error', target: req.target, message: `unknown target ${req.target}` });
    return;
  }
  const stats = runTarget(target, {
    seed: req.seed,
    ...(req.maxInputs !== undefined ? { maxInputs: req.maxInputs } : {}),
    ...(req.budgetMs !== undefined ? { deadline: performance.now() + req.budgetMs } : {}),
    slowMs: req.slowMs,
    ...(req.inputsHex !== undefined ? { inputs: req.inputsHex.map((h) => new Uint8Array(Buffer.from(h, 'hex'))) } : {}),
    ...(req.minimize !== undefined ? { minimize: req.minimize } : {}),
    beforeCall,
    afterCall,
    onProgress: (s) => post({ type: 'progress', stats: summary(s) }),
    onFailure: (f: FuzzFailure) => post({ type: 'failure', failure: f }),
  });
  post({ type: 'done', stats: summary(stats) });
});

post({ type: 'ready' });
