/**
 * The Meshtastic dialect: wire vectors (test/vectors/meshtastic-v1.json, built with an
 * independent encoder), the minimal protobuf codec, the stream deframer, and MeshtasticModem
 * against the Meshtastic emulator over in-memory links on a fake clock (the PTY version is
 * test/hil/meshtastic-emulator.test.ts).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ProtoMessage, ProtoWriter, readFields } from '../../../src/modem/meshtastic/protobuf.ts';
import {
  BROADCAST_NUM, MAX_STREAM_PACKET, PortNum, StreamDecoder, decodeAirHeader, decodeFromRadio, decodeToRadio, encodeAirHeader, encodeData,
  encodeFromRadio, encodeMeshPacket, encodeStreamFrame, encodeToRadio, airData, meshtasticOnAirOverhead, type FromRadio, type ToRadio,
} from '../../../src/modem/meshtastic/meshtastic-protocol.ts';
import {
  MeshtasticModem, meshtasticModemFactory, resolveMeshtasticModemConfig, type MeshtasticModemOptions, type MeshtasticReceivedFrameMeta,
} from '../../../src/modem/meshtastic/meshtastic-modem.ts';
import { MESHTASTIC_PRESETS, MeshtasticEmulator, type MeshtasticEmulatorOptions } from '../../../src/modem/emulator/meshtastic-emulator.ts';
import { RfMedium } from '../../../src/modem/emulator/rf-medium.ts';
import { createMemoryLinkPair } from '../../../src/link/memory.ts';
import { ConfigError, type ErrorCode } from '../../../src/errors.ts';
import { fromHex, toHex } from '../../../src/util/bytes.ts';
import { FakeClock } from '../../helpers/fake-clock.ts';
import { ByteCollector } from '../../helpers/pty.ts';

interface Vectors {
  toRadio: { name: string; message: Record<string, unknown>; wire: string }[];
  fromRadio: { name: string; wire: string; expect: Record<string, unknown> }[];
  air: { header: Parameters<typeof encodeAirHeader>[0]; headerWire: string; data: string; onAirOverhead: number };
}
const vectors = JSON.parse(readFileSync(new URL('../../vectors/meshtastic-v1.json', import.meta.url), 'utf8')) as Vectors;

/** Vector JSON → protocol objects: hex strings under "payload" become bytes. */
function revive<T>(o: unknown): T {
  return JSON.parse(JSON.stringify(o), (k, v: unknown) => (k === 'payload' && typeof v === 'string' ? fromHex(v) : v)) as T;
}
/** Protocol objects → JSON-comparable (bytes as hex). */
function plain(o: unknown): unknown {
  return JSON.parse(JSON.stringify(o, (_k, v: unknown) => (v instanceof Uint8Array ? toHex(v) : v)));
}
const body = (wire: string): Uint8Array => fromHex(wire).subarray(4);
const settle = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r)); };

describe('Meshtastic wire vectors', () => {
  for (const v of vectors.toRadio) {
    it(`ToRadio: ${v.name}`, () => {
      const msg = revive<ToRadio>(v.message);
      expect(toHex(encodeStreamFrame(encodeToRadio(msg)))).toBe(v.wire);
      expect(plain(decodeToRadio(body(v.wire)))).toEqual(plain('packet' in msg ? { packet: { ...msg.packet, hopLimit: undefined } } : msg));
    });
  }
  for (const v of vectors.fromRadio) {
    it(`FromRadio: ${v.name}`, () => {
      expect(plain(decodeFromRadio(body(v.wire)))).toEqual(v.expect);
      expect(toHex(encodeStreamFrame(encodeFromRadio(revive<FromRadio>(v.expect))))).toBe(v.wire);
    });
  }
  it('on air: the 16-byte header and the Data with the firmware bitfield; the overhead figure', () => {
    expect(toHex(encodeAirHeader(vectors.air.header))).toBe(vectors.air.headerWire);
    expect(decodeAirHeader(fromHex(vectors.air.headerWire))).toEqual(vectors.air.header);
    expect(toHex(encodeData(airData(fromHex('6869'))))).toBe(vectors.air.data);
    expect(meshtasticOnAirOverhead(2)).toBe(vectors.air.onAirOverhead);
    // 16 + portnum 3 + tag 1 + length varint (1 or 2) + bitfield 2, for every payload size.
    for (const n of [1, 127, 128, 231, 233]) {
      expect(meshtasticOnAirOverhead(n)).toBe(16 + encodeData(airData(new Uint8Array(n))).length - n);
    }
    expect(meshtasticOnAirOverhead(231) + 231).toBe(255); // the default maxFrameLen fills one LoRa packet exactly
  });
});

