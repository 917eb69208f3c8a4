/**
 * Test harness for the whole path with real parts:
 *   matrix-js-sdk → `trickle host` (child process) → PTY ⇄ LinkRelay ⇄ PTY → `trickle gateway` (child process) → Synapse
 * The relay sits in the test process, so a test can watch, damage and drop the serial bytes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPtyPair, type PtyPair } from '../../src/link/pty.ts';
import { openSerialLink } from '../../src/link/serial.ts';
import { LinkRelay } from '../../src/link/relay.ts';
import { freePort } from '../../scripts/synapse.ts';

const repo = fileURLToPath(new URL('../../', import.meta.url));

export interface TrickleProcess {
  child: ChildProcess;
  output: () => string;
  stop: () => Promise<void>;
}

/** `stdin`: text written to the process's standard input, which is then closed (e.g. a password for --password-stdin). */
export function spawnTrickle(args: string[], opts: { stdin?: string } = {}): TrickleProcess {
  // Without --state-dir, each process gets a fresh one of its own: never the user's real state,
  // and never a directory another process of the test holds (one process per state dir).
  const stateEnv = args.includes('--state-dir') ? {} : { TRICKLE_STATE_DIR: mkdtempSync(join(tmpdir(), 'trickle-proc-')) };
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: repo,
    stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...stateEnv, TRICKLE_LOG: process.env['TRICKLE_TEST_LOG'] ?? 'info' },
  });
  if (opts.stdin !== undefined) child.stdin?.end(opts.stdin);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => { out = (out + d.toString()).slice(-20000); });
  child.stderr?.on('data', (d: Buffer) => { out = (out + d.toString()).slice(-20000); });
  return {
    child,
    output: () => out,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
    },
  };
}

/** Resolves with the exit code. */
export function waitExit(p: TrickleProcess, timeoutMs = 20_000): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (p.child.exitCode !== null) return resolve(p.child.exitCode);
    const t = setTimeout(() => reject(new Error(`process did not exit:\n${p.output()}`)), timeoutMs);
    p.child.once('exit', (code) => { clearTimeout(t); resolve(code); });
  });
}

export async function waitForHttp(url: string, timeoutMs = 30_000, proc?: TrickleProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch { /* not yet */ }
    if (proc && proc.child.exitCode !== null) throw new Error(`process exited early:\n${proc.output()}`);
    if (Date.now() > deadline) throw new Error(`${url} did not answer in time${proc ? `:\n${proc.output()}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface RadioPath {
  hostDevice: string;
  gatewayDevice: string;
  relay: LinkRelay;
  close(): Promise<void>;
}

/** Two PTY pairs joined by a relay: host ⇄ ptyA —socat— ptyA' ⇄ relay ⇄ ptyB' —socat— ptyB ⇄ gateway. */
export async function createRadioPath(): Promise<RadioPath> {
  const pairs: PtyPair[] = [await createPtyPair(), await createPtyPair()];
  const [pa, pb] = pairs as [PtyPair, PtyPair];
  const la = await openSerialLink(pa.b);
  const lb = await openSerialLink(pb.a);
  const relay = new LinkRelay(la, lb);
  return {
    hostDevice: pa.a,
    gatewayDevice: pb.b,
    relay,
    async close() {
      await la.close();
      await lb.close();
      for (const p of pairs) await p.close();
    },
  };
}

export { freePort };

/**
 * State directories for a field kit and a gateway that know each other: each has its own key
 * pair, and the gateway's authorized_keys lists the kit (as `trickle keys add` writes it).
 */
export async function pairedStateDirs(kitName = 'test-kit'): Promise<{ hostDir: string; gatewayDir: string; cleanup(): void }> {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { loadOrCreateIdentity, runKeysCommand } = await import('../../src/cli/keys.ts');
  const { encodePublicKey } = await import('../../src/secure/fingerprint.ts');
  const root = mkdtempSync(join(tmpdir(), 'trickle-state-'));
  const hostDir = join(root, 'host');
  const gatewayDir = join(root, 'gateway');
  const kit = loadOrCreateIdentity(hostDir).keyPair;
  loadOrCreateIdentity(gatewayDir);
  await runKeysCommand(['add', encodePublicKey(kit.publicKey), kitName, '--state-dir', gatewayDir], () => {});
  return { hostDir, gatewayDir, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}
