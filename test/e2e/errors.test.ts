/**
 * What a user sees when something is wrong: a missing or busy serial device, a missing
 * flag, a homeserver the gateway cannot reach. Real processes, real PTYs.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createPtyPair, type PtyPair } from '../../src/link/pty.ts';
import { openSerialLink } from '../../src/link/serial.ts';
import { freePort, spawnTrickle, waitExit, waitForHttp, type TrickleProcess } from '../helpers/stack.ts';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => { for (const c of cleanups.reverse()) await c(); });

describe('trickle CLI errors', () => {
  it('names a serial device that does not exist and exits non-zero', async () => {
    const p = spawnTrickle(['host', '--device', '/dev/ttyTRICKLE-NOPE', '--listen', '127.0.0.1:0']);
    expect(await waitExit(p)).toBe(1);
    expect(p.output()).toContain('/dev/ttyTRICKLE-NOPE');
    expect(p.output()).toMatch(/does not exist/);
    expect(p.output()).toContain('ERR_LINK_NOT_FOUND');
  });

  it('names a serial device that another program holds and exits non-zero', async () => {
    const pair: PtyPair = await createPtyPair();
    const holder = await openSerialLink(pair.a);
    cleanups.push(async () => { await holder.close(); await pair.close(); });
    const p = spawnTrickle(['gateway', '--device', pair.a, '--homeserver', 'http://127.0.0.1:9']);
    expect(await waitExit(p)).toBe(1);
    expect(p.output()).toContain(pair.a);
    expect(p.output()).toContain('ERR_LINK_BUSY');
  });

  it('explains a missing flag with the usage text, exit code 2', async () => {
    const p = spawnTrickle(['gateway', '--device', '/dev/null']);
    expect(await waitExit(p)).toBe(2);
    expect(p.output()).toContain('--homeserver is required');
    expect(p.output()).toContain('usage: trickle gateway');
  });

  it('refuses a bad flag value and names the allowed range', async () => {
    const p = spawnTrickle(['host', '--device', '/dev/null', '--max-frame', '7']);
    expect(await waitExit(p)).toBe(1);
    expect(p.output()).toContain('--max-frame must be an integer from 32 to 65535');
  });

  it('gives local clients a Matrix error, not a hang, when the gateway cannot reach the homeserver', async () => {
    const pair = await createPtyPair();
    const deadPort = await freePort();
    const hp = await freePort();
    const procs: TrickleProcess[] = [
      spawnTrickle(['gateway', '--region', 'none', '--security', 'none', '--device', pair.b, '--homeserver', `http://127.0.0.1:${deadPort}`]),
      spawnTrickle(['host', '--region', 'none', '--security', 'none', '--device', pair.a, '--listen', `127.0.0.1:${hp}`]),
    ];
    cleanups.push(async () => { for (const p of procs) await p.stop(); await pair.close(); });
    await waitForHttp(`http://127.0.0.1:${hp}/_trickle/status`, 30_000, procs[1]);
    const started = Date.now();
    const r = await fetch(`http://127.0.0.1:${hp}/_matrix/client/v3/login`);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(r.status).toBe(502);
    const body = (await r.json()) as { errcode: string; error: string };
    expect(body.errcode).toBe('M_UNKNOWN');
    expect(body.error).toContain('cannot reach the homeserver');
    expect(body.error).toContain(`127.0.0.1:${deadPort}`);
  });
});
