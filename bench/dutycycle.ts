/**
 * Duty-cycle bench: 24 virtual hours of saturating mixed traffic through the real TxQueue and
 * DutyCycleLedger on a fake clock, per region scenario, then an independent brute-force check of
 * every window (test/sim/window-checker.ts, which shares no code with the ledger).
 *
 *   tsx bench/dutycycle.ts [--json] [--hours N] [--seed N]
 *
 * Traffic (per scenario, seeded), sized from the design's byte budget: control (4–12 B) and
 * interactive (20–52 B, half of them with a 10 min deadline) arrive at random (Poisson, offering
 * 2 % and 4 % of what the channel allows) for 3 peers; sync (30–80 B) and bulk (70–136 B, CoAP
 * blocks) are kept saturated (16 of each always queued), so the radio always has something it may
 * send. TxQueue runs with its defaults (bulk ≤ ½ of the budget) unless the row says otherwise.
 *
 * Columns:
 *   violations      windows (any start/end edge) whose airtime exceeds a limit: must be 0
 *   maxWindowRatio  the fullest window's airtime / its budget (tightest limit)
 *   utilization     airtime sent in [0, T] / airtime the rules allowed while a frame allowed to go
 *                   was waiting: ∫ rate dt over the run, rate = the tightest limit's budget/window
 *                   while anything but bulk waits, the bulk share of the hourly budget while only
 *                   bulk (held by its cap) waits, 0 when idle. A reserve (the 'sync reserve' row)
 *                   is policy, not law, so its unused part counts against utilization.
 *
 * The 'channel access' row puts the medium-access layer (src/scheduler/channel-access.ts) in front
 * of the radio: every frame is sensed first (busy 30 % of the time, each sense 2.5 symbols of
 * listening), interactive messages ask for an answer and open a receive window, and answers are
 * heard at random: the law must still hold to the microsecond with every wait it adds.
 */
import { FakeClock } from '../test/helpers/fake-clock.ts';
import { checkWindows, countOverlaps, type Transmission } from '../test/sim/window-checker.ts';
import { mulberry32 } from '../test/helpers/prng.ts';
import { loraAirtimeMs } from '../src/scheduler/airtime.ts';
import { resolveChannel, type RegionId } from '../src/scheduler/regions.ts';
import { TxQueue, type Priority } from '../src/scheduler/tx-queue.ts';
import { ChannelAccess, type SenseResult } from '../src/scheduler/channel-access.ts';
import { isTrickleError } from '../src/errors.ts';

export interface Scenario {
  name: string;
  region: RegionId;
  freqHz: number;
  sf: number;
  bandwidthHz: number;
  strictOffTime?: boolean;
  /** TxQueue classShares (default: the queue's own, bulk ≤ ½). */
  classShares?: Partial<Record<Priority, number>>;
  /** Medium access in front of the radio: share of senses that find the channel busy, share of answers heard. */
  channelAccess?: { busyShare: number; answerShare: number };
}

export const SCENARIOS: Scenario[] = [
  { name: 'eu868 1% (868.1 MHz SF9)', region: 'eu868', freqHz: 868_100_000, sf: 9, bandwidthHz: 125_000 },
  { name: 'eu868 10% (869.525 MHz SF9)', region: 'eu868', freqHz: 869_525_000, sf: 9, bandwidthHz: 125_000 },
  { name: 'us915 dwell (903.9 MHz SF7)', region: 'us915', freqHz: 903_900_000, sf: 7, bandwidthHz: 125_000 },
  { name: 'eu868 0.1% (868.95 MHz SF9)', region: 'eu868', freqHz: 868_950_000, sf: 9, bandwidthHz: 125_000 },
  { name: 'eu868 1% + sync reserve 0.9', region: 'eu868', freqHz: 868_100_000, sf: 9, bandwidthHz: 125_000, classShares: { sync: 0.9, bulk: 0.5 } },
  { name: 'eu868 1% + strict T_off', region: 'eu868', freqHz: 868_100_000, sf: 9, bandwidthHz: 125_000, strictOffTime: true },
  { name: 'eu868 10% + channel access', region: 'eu868', freqHz: 869_525_000, sf: 9, bandwidthHz: 125_000, channelAccess: { busyShare: 0.3, answerShare: 0.8 } },
];

export interface ScenarioResult {
  name: string;
  violations: number;
  utilization: number;
  maxWindowRatio: number;
  frames: number;
  messages: number;
  overlaps: number;
  airtimeS: number;
  allowedS: number;
  controlWaitMeanS: number;
  controlWaitMaxS: number;
  interactiveWaitMeanS: number;
  dutyCycleRejections: number;
}

