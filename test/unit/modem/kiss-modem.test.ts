import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  KissModem, kissAirtimeMs, kissFramingOverhead, kissModemFactory, resolveKissModemConfig, kissParameterCommands,
} from '../../../src/modem/kiss/kiss-modem.ts';
import { KissDecoder, encodeKissDataFrame, encodeKissFrame, FEND, FESC } from '../../../src/modem/kiss/kiss.ts';
import { ax25AirtimeMs, decodeAx25Frame, encodeAx25UiFrame, parseAx25Address, parseCallsign } from '../../../src/modem/kiss/ax25.ts';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import type { Link } from '../../../src/link/link.ts';
import { concatBytes, fromHex, toHex } from '../../../src/util/bytes.ts';
import { ConfigError, isTrickleError, type ErrorCode } from '../../../src/errors.ts';
import { ByteCollector } from '../../helpers/pty.ts';

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A TNC's view: the raw link end, plus what the modem wrote to it. */
function setup(options: Partial<Parameters<typeof resolveKissModemConfig>[0]> = {}) {
  const [tnc, side] = createMemoryLinkPair('kiss');
  const written = new ByteCollector(tnc);
  const modem = new KissModem(side, { callsign: 'N0CALL-1', ...options });
  const frames: string[] = [];
  const drops: ErrorCode[] = [];
  modem.onFrame((f) => frames.push(toHex(f)));
  modem.onDrop((code) => drops.push(code));
  return { tnc, written, modem, frames, drops };
}

/** A data frame as a TNC delivers it: from `source` to `destination`. */
function fromAir(source: string, destination: string, info: Uint8Array, port = 0): Uint8Array {
  return encodeKissDataFrame(port, encodeAx25UiFrame({ destination: parseAx25Address(destination), source: parseCallsign(source), info }));
}

describe('KissModem configuration', () => {
  it('requires a callsign and says why', () => {
    const [l] = createMemoryLinkPair();
    expect(() => new KissModem(l, {} as never)).toThrow(/callsign is required: amateur rules/);
    expect(() => new KissModem(l, { callsign: 'BASECAMP' })).toThrow(ConfigError);
  });

  it('names the bad key and value', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ destination: 'TOOLONGX' }, /destination.*"TOOLONGX"/],
      [{ peer: 'N0CALL-99' }, /peer.*"N0CALL-99"/],
      [{ port: 16 }, /port must be an integer from 0 to 15, got 16/],
      [{ persistence: 256 }, /persistence .*got 256/],
      [{ txDelayMs: -1 }, /txDelayMs .*got -1/],
      [{ slotTimeMs: 3000 }, /slotTimeMs .*got 3000/],
      [{ maxFrameLen: 0 }, /maxFrameLen .*got 0/],
    ];
    for (const [o, re] of bad) expect(() => resolveKissModemConfig({ callsign: 'N0CALL', ...o })).toThrow(re);
  });

  it('fills in the defaults', () => {
    const c = resolveKissModemConfig({ callsign: 'n0call-2' });
    expect(c).toEqual({
      source: { callsign: 'N0CALL', ssid: 2 }, destination: { callsign: 'TRICKL', ssid: 0 }, peer: undefined, port: 0,
      txDelayMs: 300, persistence: 63, slotTimeMs: 100, txTailMs: undefined, fullDuplex: false, maxFrameLen: 256,
    });
  });

  it('the factory validates before any link exists', () => {
    expect(() => kissModemFactory({ callsign: 'X' })).toThrow(ConfigError);
    const [l] = createMemoryLinkPair();
    expect(kissModemFactory({ callsign: 'N0CALL' })(l).dialect).toBe('kiss');
  });
});

