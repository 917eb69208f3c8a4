/**
 * Two Direwolf 1.6 soundcard TNCs linked in software: a real AFSK 1200 bd packet-radio
 * channel on one machine, for the KISS hardware-in-the-loop tests and for trying Trickle
 * without radios.
 *
 *   KissModem ⇄ TCP 127.0.0.1:kissA ⇄ direwolf A ─ALSA file plugin→ FIFO a.tx ─┐
 *                                                                              ├ audio relay (this file)
 *   KissModem ⇄ TCP 127.0.0.1:kissB ⇄ direwolf B ─ALSA file plugin→ FIFO b.tx ─┘
 *                                        ▲ stdin ◀── real-time stream of A's samples (and vice versa)
 *
 * Audio path, per instance (Direwolf 1.6 on Linux):
 * - Receive: `ADEVICE stdin …` makes Direwolf read raw signed 16-bit little-endian mono
 *   samples at ARATE from its standard input.
 * - Transmit: Direwolf writes through ALSA. A generated `~/.asoundrc` (HOME points at the
 *   instance's temporary directory) defines `pcm.trickle_tx` as ALSA's `file` plugin with
 *   a `null` slave and `format raw`: every sample played is appended to a FIFO and nothing
 *   reaches a sound card. (An inline `file:FILE=…` device name would do the same, but
 *   Direwolf 1.6 cuts device names at 29 characters.)
 * - The relay reads A's FIFO and writes to B's stdin in real time: every 20 ms it sends
 *   exactly as many samples as the wall clock says are due at ARATE, taken from A's queued
 *   transmit audio when there is some and zeros (silence) otherwise. Direwolf's
 *   demodulator and its carrier detect (DCD, which holds back its own CSMA transmissions)
 *   therefore see a continuous stream, as from a receiver with squelch open. Direwolf writes
 *   a burst into ALSA faster than real time (the null slave does not pace); the relay queues
 *   it and plays it out at the sample rate, so the burst takes its true airtime on the
 *   simulated channel, which the relay measures.
 * - The channel is clean and full duplex (each direction is its own audio path, a station
 *   does not hear itself); loss is exercised by the unit and property tests, not here.
 *
 * Each instance: KISS over TCP on a free 127.0.0.1 port (KISSPORT), the AGW port off
 * (AGWPORT 0), MODEM 1200 (Bell 202 AFSK, 1200/2200 Hz), MYCALL per instance.
 *
 * Run directly: `tsx scripts/direwolf-pair.ts [CALL-A CALL-B]` starts a pair and prints the
 * two KISS ports until Ctrl-C; everything (processes, FIFOs, temp files) is removed on exit.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { constants as fsConstants, openSync, writeFileSync, mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type PairSide = 'a' | 'b';

export interface DirewolfStation {
  readonly side: PairSide;
  readonly callsign: string;
  /** KISS TCP port on 127.0.0.1. */
  readonly kissPort: number;
  readonly pid: number;
  /** The last lines Direwolf printed (for failing tests). */
  log(): string;
}

/** One transmission as the relay played it onto the simulated channel. */
export interface Burst {
  from: PairSide;
  /** Wall-clock time (Date.now()) of the first and last sample played to the receiver. */
  startMs: number;
  endMs: number;
  samples: number;
  /** samples / sampleRate: the airtime of the whole burst (TXDELAY flags, frame, tail). */
  airtimeMs: number;
}

export interface DirewolfPairOptions {
  callsigns?: [string, string];
  /** ARATE, samples per second (default 44100, Direwolf's default). */
  sampleRate?: number;
  /** MODEM speed (default 1200: Bell 202 AFSK). */
  baud?: number;
  /** The Direwolf executable (default `direwolf` on the PATH). */
  direwolfPath?: string;
  /** How long to wait for both instances to accept KISS clients. */
  readyTimeoutMs?: number;
}

export interface DirewolfPair {
  readonly a: DirewolfStation;
  readonly b: DirewolfStation;
  readonly sampleRate: number;
  readonly dir: string;
  /** Every finished burst so far, in order. */
  bursts(): Burst[];
  /** Called when a burst has been played out completely. */
  onBurst(listener: (burst: Burst) => void): void;
  /** Relay counters per direction ('a' = what A transmitted, played into B). */
  stats(): Record<PairSide, { txSamples: number; playedSamples: number; silenceSamples: number; maxQueuedSamples: number }>;
  /** Kill both instances, stop the relay, remove the temporary directory. Idempotent. */
  close(): Promise<void>;
}