describe('minimal protobuf codec', () => {
  it('round-trips uint, int32 (negative: 10-byte varint), fixed32, float, bytes (property)', () => {
    fc.assert(fc.property(fc.nat({ max: 0xffff_ffff }), fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff }), fc.nat({ max: 0xffff_ffff }),
      fc.float({ noNaN: true }), fc.uint8Array({ maxLength: 300 }), (u, i, f, x, b) => {
        const m = new ProtoMessage(new ProtoWriter().uint(1, u).int32(2, i).fixed32(3, f).float(4, x).bytes(5, b).finish());
        expect(m.uint32(1)).toBe(u);
        expect(m.int32(2)).toBe(i);
        expect(m.fixed32(3)).toBe(f);
        expect(m.float(4)).toBe(Math.fround(x));
        expect(m.bytes(5)).toEqual(b);
      }));
  });

  it('skips unknown fields (including fixed64) and rejects what it cannot read', () => {
    const skip = new ProtoMessage(fromHex('09' + '0102030405060708' + '1001'));
    expect(skip.uint32(2)).toBe(1);
    const bad = (hex: string): string => {
      try { readFields(fromHex(hex)); return 'accepted'; } catch (e) { return (e as { code: string }).code; }
    };
    expect(bad('08')).toBe('ERR_PROTOBUF_DECODE'); // truncated varint
    expect(bad('0a05aa')).toBe('ERR_PROTOBUF_DECODE'); // length beyond the end
    expect(bad('0b')).toBe('ERR_PROTOBUF_DECODE'); // group (wire type 3)
    expect(bad('0001')).toBe('ERR_PROTOBUF_DECODE'); // field number 0
    expect(bad('08ffffffffffffffffffff01')).toBe('ERR_PROTOBUF_DECODE'); // 11-byte varint
    expect(() => new ProtoMessage(fromHex('0d01020304')).uint32(1)).toThrow(/should be a varint/);
  });
});

describe('stream framing', () => {
  it('skips debug text, resyncs after a bad length, ignores empty frames', () => {
    const good = encodeStreamFrame(Uint8Array.of(0x08, 0x01));
    const input = Uint8Array.from([
      ...new TextEncoder().encode('INFO | booting\r\n'),
      0x94, 0xc3, 0x02, 0x01, // claims 513 bytes
      ...good,
      0x94, 0xc3, 0x00, 0x00, // empty
      0x94, 0x94, 0xc3, 0x00, 0x01, 0x10, // START1 twice, then a frame
    ]);
    const d = new StreamDecoder();
    const r = d.push(input);
    expect(r.packets.map(toHex)).toEqual(['0801', '10']);
    expect(r.errors.map((e) => e.code)).toEqual(['ERR_FRAME_NOISE', 'ERR_FRAME_TOO_LONG', 'ERR_FRAME_EMPTY', 'ERR_FRAME_NOISE']);
    expect(r.text).toContain('INFO | booting');
    expect(() => encodeStreamFrame(new Uint8Array(MAX_STREAM_PACKET + 1))).toThrow(/exceeds the stream limit/);
  });

  it('finds the same frames however the stream is chunked (property)', () => {
    const frames = [Uint8Array.of(1, 2, 3), new Uint8Array(512).fill(0x94), Uint8Array.of(0xc3)];
    const wire = Uint8Array.from([0x20, ...frames.flatMap((f) => [...encodeStreamFrame(f)]), 0x0a]);
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: wire.length - 1 }), { maxLength: 8 }), (cuts) => {
      const d = new StreamDecoder();
      const got: Uint8Array[] = [];
      let at = 0;
      for (const p of [...[...new Set(cuts)].sort((a, b) => a - b), wire.length]) { got.push(...d.push(wire.subarray(at, p)).packets); at = p; }
      expect(got).toEqual(frames);
    }));
  });
});