describe('KissModem over a memory link', () => {
  it('sends TXDELAY, P, SlotTime, (TXtail) and FullDuplex at start, before any data frame', async () => {
    const { written, modem } = setup({ txDelayMs: 250, persistence: 255, slotTimeMs: 50, txTailMs: 20, port: 1 });
    const sent = modem.send(fromHex('aa'));
    await modem.ready;
    await sent;
    await settle();
    const frames = new KissDecoder({ maxFrameLen: 512 }).push(written.bytes()).frames;
    expect(frames.map((f) => [f.port, f.command, toHex(f.data)])).toEqual([
      [1, 1, '19'], [1, 2, 'ff'], [1, 3, '05'], [1, 4, '02'], [1, 5, '00'],
      [1, 0, toHex(encodeAx25UiFrame({ destination: parseAx25Address('TRICKL'), source: parseCallsign('N0CALL-1'), info: fromHex('aa') }))],
    ]);
    expect(modem.stats().wireBytesSent).toBe(written.length);
  });

  it('rounds millisecond parameters to 10 ms units and omits TXtail unless set', () => {
    const c = resolveKissModemConfig({ callsign: 'N0CALL', txDelayMs: 304, slotTimeMs: 96 });
    expect(kissParameterCommands(c).map(toHex)).toEqual(['c0011ec0', 'c0023fc0', 'c0030ac0', 'c00500c0']);
  });

  it('airtime: TXDELAY + the AX.25 frame at the bit rate + TXtail', () => {
    const c = resolveKissModemConfig({ callsign: 'N0CALL-1', txDelayMs: 300, txTailMs: 50 });
    const p = new Uint8Array(100);
    const frame = encodeAx25UiFrame({ destination: c.destination, source: c.source, info: p });
    expect(kissAirtimeMs(p, c)).toBe(ax25AirtimeMs(frame, { baud: 1200, txDelayMs: 300, txTailMs: 50 }));
    // 116 bytes + 2 FCS + 2 flags = 960 bits = 800 ms at 1200 bd, plus a few stuffed bits (FCS).
    expect(kissAirtimeMs(p, c)).toBeGreaterThanOrEqual(350 + 800);
    expect(kissAirtimeMs(p, c)).toBeLessThan(350 + 800 + 10);
  });

  it('wraps each frame in an AX.25 UI frame and reports the KISS bytes written', async () => {
    const { written, modem } = setup();
    await modem.ready;
    const before = written.length;
    const payload = fromHex('c0db00ff');
    const r = await modem.send(payload);
    await written.until(before + r.wireBytes);
    const wire = written.bytes().subarray(before);
    expect(r.wireBytes).toBe(wire.length);
    expect(toHex(wire)).toBe(toHex(fromAir('N0CALL-1', 'TRICKL', payload)));
    expect(kissFramingOverhead(payload)).toEqual({ onAirHeaderBytes: 16, onAirFcsBytes: 2, serialFramingBytes: 3 + 2, wireBytes: wire.length });
    expect(modem.framingOverhead(payload)).toEqual({ onAir: 18, serial: 5 });
  });

  it('accepts frames to its destination from any other station, and drops the rest by reason', async () => {
    const { tnc, modem, frames, drops } = setup();
    const otherPid = encodeAx25UiFrame({ destination: parseAx25Address('TRICKL'), source: parseCallsign('N0CALL-2'), info: fromHex('05'), pid: 0xcc });
    const sabm = encodeAx25UiFrame({ destination: parseAx25Address('TRICKL'), source: parseCallsign('N0CALL-2'), info: fromHex('06') });
    sabm[14] = 0x2f;
    await tnc.write(concatBytes(
      fromHex('0102'),                                         // noise before the first FEND
      fromAir('N0CALL-2', 'TRICKL', fromHex('01')),            // ours
      fromAir('N0CALL-2', 'APDW16', fromHex('02')),            // APRS, another destination
      fromAir('N0CALL-1', 'TRICKL', fromHex('03')),            // our own frame echoed back
      fromAir('N0CALL-2', 'TRICKL', fromHex('04'), 1),         // another KISS port
      encodeKissDataFrame(0, otherPid),                        // PID 0xCC (IP)
      encodeKissDataFrame(0, sabm),                            // connected mode
      encodeKissFrame({ port: 0, command: 6, data: fromHex('00') }), // SetHardware from the TNC
      encodeKissDataFrame(0, fromHex('0102030405')),          // too short for AX.25
      fromAir('W1AW-3', 'TRICKL', fromHex('07')),              // ours, another station
    ));
    await settle();
    expect(frames).toEqual(['01', '07']);
    expect(drops).toEqual([
      'ERR_FRAME_NOISE', 'ERR_AX25_NOT_OURS', 'ERR_AX25_NOT_OURS', 'ERR_KISS_COMMAND', 'ERR_AX25_PID',
      'ERR_AX25_NOT_UI', 'ERR_KISS_COMMAND', 'ERR_FRAME_TOO_SHORT',
    ]);
    expect(modem.stats().framesReceived).toBe(2);
    expect(modem.stats().dropped).toEqual({
      ERR_FRAME_NOISE: 1, ERR_AX25_NOT_OURS: 2, ERR_KISS_COMMAND: 2, ERR_AX25_PID: 1, ERR_AX25_NOT_UI: 1, ERR_FRAME_TOO_SHORT: 1,
    });
  });

  it('with peer set, accepts only that source', async () => {
    const { tnc, frames, drops } = setup({ peer: 'N0CALL-2', destination: 'TRICKL-3' });
    await tnc.write(concatBytes(
      fromAir('N0CALL-2', 'TRICKL-3', fromHex('01')),
      fromAir('W1AW', 'TRICKL-3', fromHex('02')),
      fromAir('N0CALL-2', 'TRICKL', fromHex('03')),
    ));
    await settle();
    expect(frames).toEqual(['01']);
    expect(drops).toEqual(['ERR_AX25_NOT_OURS', 'ERR_AX25_NOT_OURS']);
  });

  it('drops information fields longer than maxFrameLen', async () => {
    const { tnc, frames, drops } = setup({ maxFrameLen: 8 });
    await tnc.write(concatBytes(fromAir('N0CALL-2', 'TRICKL', new Uint8Array(9)), fromAir('N0CALL-2', 'TRICKL', new Uint8Array(8))));
    await settle();
    expect(frames).toEqual(['0000000000000000']);
    expect(drops).toEqual(['ERR_FRAME_TOO_LONG']);
  });

  it('rejects empty and oversize frames with ERR_MODEM_MTU, writing nothing', async () => {
    const { written, modem } = setup({ maxFrameLen: 16 });
    await modem.ready;
    await settle();
    const before = written.length;
    await expect(modem.send(new Uint8Array(17))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_MODEM_MTU'));
    await expect(modem.send(new Uint8Array(0))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_MODEM_MTU'));
    await settle();
    expect(written.length).toBe(before);
    expect(modem.capabilities).toEqual({ maxFrameLen: 16, enforcesDutyCycle: false, reportsAirtime: false, channelSense: 'firmware' });
  });

  it('two modems talk through a memory link as through a TNC pair (KISS data frames are passed on)', async () => {
    // A "TNC pair" that only forwards data frames, as Direwolf forwards what it demodulates.
    const relay = (from: Link, to: Link): void => {
      const d = new KissDecoder({ maxFrameLen: 1024 });
      from.onData((c) => { for (const f of d.push(c).frames) if (f.command === 0) void to.write(encodeKissFrame(f)); });
    };
    const [ta, ma] = createMemoryLinkPair('a');
    const [tb, mb] = createMemoryLinkPair('b');
    relay(ta, tb); relay(tb, ta);
    const a = new KissModem(ma, { callsign: 'N0CALL-1', peer: 'N0CALL-2' });
    const b = new KissModem(mb, { callsign: 'N0CALL-2', peer: 'N0CALL-1' });
    const atA: string[] = []; const atB: string[] = [];
    a.onFrame((f) => atA.push(toHex(f)));
    b.onFrame((f) => atB.push(toHex(f)));
    await a.send(fromHex('c0ffee'));
    await b.send(fromHex('db'));
    for (let i = 0; i < 5; i++) await settle();
    expect(atB).toEqual(['c0ffee']);
    expect(atA).toEqual(['db']);
  });

  it('reports the link going away through onClose, and send then rejects with ERR_LINK_CLOSED', async () => {
    const { tnc, modem } = setup();
    const closed = new Promise<Error | undefined>((r) => modem.onClose(r));
    await tnc.close();
    expect(isTrickleError(await closed, 'ERR_LINK_IO')).toBe(true);
    await expect(modem.send(fromHex('01'))).rejects.toSatisfy((e) => isTrickleError(e, 'ERR_LINK_CLOSED'));
  });
});

describe('KissModem properties', () => {
  it('framing overhead: wireBytes is always what send writes', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 256 }), fc.integer({ min: 0, max: 15 }), (p, port) => {
      const wire = fromAir('N0CALL-1', 'TRICKL', p, port);
      const o = kissFramingOverhead(p, port);
      expect(o.wireBytes).toBe(wire.length);
      expect(o.wireBytes).toBe(p.length + o.onAirHeaderBytes + o.serialFramingBytes);
    }));
  });

  it('garbage between TNC frames never yields a frame that was not sent; every sent frame arrives in order', async () => {
    // Garbage is delimited like a frame by the FENDs around it; exclude the (rare) garbage
    // that happens to be a valid AX.25 UI frame for us: no check can reject that.
    const fakeOurs = (g: Uint8Array): boolean =>
      new KissDecoder({ maxFrameLen: 1024 }).push(concatBytes(Uint8Array.of(FEND), g, Uint8Array.of(FEND))).frames.some((f) => {
        const r = decodeAx25Frame(f.data, { maxInfoLen: 64 });
        return f.command === 0 && f.port === 0 && r.ok && r.frame.destination.callsign === 'TRICKL';
      });
    const garbage = fc.oneof(
      fc.uint8Array({ maxLength: 60 }),
      fc.array(fc.constantFrom(FEND, FESC, 0xdc, 0x00, 0x03, 0xf0), { maxLength: 30 }).map((a) => new Uint8Array(a)),
    );
    await fc.assert(fc.asyncProperty(
      fc.array(fc.tuple(garbage, fc.uint8Array({ minLength: 1, maxLength: 64 })), { minLength: 1, maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      async (items, rawCuts) => {
        for (const [g] of items) fc.pre(!fakeOurs(g));
        const { tnc, frames } = setup({ maxFrameLen: 64 });
        const wire = concatBytes(...items.flatMap(([g, p]) => [g, fromAir('N0CALL-2', 'TRICKL', p)]));
        const cuts = [...new Set(rawCuts.map((c) => c % wire.length))].sort((x, y) => x - y);
        let start = 0;
        for (const cut of [...cuts, wire.length]) {
          if (cut > start) await tnc.write(wire.subarray(start, cut));
          start = cut;
        }
        await settle();
        expect(frames).toEqual(items.map(([, p]) => toHex(p)));
      },
    ), { numRuns: 150 });
  });
});