export class DirewolfUnavailableError extends Error {
  constructor(message: string) { super(message); this.name = 'DirewolfUnavailableError'; }
}

/** True when a `direwolf` that prints its version is on the PATH. */
export function direwolfInstalled(direwolfPath = 'direwolf'): boolean {
  const r = spawnSync(direwolfPath, ['-u'], { stdio: 'ignore', timeout: 10_000 });
  return r.error === undefined;
}

const TICK_MS = 20;
/** A queue that stayed empty this long ends a burst. */
const BURST_GAP_MS = 60;
const BYTES_PER_SAMPLE = 2;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function direwolfConf(o: { callsign: string; kissPort: number; sampleRate: number; baud: number }): string {
  // Keywords as documented in "Dire Wolf User Guide" (1.6), chapter 9 "Configuration file".
  return [
    '# Generated by Trickle scripts/direwolf-pair.ts; removed on teardown.',
    'ADEVICE stdin trickle_tx',
    'ACHANNELS 1',
    `ARATE ${o.sampleRate}`,
    'CHANNEL 0',
    `MYCALL ${o.callsign}`,
    `MODEM ${o.baud}`,
    // Defaults for a station that is not driven by a KISS client; KissModem overrides them.
    'TXDELAY 30',
    'TXTAIL 10',
    `KISSPORT ${o.kissPort}`,
    'AGWPORT 0',
    '',
  ].join('\n');
}

function asoundrc(fifo: string): string {
  return [
    '# Generated by Trickle scripts/direwolf-pair.ts: transmit audio goes to a FIFO, not a sound card.',
    'pcm.trickle_tx {',
    '  type file',
    '  slave.pcm null',
    `  file "${fifo}"`,
    '  format raw',
    '}',
    '',
  ].join('\n');
}

/** Live Direwolf processes, killed if this process exits without closing its pairs. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => { for (const c of liveChildren) c.kill('SIGKILL'); });
  }
}

interface Instance {
  station: DirewolfStation;
  child: ChildProcess;
  exited: Promise<void>;
  /** Raw transmit audio (from the FIFO), as a socket over the FIFO. */
  txSocket: Socket;
  fifoFd: number;
}

/** Play one direction of the channel: A's transmit FIFO into B's stdin, in real time. */
class ChannelRelay {
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private odd: Buffer | undefined;
  private readonly t0 = performance.now();
  private played = 0;
  private current: { startMs: number; samples: number; lastMs: number } | undefined;
  readonly counters = { txSamples: 0, playedSamples: 0, silenceSamples: 0, maxQueuedSamples: 0 };

  constructor(
    readonly from: PairSide,
    private readonly sampleRate: number,
    private readonly sink: (chunk: Buffer) => void,
    private readonly burstDone: (b: Burst) => void,
  ) {}

  push(chunk: Buffer): void {
    let data = chunk;
    if (this.odd) { data = Buffer.concat([this.odd, chunk]); this.odd = undefined; }
    if (data.length % BYTES_PER_SAMPLE !== 0) { this.odd = data.subarray(data.length - 1); data = data.subarray(0, data.length - 1); }
    if (data.length === 0) return;
    this.queue.push(data);
    this.queuedBytes += data.length;
    this.counters.txSamples += data.length / BYTES_PER_SAMPLE;
    this.counters.maxQueuedSamples = Math.max(this.counters.maxQueuedSamples, this.queuedBytes / BYTES_PER_SAMPLE);
  }

