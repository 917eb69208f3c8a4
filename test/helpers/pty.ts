/**
 * Helpers for tests that run over real PTY pairs (socat). Tests that need socat skip with
 * a reason when it is missing instead of passing silently.
 */
import { spawnSync } from 'node:child_process';
import type { Link } from '../../src/link/link.ts';

export const socatAvailable: boolean = spawnSync('socat', ['-V'], { stdio: 'ignore' }).status === 0;
export const noSocatReason = 'socat is not installed (apt-get install socat): PTY tests skipped';

/** Collects everything a link receives; `until(n)` resolves once n bytes have arrived. */
export class ByteCollector {
  private parts: Uint8Array[] = [];
  length = 0;
  private waiters: { n: number; resolve: () => void }[] = [];

  constructor(link: Link) {
    link.onData((chunk) => {
      this.parts.push(chunk);
      this.length += chunk.length;
      this.waiters = this.waiters.filter((w) => (this.length >= w.n ? (w.resolve(), false) : true));
    });
  }

  bytes(): Uint8Array { return Buffer.concat(this.parts); }

  until(n: number): Promise<void> {
    if (this.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }
}

/** Resolves on the first onClose of `link`, with its error (if any). */
export function closedOf(link: { onClose(l: (err?: Error) => void): void }): Promise<Error | undefined> {
  return new Promise((resolve) => link.onClose((err) => resolve(err)));
}