// Sizes from the design's byte budget: requests ≤ 32 B, responses ≤ 52 B, pushes ≤ 80 B; bulk is
// CoAP Block2 blocks of 64 or 128 bytes (RFC 7959 SZX 2, 3) plus a few bytes of header.
const SIZES: Record<Priority, [number, number]> = { control: [4, 12], interactive: [20, 52], sync: [30, 80], bulk: [70, 136] };
const SATURATED: Priority[] = ['sync', 'bulk'];
const PEERS = ['gw-a', 'gw-b', 'gw-c'];
/** Messages of each saturated class kept queued at all times. */
const BACKLOG = 16;
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

export async function runScenario(sc: Scenario, hours: number, seed: number): Promise<ScenarioResult> {
  const rnd = mulberry32(seed);
  const clock = new FakeClock(0);
  const T = hours * 3_600_000;
  const ch = resolveChannel(sc.region, sc.freqHz, sc.bandwidthHz);
  const airtime = (n: number): number => loraAirtimeMs({ payloadBytes: n, sf: sc.sf, bandwidthHz: sc.bandwidthHz, codingRate: 5 });
  const log: Transmission[] = [];
  const shares: Record<Priority, number> = { control: 1, interactive: 1, sync: 1, bulk: 0.5, ...sc.classShares };
  const ca = sc.channelAccess;
  const symbolMs = (2 ** sc.sf / sc.bandwidthHz) * 1000;
  const access = ca ? new ChannelAccess({
    clock, random: rnd, symbolMs, frameAirtimeMs: airtime, maxFrameLen: 255, answerDelayMs: 300, sendEndsAtTxDone: false,
    sense: () => new Promise<SenseResult>((resolve) => {
      clock.setTimer(2.5 * symbolMs, () => resolve({ busy: rnd() < ca.busyShare, durationMs: 2.5 * symbolMs }));
    }),
  }) : undefined;
  const q = new TxQueue({
    clock, rules: ch.rules, maxFrameLen: 255, frameAirtimeMs: airtime,
    ...(sc.classShares ? { classShares: sc.classShares } : {}),
    ...(sc.strictOffTime ? { strictOffTime: true } : {}),
    ...(access ? { access } : {}),
    transmit: async (frame) => {
      const a = airtime(frame.length);
      log.push({ startMs: clock.now(), airtimeMs: a });
      // The peer answers some frames: heard after our airtime, its turnaround and its answer's airtime.
      if (access && rnd() < ca!.answerShare) clock.setTimer(a + 50 + rnd() * 250, () => access.heard(20));
    },
  });

  // Outstanding (queued, unresolved) messages per class, and the "allowed frame waiting" integral.
  const outstanding: Record<Priority, number> = { control: 0, interactive: 0, sync: 0, bulk: 0 };
  const tightestRate = Math.min(...ch.rules.limits.map((l) => l.budgetMs / l.windowMs));
  // The rules' rate while something that may go is waiting. Bulk held back by its cap when it is
  // the only thing waiting is not "allowed to go": that time counts at the bulk share.
  const dcLimits = ch.rules.limits.filter((l) => l.kind === 'duty-cycle');
  const rateFor = (p: Priority): number =>
    p !== 'bulk' ? tightestRate : Math.min(tightestRate, ...dcLimits.map((l) => (l.budgetMs * shares.bulk) / l.windowMs));
  let allowedMs = 0;
  let lastMark = 0;
  const mark = (): void => {
    const now = Math.min(clock.now(), T);
    const top = (['control', 'interactive', 'sync', 'bulk'] as const).find((p) => outstanding[p] > 0);
    const rate = top ? rateFor(top) : 0;
    allowedMs += (now - lastMark) * rate;
    lastMark = now;
  };
  const waits: Record<Priority, number[]> = { control: [], interactive: [], sync: [], bulk: [] };
  let rejections = 0;
  let messages = 0;

  const submit = (p: Priority, deadlineMs?: number): void => {
    mark();
    const [lo, hi] = SIZES[p];
    const payload = new Uint8Array(lo + Math.floor(rnd() * (hi - lo + 1)));
    const peer = PEERS[Math.floor(rnd() * PEERS.length)]!;
    outstanding[p]++;
    q.enqueue(payload, { priority: p, peer, expectsAnswer: p === 'interactive', ...(deadlineMs !== undefined ? { deadlineMs } : {}) }).then(
      (r) => { mark(); outstanding[p]--; messages++; waits[p].push(r.waitedMs); refill(); },
      (e: unknown) => {
        mark(); outstanding[p]--;
        if (isTrickleError(e, 'ERR_LINK_CLOSED')) return; // end of run
        if (isTrickleError(e, 'ERR_DUTY_CYCLE')) rejections++; else throw e;
        refill();
      },
    );
  };
  const refill = (): void => {
    for (const p of SATURATED) while (outstanding[p] < BACKLOG) submit(p);
  };
  // Poisson arrivals for control and interactive, sized so that each offers a few per cent of what
  // the channel allows per hour (control 2 %, interactive 4 %).
  const arrivals = (p: Priority, perHour: number, deadlineShare: number): void => {
    const gap = -Math.log(1 - rnd()) * (3_600_000 / perHour);
    clock.setTimer(gap, () => {
      if (clock.now() >= T) return;
      submit(p, rnd() < deadlineShare ? 600_000 : undefined);
      arrivals(p, perHour, deadlineShare);
    });
  };
  refill();
  const perHourMs = tightestRate * 3_600_000;
  const meanAirtime = (p: Priority): number => airtime(1 + (SIZES[p][0] + SIZES[p][1]) / 2);
  arrivals('control', (0.02 * perHourMs) / meanAirtime('control'), 0);
  arrivals('interactive', (0.04 * perHourMs) / meanAirtime('interactive'), 0.5);

  for (;;) {
    await flush();
    if (clock.now() >= T) break;
    if (!clock.step()) break;
  }
  mark();
  q.close();
  await flush();

  const inRun = log.filter((t) => t.startMs < T);
  const usedMs = inRun.reduce((s, t) => s + Math.min(t.airtimeMs, T - t.startMs), 0);
  let violations = 0;
  let maxRatio = 0;
  for (const l of ch.rules.limits) {
    const rep = checkWindows(log, l);
    violations += rep.violations;
    if (rep.violations > 0 && rep.worst) {
      process.stderr.write(`${sc.name}: ${rep.violations} windows over ${l.kind} ${l.budgetMs} ms / ${l.windowMs} ms; worst at ${rep.worst.windowStartMs} ms holds ${rep.worst.airtimeMs} ms (${((rep.worst.airtimeMs - l.budgetMs) * 1000).toFixed(3)} µs over)\n`);
    }
    maxRatio = Math.max(maxRatio, rep.maxWindowRatio);
  }
  if (ch.rules.maxFrameAirtimeMs !== null) violations += log.filter((t) => t.airtimeMs > ch.rules.maxFrameAirtimeMs!).length;
  const mean = (xs: number[]): number => (xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : 0);
  return {
    name: sc.name,
    violations,
    utilization: round(usedMs / allowedMs, 4),
    maxWindowRatio: round(maxRatio, 6),
    frames: log.length,
    messages,
    overlaps: countOverlaps(log),
    airtimeS: round(usedMs / 1000, 1),
    allowedS: round(allowedMs / 1000, 1),
    controlWaitMeanS: round(mean(waits.control) / 1000, 1),
    controlWaitMaxS: round(Math.max(0, ...waits.control) / 1000, 1),
    interactiveWaitMeanS: round(mean(waits.interactive) / 1000, 1),
    dutyCycleRejections: rejections,
  };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function table(rows: ScenarioResult[]): string {
  const head = ['scenario', 'frames', 'msgs', 'airtime s', 'allowed s', 'violations', 'maxWindowRatio', 'utilization', 'ctrl wait mean/max s', 'inter. wait s', 'ERR_DUTY_CYCLE'];
  const body = rows.map((r) => [
    r.name, String(r.frames), String(r.messages), r.airtimeS.toFixed(1), r.allowedS.toFixed(1), String(r.violations + r.overlaps),
    r.maxWindowRatio.toFixed(6), r.utilization.toFixed(4), `${r.controlWaitMeanS.toFixed(1)} / ${r.controlWaitMaxS.toFixed(1)}`,
    r.interactiveWaitMeanS.toFixed(1), String(r.dutyCycleRejections),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const num = (flag: string, dflt: number): number => {
    const i = argv.indexOf(flag);
    if (i < 0) return dflt;
    const v = Number(argv[i + 1]);
    if (!(v > 0)) { process.stderr.write(`${flag} needs a positive number\n`); process.exit(2); }
    return v;
  };
  const hours = num('--hours', 24);
  const seed = num('--seed', 1);
  const results: ScenarioResult[] = [];
  for (const [i, sc] of SCENARIOS.entries()) results.push(await runScenario(sc, hours, seed + i));
  if (json) process.stdout.write(`${JSON.stringify({ hours, scenarios: results })}\n`);
  else process.stdout.write(`duty-cycle bench: ${hours} virtual hours per scenario, seed ${seed}\n\n${table(results)}\n`);
  const bad = results.some((r) => r.violations > 0 || r.overlaps > 0 || r.utilization < 0.95);
  return bad ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