describe('MeshtasticModem options', () => {
  it('requires a destination and names bad values', () => {
    expect(() => resolveMeshtasticModemConfig({} as MeshtasticModemOptions)).toThrow(/destination is required/);
    expect(() => resolveMeshtasticModemConfig({ destination: 0x1234, channel: 8 })).toThrow(/channel 8 is not allowed; allowed: a channel index 0..7/);
    expect(() => resolveMeshtasticModemConfig({ destination: 0x1234, maxFrameLen: 234 })).toThrow(ConfigError);
    expect(resolveMeshtasticModemConfig({ destination: 'broadcast' })).toMatchObject({ destination: BROADCAST_NUM, peer: undefined, maxFrameLen: 231, hopLimit: 0 });
    expect(resolveMeshtasticModemConfig({ destination: 0x1234 })).toMatchObject({ peer: 0x1234 });
  });

  it('states its overhead and that the node enforces the duty cycle', () => {
    const [l] = createMemoryLinkPair();
    const m = new MeshtasticModem(l, { destination: 0x1234abcd });
    m.ready.catch(() => undefined);
    expect(m.capabilities).toEqual({ maxFrameLen: 231, enforcesDutyCycle: true, reportsAirtime: false, channelSense: 'firmware' });
    expect(m.framingOverhead(new Uint8Array(2))).toEqual({ onAir: 23, serial: 23 });
    expect(m.framingOverhead(new Uint8Array(200))).toEqual({ onAir: 24, serial: 26 });
  });
});

const A = 0xa1b2c3d4;
const B = 0x1234abcd;

function rig(options: { a?: Partial<MeshtasticEmulatorOptions>; b?: Partial<MeshtasticEmulatorOptions> } = {}) {
  const clock = new FakeClock();
  const medium = new RfMedium({ clock });
  const preset = MESHTASTIC_PRESETS['SHORT_FAST']!;
  let n = 0x100;
  const random32 = (): number => n++;
  const emuA = new MeshtasticEmulator(medium, { name: 'a', nodeNum: A, positionM: { xM: 0, yM: 0 }, preset, random32, ...options.a });
  const emuB = new MeshtasticEmulator(medium, { name: 'b', nodeNum: B, positionM: { xM: 800, yM: 0 }, preset, random32, ...options.b });
  const [hostA, devA] = createMemoryLinkPair('a');
  const [hostB, devB] = createMemoryLinkPair('b');
  emuA.attach(devA);
  emuB.attach(devB);
  return { clock, medium, emuA, emuB, hostA, hostB, devA, devB, random32 };
}

