/** Messages and shared-memory layout between campaign.ts (main thread) and worker.ts. */
import type { FuzzFailure, TargetStats } from './engine.ts';

export const SHARED = Object.freeze({
  /** Int32 slots: IN_CALL (1 while a target call runs), LEN (bytes of the current input). */
  CTL_INTS: 4,
  IN_CALL: 0,
  LEN: 1,
  /** A float64: Date.now() when the current call started. */
  CLOCK_OFFSET: 16,
  /** The current input (inputs are bounded by each target's maxLen, far below this). */
  INPUT_OFFSET: 32,
  INPUT_CAP: 1 << 20,
});

export const SHARED_BYTES = SHARED.INPUT_OFFSET + SHARED.INPUT_CAP;

export interface RunRequest {
  readonly target: string;
  readonly seed: number;
  readonly maxInputs?: number;
  readonly budgetMs?: number;
  readonly slowMs: number;
  /** Replay these inputs (hex) instead of fuzzing. */
  readonly inputsHex?: readonly string[];
  /** Minimize failures (default true). */
  readonly minimize?: boolean;
}

export type StatsSummary = Omit<TargetStats, 'failures'>;

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'progress'; stats: StatsSummary }
  | { type: 'failure'; failure: FuzzFailure }
  | { type: 'done'; stats: StatsSummary }
  | { type: 'error'; target: string; message: string };