  tick(): void {
    const due = Math.floor(((performance.now() - this.t0) * this.sampleRate) / 1000);
    let n = due - this.played;
    if (n <= 0) return;
    this.played = due;
    const out = Buffer.alloc(n * BYTES_PER_SAMPLE); // zeros: silence
    let o = 0;
    let fromQueue = 0;
    while (o < out.length && this.queue.length > 0) {
      const head = this.queue[0]!;
      const take = Math.min(head.length, out.length - o);
      head.copy(out, o, 0, take);
      o += take;
      fromQueue += take;
      if (take === head.length) this.queue.shift(); else this.queue[0] = head.subarray(take);
    }
    this.queuedBytes -= fromQueue;
    const samplesFromQueue = fromQueue / BYTES_PER_SAMPLE;
    this.counters.playedSamples += samplesFromQueue;
    this.counters.silenceSamples += n - samplesFromQueue;
    const now = Date.now();
    if (samplesFromQueue > 0) {
      if (!this.current) this.current = { startMs: now - Math.round((n * 1000) / this.sampleRate), samples: 0, lastMs: now };
      this.current.samples += samplesFromQueue;
      this.current.lastMs = now;
    } else if (this.current && now - this.current.lastMs >= BURST_GAP_MS) {
      const c = this.current;
      this.current = undefined;
      this.burstDone({ from: this.from, startMs: c.startMs, endMs: c.lastMs, samples: c.samples, airtimeMs: (c.samples * 1000) / this.sampleRate });
    }
    this.sink(out);
  }
}

async function startInstance(side: PairSide, dir: string, callsign: string, sampleRate: number, baud: number,
  direwolfPath: string, readyTimeoutMs: number): Promise<Instance & { stdin: NonNullable<ChildProcess['stdin']> }> {
  const home = join(dir, side);
  rmSync(home, { recursive: true, force: true });
  mkdirSync(home, { recursive: true });
  const fifo = join(home, 'tx.fifo');
  const mk = spawnSync('mkfifo', [fifo]);
  if (mk.status !== 0) throw new Error(`mkfifo ${fifo} failed: ${mk.stderr?.toString() ?? ''}`);
  // O_RDWR on a FIFO (Linux): we are a writer too, so opening never blocks and reads never
  // see end-of-file while Direwolf has not opened it yet or between its ALSA sessions.
  const fifoFd = openSync(fifo, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
  const txSocket = new Socket({ fd: fifoFd, readable: true, writable: false });
  const kissPort = await freePort();
  writeFileSync(join(home, '.asoundrc'), asoundrc(fifo));
  const confPath = join(home, 'direwolf.conf');
  writeFileSync(confPath, direwolfConf({ callsign, kissPort, sampleRate, baud }));

  const child = spawn(direwolfPath, ['-c', confPath, '-t', '0', '-a', '0', '-q', 'd'], {
    cwd: home,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, HOME: home, XDG_CONFIG_HOME: home },
  });
  track(child);
  let out = '';
  const onText = (d: Buffer): void => { out = (out + d.toString()).slice(-20_000); };
  child.stdout?.on('data', onText);
  child.stderr?.on('data', onText);
  // Direwolf exits or is killed while we write silence into it: not an error of ours.
  child.stdin?.on('error', () => { /* reported through 'exit' */ });
  const exited = new Promise<void>((resolve) => { child.once('exit', () => resolve()); child.once('error', () => resolve()); });
  const station: DirewolfStation = { side, callsign, kissPort, pid: child.pid ?? -1, log: () => out };

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => finish(new DirewolfUnavailableError(
      `direwolf ${side} (${callsign}) did not accept KISS clients on 127.0.0.1:${kissPort} within ${readyTimeoutMs} ms; its output:\n${out}`)), readyTimeoutMs);
    const poll = setInterval(() => { if (out.includes(`Ready to accept KISS TCP client application 0 on port ${kissPort}`)) finish(); }, 50);
    function finish(err?: Error): void {
      clearTimeout(timer);
      clearInterval(poll);
      child.off('exit', onExit);
      child.off('error', onError);
      if (err) reject(err); else resolve();
    }
    function onExit(code: number | null, signal: string | null): void {
      finish(new DirewolfUnavailableError(`direwolf ${side} (${callsign}) exited (${signal ?? `code ${String(code)}`}) before it was ready; its output:\n${out}`));
    }
    function onError(err: NodeJS.ErrnoException): void {
      finish(new DirewolfUnavailableError(err.code === 'ENOENT'
        ? `direwolf is not installed (${direwolfPath} not found): install it with \`apt-get install direwolf\``
        : `cannot start direwolf (${direwolfPath}): ${err.message}`));
    }
    child.once('exit', onExit);
    child.once('error', onError);
  }).catch(async (err: unknown) => {
    child.kill('SIGKILL');
    await exited;
    txSocket.destroy();
    throw err;
  });
  return { station, child, exited, txSocket, fifoFd, stdin: child.stdin! };
}