describe('MeshtasticModem against the Meshtastic emulator (memory links, fake clock)', () => {
  it('runs the config handshake, then exchanges PRIVATE_APP frames both ways with RSSI and SNR', async () => {
    const r = rig();
    const written = new ByteCollector(r.devA);
    const [a, b] = await Promise.all([
      MeshtasticModem.start(r.hostA, { destination: B, clock: r.clock, random32: () => 0x12345678 }),
      MeshtasticModem.start(r.hostB, { destination: A, clock: r.clock, random32: r.random32 }),
    ]);
    expect(a.myNodeNum).toBe(A);
    expect(b.myNodeNum).toBe(B);
    expect(toHex(written.bytes())).toBe('c3'.repeat(32) + '94c3000618f8acd19101');

    const got: { text: string; meta: MeshtasticReceivedFrameMeta }[] = [];
    b.onFrame((f, meta) => got.push({ text: new TextDecoder().decode(f), meta: meta as MeshtasticReceivedFrameMeta }));
    a.onFrame((f, meta) => got.push({ text: new TextDecoder().decode(f), meta: meta as MeshtasticReceivedFrameMeta }));
    const report = await a.send(new TextEncoder().encode('PUT /send hello'));
    expect(report.wireBytes).toBe(15 + a.framingOverhead(new Uint8Array(15)).serial);
    expect(a.queueStatus).toMatchObject({ res: 0, maxlen: 16 });
    r.clock.advance(1_000);
    await settle();
    await b.send(new TextEncoder().encode('200 OK'));
    r.clock.advance(1_000);
    await settle();
    expect(got.map((g) => g.text)).toEqual(['PUT /send hello', '200 OK']);
    expect(got[0]!.meta).toMatchObject({ fromNode: A, hopLimit: 0 });
    expect(got[0]!.meta.rssiDbm).toBeLessThan(-70);
    expect(got[0]!.meta.snrDb).toBeGreaterThan(0);
    expect(a.stats()).toMatchObject({ framesSent: 1, framesReceived: 1 });
    expect(r.emuA.counters.txPackets).toBe(1);
  });

  it('surfaces the node’s duty-cycle NAK as ERR_DUTY_CYCLE the scheduler can see', async () => {
    // 0.03 % of an hour = 1080 ms of airtime; at SHORT_FAST a 200-byte frame (239 bytes on air) takes ~190 ms.
    const r = rig({ a: { dutyCyclePct: 0.03 } });
    const a = await MeshtasticModem.start(r.hostA, { destination: B, clock: r.clock, random32: r.random32 });
    const results: string[] = [];
    for (let i = 0; i < 7; i++) {
      results.push(await a.send(new Uint8Array(200).fill(i)).then(() => 'ok', (e: { code: ErrorCode }) => e.code));
      r.clock.advance(500);
      await settle();
    }
    expect(results.slice(0, 3)).toEqual(['ok', 'ok', 'ok']);
    expect(results.at(-1)).toBe('ERR_DUTY_CYCLE');
    expect(r.emuA.counters.dutyCycleNaks).toBeGreaterThan(0);
    const err = await a.send(new Uint8Array(200)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_DUTY_CYCLE', layer: 'modem', detail: { routingError: 'DUTY_CYCLE_LIMIT' } });
    expect((err as Error).message).toMatch(/refused to transmit: its duty-cycle limit for the region is reached/);
    // An hour later the budget is back.
    r.clock.advance(3_600_000);
    await expect(a.send(Uint8Array.of(1))).resolves.toBeDefined();
  });

  it('drops other mesh traffic, other senders and other channels as ERR_MODEM_NOT_OURS', async () => {
    const r = rig();
    const a = await MeshtasticModem.start(r.hostA, { destination: B, clock: r.clock, random32: r.random32 });
    const frames: string[] = [];
    const drops: ErrorCode[] = [];
    a.onFrame((f) => frames.push(toHex(f)));
    a.onDrop((code) => drops.push(code));
    const deliver = (packet: Parameters<typeof encodeMeshPacket>[0]): Promise<void> =>
      r.devA.write(encodeStreamFrame(encodeFromRadio({ id: 99, variant: { kind: 'packet', packet } })));
    const base = { to: A, channel: 0, id: 7, rxRssi: -90, rxSnr: 5 };
    await deliver({ ...base, from: B, decoded: { portnum: PortNum.TEXT_MESSAGE_APP, payload: Uint8Array.of(0x41) } });
    await deliver({ ...base, from: 0x5555, decoded: { portnum: PortNum.PRIVATE_APP, payload: Uint8Array.of(1) } });
    await deliver({ ...base, from: B, channel: 1, decoded: { portnum: PortNum.PRIVATE_APP, payload: Uint8Array.of(2) } });
    await deliver({ ...base, from: B, encrypted: Uint8Array.of(9, 9) });
    await deliver({ ...base, from: B, decoded: { portnum: PortNum.PRIVATE_APP, payload: Uint8Array.of(3) } });
    await r.devA.write(encodeStreamFrame(fromHex('0a05ff'))); // malformed protobuf
    await r.devA.write(new TextEncoder().encode('DEBUG | radio idle\n'));
    await settle();
    expect(frames).toEqual(['03']);
    expect(drops).toEqual(['ERR_MODEM_NOT_OURS', 'ERR_MODEM_NOT_OURS', 'ERR_MODEM_NOT_OURS', 'ERR_MODEM_NOT_OURS', 'ERR_PROTOBUF_DECODE', 'ERR_FRAME_NOISE']);
  });

  it('rejects oversize frames locally and maps the node’s TOO_LARGE to ERR_MODEM_MTU', async () => {
    const r = rig();
    const a = await MeshtasticModem.start(r.hostA, { destination: B, clock: r.clock, random32: r.random32, maxFrameLen: 233 });
    await expect(a.send(new Uint8Array(234))).rejects.toMatchObject({ code: 'ERR_MODEM_MTU' });
    // 233 bytes pass our check, but with the bitfield the node cannot fit them into one LoRa packet.
    await expect(a.send(new Uint8Array(233))).rejects.toMatchObject({ code: 'ERR_MODEM_MTU', detail: { routingError: 'TOO_LARGE' } });
    await expect(a.send(new Uint8Array(231))).resolves.toBeDefined();
  });

  it('times out a device that never completes the handshake; closes when the node reboots or goes away', async () => {
    const clock = new FakeClock();
    const [silent] = createMemoryLinkPair('silent');
    const p = MeshtasticModem.start(silent, { destination: B, clock, configTimeoutMs: 1_000 }).catch((e: unknown) => e);
    await settle();
    clock.advance(1_000);
    const err = await p;
    expect(err).toMatchObject({ code: 'ERR_MODEM_TIMEOUT' });
    expect((err as Error).message).toMatch(/no config_complete_id from silent.a within 1000 ms after want_config_id/);

    const r = rig();
    const a = await MeshtasticModem.start(r.hostA, { destination: B, clock: r.clock, random32: r.random32 });
    const closed = new Promise<Error | undefined>((res) => a.onClose(res));
    r.emuA.reboot();
    expect(await closed).toMatchObject({ code: 'ERR_MODEM_DEVICE' });
    const b = await MeshtasticModem.start(r.hostB, { destination: A, clock: r.clock, random32: r.random32 });
    const gone = new Promise<Error | undefined>((res) => b.onClose(res));
    await r.devB.close();
    expect(await gone).toMatchObject({ code: 'ERR_LINK_IO' });
    await expect(b.send(Uint8Array.of(1))).rejects.toMatchObject({ code: 'ERR_LINK_CLOSED' });
  });

  it('works as a createModem hook, sends heartbeats, and says goodbye on close', async () => {
    const r = rig();
    const create = meshtasticModemFactory({ destination: 'broadcast', clock: r.clock, random32: r.random32, heartbeatIntervalMs: 60_000 });
    const a = create(r.hostA);
    const b = await MeshtasticModem.start(r.hostB, { destination: 'broadcast', clock: r.clock, random32: r.random32 });
    const got: string[] = [];
    b.onFrame((f) => got.push(toHex(f)));
    await a.send(Uint8Array.of(0xab)); // waits for the handshake
    r.clock.advance(60_000);
    await settle();
    expect(got).toEqual(['ab']);
    expect(r.emuA.counters.heartbeats).toBe(1);
    const written = new ByteCollector(r.devA);
    await a.close();
    await settle();
    expect(toHex(written.bytes())).toBe('94c300022001');
  });
});