export async function startDirewolfPair(options: DirewolfPairOptions = {}): Promise<DirewolfPair> {
  const [callA, callB] = options.callsigns ?? ['N0CALL-1', 'N0CALL-2'];
  const sampleRate = options.sampleRate ?? 44_100;
  const baud = options.baud ?? 1200;
  const direwolfPath = options.direwolfPath ?? 'direwolf';
  const readyTimeoutMs = options.readyTimeoutMs ?? 15_000;
  const dir = mkdtempSync(join(tmpdir(), 'trickle-dw-'));
  const instances: Instance[] = [];
  let timer: NodeJS.Timeout | undefined;
  let closing: Promise<void> | undefined;

  const teardown = async (): Promise<void> => {
    if (timer) clearInterval(timer);
    for (const i of instances) {
      i.child.stdin?.destroy();
      if (i.child.exitCode === null && i.child.signalCode === null) i.child.kill('SIGTERM');
    }
    await Promise.all(instances.map(async (i) => {
      const t = setTimeout(() => i.child.kill('SIGKILL'), 3_000);
      await i.exited;
      clearTimeout(t);
      i.txSocket.destroy(); // closes the FIFO descriptor
    }));
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const a = await startInstance('a', dir, callA, sampleRate, baud, direwolfPath, readyTimeoutMs);
    instances.push(a);
    const b = await startInstance('b', dir, callB, sampleRate, baud, direwolfPath, readyTimeoutMs);
    instances.push(b);

    const finished: Burst[] = [];
    const burstListeners: ((b: Burst) => void)[] = [];
    const done = (burst: Burst): void => { finished.push(burst); for (const l of burstListeners) l(burst); };
    const write = (stdin: NonNullable<ChildProcess['stdin']>) => (chunk: Buffer): void => {
      if (!stdin.destroyed && stdin.writable) stdin.write(chunk);
    };
    const relays: Record<PairSide, ChannelRelay> = {
      a: new ChannelRelay('a', sampleRate, write(b.stdin), done),
      b: new ChannelRelay('b', sampleRate, write(a.stdin), done),
    };
    a.txSocket.on('data', (c: Buffer) => relays.a.push(c));
    b.txSocket.on('data', (c: Buffer) => relays.b.push(c));
    for (const i of [a, b]) i.txSocket.on('error', () => { /* the FIFO is closed on teardown */ });
    timer = setInterval(() => { relays.a.tick(); relays.b.tick(); }, TICK_MS);

    return {
      a: a.station,
      b: b.station,
      sampleRate,
      dir,
      bursts: () => [...finished],
      onBurst: (l) => { burstListeners.push(l); },
      stats: () => ({ a: { ...relays.a.counters }, b: { ...relays.b.counters } }),
      close: () => (closing ??= teardown()),
    };
  } catch (err) {
    await teardown();
    throw err;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const calls = process.argv.slice(2);
  const pair = await startDirewolfPair(calls.length === 2 ? { callsigns: [calls[0]!, calls[1]!] } : {});
  process.stdout.write(
    `direwolf pair running (AFSK 1200 bd, ${pair.sampleRate} samples/s, files in ${pair.dir})\n` +
    `  A ${pair.a.callsign}: KISS over TCP on 127.0.0.1:${pair.a.kissPort} (pid ${pair.a.pid})\n` +
    `  B ${pair.b.callsign}: KISS over TCP on 127.0.0.1:${pair.b.kissPort} (pid ${pair.b.pid})\n` +
    'Try it (a gateway on B, a field kit on A):\n' +
    `  npm run trickle -- gateway --kiss-tcp 127.0.0.1:${pair.b.kissPort} --callsign ${pair.b.callsign} --peer ${pair.a.callsign} --region none --sf 10 --homeserver https://matrix.example.org\n` +
    `  npm run trickle -- host --kiss-tcp 127.0.0.1:${pair.a.kissPort} --callsign ${pair.a.callsign} --peer ${pair.b.callsign} --region none --sf 10\n` +
    'Ctrl-C stops both and removes the files.\n');
  pair.onBurst((b) => process.stdout.write(`  burst from ${b.from.toUpperCase()}: ${b.airtimeMs.toFixed(0)} ms on air\n`));
  const stop = (): void => { void pair.close().then(() => process.exit(0)); };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
