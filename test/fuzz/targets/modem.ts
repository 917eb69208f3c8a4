/**
 * Serial-line decoders: SLIP (+ CRC), KISS + AX.25, RNode framing and payloads, Meshtastic stream
 * framing and protobufs, the native firmware protocol.
 *
 * Stream decoders are fed the input twice, whole and cut into chunks at input-derived points:
 * the frames must be the same (a serial port splits reads anywhere), each within the decoder's
 * bound, and every frame must survive encode → decode unchanged.
 */
import { WireError } from '../../../src/errors.ts';
import { SlipDecoder, encodeSlipFrame } from '../../../src/modem/transparent/slip.ts';
import { TransparentDeframer, encodeTransparentFrame } from '../../../src/modem/transparent/transparent-modem.ts';
import { KissDecoder, encodeKissFrame, encodeKissDataFrame, encodeKissParameter, KissCommand, KISS_RETURN } from '../../../src/modem/kiss/kiss.ts';
import { decodeAx25Frame, encodeAx25UiFrame, AX25_DEFAULT_N1 } from '../../../src/modem/kiss/ax25.ts';
import {
  RNodeDecoder, RNodeAirReassembler, RNodeCmd, RNODE_HW_MTU, encodeRNodeFrame, decodeChannelStats, encodeChannelStats,
  decodeAirtimeLock, readU32be, rnodeAirPackets,
} from '../../../src/modem/rnode/rnode-protocol.ts';
import {
  StreamDecoder, MAX_STREAM_PACKET, encodeStreamFrame, decodeFromRadio, encodeFromRadio, decodeToRadio, encodeToRadio,
  decodeMeshPacket, encodeMeshPacket, decodeData, encodeData, decodeQueueStatus, encodeQueueStatus, decodeRoutingError,
  decodeAirHeader, encodeAirHeader, type ToRadio,
} from '../../../src/modem/meshtastic/meshtastic-protocol.ts';
import { NativeDeframer, decodeNativeMessage, encodeNativeMessage, encodeNativeFrame } from '../../../src/modem/native/codec.ts';
import { MAX_MESSAGE_LEN } from '../../../src/modem/native/protocol-generated.ts';
import { equalBytes, toHex } from '../../../src/util/bytes.ts';
import { check, hash32, Rng, type FuzzTarget } from '../engine.ts';
import { hex, readJson, show } from '../util.ts';

const FRAME_CODES = new Set(['ERR_FRAME_NOISE', 'ERR_FRAME_TOO_LONG', 'ERR_FRAME_BAD_ESCAPE', 'ERR_FRAME_TOO_SHORT', 'ERR_FRAME_BAD_FCS', 'ERR_FRAME_EMPTY']);

/** The input cut at input-derived points (reproducible from the input alone). */
export function chunks(input: Uint8Array): Uint8Array[] {
  const rng = new Rng(hash32(toHex(input.subarray(0, 64))) ^ input.length);
  const out: Uint8Array[] = [];
  let o = 0;
  while (o < input.length) {
    const n = rng.bool(0.3) ? 1 : 1 + rng.int(16);
    out.push(input.subarray(o, o + n));
    o += n;
  }
  return out;
}

function checkErrors(errors: readonly unknown[], allowed: ReadonlySet<string>, what: string): void {
  for (const e of errors) check(e instanceof WireError && allowed.has(e.code), () => `${what}: error ${show(e)} is not one of ${[...allowed].join(', ')}`);
}

function sameFrames(a: readonly Uint8Array[], b: readonly Uint8Array[], what: string): void {
  check(a.length === b.length && a.every((f, i) => equalBytes(f, b[i]!)), () => `${what}: ${a.length} frames whole, ${b.length} when chunked`);
}

const END_TOKENS = [Uint8Array.of(0xc0), Uint8Array.of(0xdb), Uint8Array.of(0xdb, 0xdc), Uint8Array.of(0xdb, 0xdd), Uint8Array.of(0xc0, 0xc0)];

// ---------------------------------------------------------------------------------------------

interface SlipVectors { encode: { wire: string }[]; decode: { wire: string }[]; transparent: { wire: string }[] }

const SLIP_MAX = 64;

export const slip: FuzzTarget = {
  name: 'slip',
  description: 'SlipDecoder (RFC 1055): frames non-empty and ≤ maxFrameLen, same frames whole and chunked, only ERR_FRAME_* errors, encodeSlipFrame round trip',
  maxLen: 512,
  dictionary: END_TOKENS,
  seeds() {
    const v = readJson<SlipVectors>('test/vectors/slip.json');
    return [...v.encode, ...v.decode, ...v.transparent].map((x) => hex(x.wire));
  },
  run(input) {
    const whole = new SlipDecoder({ maxFrameLen: SLIP_MAX }).push(input);
    const d = new SlipDecoder({ maxFrameLen: SLIP_MAX });
    const parts = chunks(input).map((c) => d.push(c));
    const frames = parts.flatMap((p) => p.frames);
    sameFrames(whole.frames, frames, 'SLIP');
    check(whole.errors.map((e) => e.code).join() === parts.flatMap((p) => p.errors).map((e) => e.code).join(), 'SLIP: different errors whole and chunked');
    checkErrors(whole.errors, FRAME_CODES, 'SLIP');
    check(d.pendingBytes <= input.length, 'SLIP: pendingBytes exceeds the input');
    for (const f of whole.frames) {
      check(f.length >= 1 && f.length <= SLIP_MAX, `SLIP frame of ${f.length} bytes outside 1..${SLIP_MAX}`);
      const again = new SlipDecoder({ maxFrameLen: SLIP_MAX }).push(encodeSlipFrame(f));
      check(again.frames.length === 1 && equalBytes(again.frames[0]!, f) && again.errors.length === 0, 'SLIP: encode → decode changed a frame');
    }
    return `ok:${Math.min(whole.frames.length, 3)}:${[...new Set(whole.errors.map((e) => e.code))].sort().join('+')}`;
  },
};

const TRANSPARENT_MAX = 64;

export const transparent: FuzzTarget = {
  name: 'slip-crc',
  description: 'TransparentDeframer (SLIP + CRC-16/X-25): payloads ≤ maxFrameLen with a good FCS, same whole and chunked, encodeTransparentFrame round trip',
  maxLen: 512,
  dictionary: END_TOKENS,
  seeds() {
    const v = readJson<SlipVectors>('test/vectors/slip.json');
    const made = [Uint8Array.of(1), Uint8Array.of(0xc0, 0xdb), new Uint8Array(TRANSPARENT_MAX).fill(0x41)].map(encodeTransparentFrame);
    return [...v.transparent.map((x) => hex(x.wire)), ...made];
  },
  run(input) {
    const whole = new TransparentDeframer({ maxFrameLen: TRANSPARENT_MAX }).push(input);
    const d = new TransparentDeframer({ maxFrameLen: TRANSPARENT_MAX });
    const frames = chunks(input).flatMap((c) => d.push(c).frames);
    sameFrames(whole.frames, frames, 'SLIP+CRC');
    checkErrors(whole.errors, FRAME_CODES, 'SLIP+CRC');
    for (const f of whole.frames) {
      check(f.length >= 1 && f.length <= TRANSPARENT_MAX, `SLIP+CRC payload of ${f.length} bytes outside 1..${TRANSPARENT_MAX}`);
      const again = new TransparentDeframer({ maxFrameLen: TRANSPARENT_MAX }).push(encodeTransparentFrame(f));
      check(again.frames.length === 1 && equalBytes(again.frames[0]!, f), 'SLIP+CRC: encode → decode changed a payload');
    }
    return `ok:${Math.min(whole.frames.length, 3)}:${[...new Set(whole.errors.map((e) => e.code))].sort().join('+')}`;
  },
};

// ---------------------------------------------------------------------------------------------

interface KissVectors {
  kiss: { wire: string }[];
  ax25: { frame: string; kissWire?: string }[];
  direwolf: { kissWire: string }[];
}

const KISS_MAX = 300;
const AX25_CODES = new Set(['ERR_AX25_ADDRESS', 'ERR_AX25_NOT_UI', 'ERR_FRAME_TOO_SHORT', 'ERR_FRAME_TOO_LONG', 'ERR_FRAME_EMPTY']);
const CALLSIGN = /^[A-Z0-9]{1,6}$/;

export const kiss: FuzzTarget = {
  name: 'kiss-ax25',
  description: 'KissDecoder + decodeAx25Frame: frames ≤ maxFrameLen, same whole and chunked, KISS encode round trip; AX.25 UI only, coded results, valid callsigns, info ≤ N1, encode → decode equal',
  maxLen: 700,
  dictionary: [...END_TOKENS, Uint8Array.of(0x03, 0xf0), Uint8Array.of(0x13, 0xf0), Uint8Array.of(0x61), Uint8Array.of(0xe0), Uint8Array.of(0x40, 0x40)],
  seeds() {
    const v = readJson<KissVectors>('test/vectors/kiss.json');
    const ui = encodeAx25UiFrame({ destination: { callsign: 'TRICKL', ssid: 0 }, source: { callsign: 'N0CALL', ssid: 1 }, info: Uint8Array.of(0x40, 1, 0, 1) });
    const digi = new Uint8Array([...ui.subarray(0, 13), ui[13]! & 0xfe, ...ui.subarray(7, 13), 0xe1, ...ui.subarray(14)]);
    return [
      ...v.kiss.map((x) => hex(x.wire)), ...v.ax25.flatMap((x) => (x.kissWire === undefined ? [] : [hex(x.kissWire)])), ...v.direwolf.map((x) => hex(x.kissWire)),
      encodeKissDataFrame(0, ui), encodeKissDataFrame(3, digi), encodeKissParameter(0, KissCommand.TxDelay, 30),
      encodeKissFrame({ port: 0, command: KISS_RETURN, data: new Uint8Array(0) }),
    ];
  },
  run(input) {
    const whole = new KissDecoder({ maxFrameLen: KISS_MAX }).push(input);
    const d = new KissDecoder({ maxFrameLen: KISS_MAX });
    const frames = chunks(input).flatMap((c) => d.push(c).frames);
    sameFrames(whole.frames.map((f) => f.data), frames.map((f) => f.data), 'KISS');
    check(whole.frames.every((f, i) => f.port === frames[i]!.port && f.command === frames[i]!.command), 'KISS: type bytes differ whole and chunked');
    checkErrors(whole.errors, FRAME_CODES, 'KISS');
    const outcomes: string[] = [];
    for (const f of whole.frames) {
      check(f.data.length <= KISS_MAX, `KISS frame of ${f.data.length} bytes over ${KISS_MAX}`);
      check((f.command === KISS_RETURN) || (f.port >= 0 && f.port <= 15 && f.command >= 0 && f.command <= 15), `KISS type ${f.port}/${f.command} out of range`);
      const again = new KissDecoder({ maxFrameLen: KISS_MAX }).push(encodeKissFrame(f)).frames;
      check(again.length === 1 && equalBytes(again[0]!.data, f.data) && again[0]!.command === f.command && (f.command === KISS_RETURN || again[0]!.port === f.port),
        'KISS: encode → decode changed a frame');
      if (f.command !== KissCommand.DataFrame) continue;
      const r = decodeAx25Frame(f.data, { maxInfoLen: AX25_DEFAULT_N1 });
      if (!r.ok) {
        check(r.error instanceof WireError && AX25_CODES.has(r.error.code), () => `AX.25: error ${show(r.error)} not in the contract`);
        outcomes.push(r.error.code);
        continue;
      }
      const fr = r.frame;
      check(fr.info.length >= 1 && fr.info.length <= AX25_DEFAULT_N1, `AX.25 info of ${fr.info.length} bytes`);
      check(fr.digipeaters.length <= 8, 'AX.25: more than 8 digipeaters');
      for (const a of [fr.destination, fr.source, ...fr.digipeaters]) {
        check(CALLSIGN.test(a.callsign) && a.ssid >= 0 && a.ssid <= 15, () => `AX.25 address ${show(a)} invalid`);
      }
      if (fr.digipeaters.length === 0) {
        const re = decodeAx25Frame(encodeAx25UiFrame({ destination: fr.destination, source: fr.source, info: fr.info, pid: fr.pid }), { maxInfoLen: AX25_DEFAULT_N1 });
        check(re.ok && re.frame.pid === fr.pid && equalBytes(re.frame.info, fr.info) && re.frame.source.callsign === fr.source.callsign
          && re.frame.destination.ssid === fr.destination.ssid && re.frame.command, 'AX.25: encode → decode changed a UI frame');
      }
      outcomes.push(`ui${fr.digipeaters.length > 0 ? '+digi' : ''}`);
    }
    return `ok:${[...new Set(outcomes)].sort().join('+')}:${[...new Set(whole.errors.map((e) => e.code))].sort().join('+')}`;
  },
};

// ---------------------------------------------------------------------------------------------

interface RNodeVectors { frames: { wire: string }[] }

export const rnode: FuzzTarget = {
  name: 'rnode',
  description: 'RNodeDecoder (KISS framing, whole-byte commands) + payload decoders (u32, airtime lock, CHTM stats) + on-air split reassembly: bounds, chunking, byte-exact round trips',
  maxLen: 1200,
  dictionary: [...END_TOKENS, Uint8Array.of(0x25), Uint8Array.of(0x23), Uint8Array.of(0x24), Uint8Array.of(0x90), Uint8Array.of(0x01)],
  seeds() {
    const v = readJson<RNodeVectors>('test/vectors/rnode-v1.json');
    const stats = encodeChannelStats({ airtimeShortPct: 1.5, airtimeLongPct: 0.25, channelLoadShortPct: 12.34, channelLoadLongPct: 3, currentRssiDbm: -110, noiseFloorDbm: -120, interferenceDbm: -90 });
    const big = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
    return [
      ...v.frames.map((x) => hex(x.wire)),
      encodeRNodeFrame(RNodeCmd.STAT_CHTM, stats), encodeRNodeFrame(RNodeCmd.DATA, big),
      Uint8Array.from(rnodeAirPackets(big, 5).flatMap((p) => [...encodeRNodeFrame(RNodeCmd.DATA, p)])),
    ];
  },
  run(input) {
    const whole = new RNodeDecoder().push(input);
    const d = new RNodeDecoder();
    const frames = chunks(input).flatMap((c) => d.push(c).frames);
    sameFrames(whole.frames.map((f) => f.data), frames.map((f) => f.data), 'RNode');
    check(whole.frames.every((f, i) => f.cmd === frames[i]!.cmd), 'RNode: commands differ whole and chunked');
    checkErrors(whole.errors, FRAME_CODES, 'RNode');
    const air = new RNodeAirReassembler();
    const kinds: string[] = [];
    for (const f of whole.frames) {
      check(f.cmd >= 0 && f.cmd <= 0xff && f.data.length <= RNODE_HW_MTU, `RNode frame cmd ${f.cmd} / ${f.data.length} bytes out of range`);
      const again = new RNodeDecoder().push(encodeRNodeFrame(f.cmd, f.data)).frames;
      check(again.length === 1 && again[0]!.cmd === f.cmd && equalBytes(again[0]!.data, f.data), 'RNode: encode → decode changed a frame');
      if (f.cmd === RNodeCmd.STAT_CHTM) {
        const s = decodeChannelStats(f.data);
        if (s !== undefined) {
          check(equalBytes(encodeChannelStats(s), f.data), () => `RNode CHTM ${toHex(f.data)} does not re-encode to itself (${toHex(encodeChannelStats(s))})`);
          kinds.push('chtm');
        }
      }
      if (f.cmd === RNodeCmd.ST_ALOCK || f.cmd === RNodeCmd.LT_ALOCK) {
        const p = decodeAirtimeLock(f.data);
        check(p === undefined || (p >= 0 && p <= 655.35), `airtime lock ${p}`);
      }
      if (f.cmd === RNodeCmd.FREQUENCY || f.cmd === RNodeCmd.BANDWIDTH) {
        const n = readU32be(f.data);
        check(n === undefined || (Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff), `u32 ${n}`);
      }
      if (f.cmd === RNodeCmd.DATA && f.data.length <= 255) {
        // The emulator's receive side: one LoRa packet (≤ 255 bytes, the radio FIFO) at a time.
        const whole2 = air.push(f.data);
        if (whole2 !== undefined) {
          check(whole2.length <= 2 * 254, `reassembled packet of ${whole2.length} bytes from LoRa packets of at most 255`);
          kinds.push('air');
        }
      }
    }
    return `ok:${[...new Set(kinds)].sort().join('+')}:${Math.min(whole.frames.length, 3)}:${[...new Set(whole.errors.map((e) => e.code))].sort().join('+')}`;
  },
};

// ---------------------------------------------------------------------------------------------

interface MeshVectors { toRadio: { wire: string }[]; fromRadio: { wire: string }[] }

const PROTOBUF = (e: unknown): boolean => e instanceof WireError && e.code === 'ERR_PROTOBUF_DECODE';

/** encode ∘ decode is idempotent after one step: y = enc(dec(x)) ⇒ enc(dec(y)) = y. */
function idempotent<T>(x: Uint8Array, dec: (b: Uint8Array) => T, enc: (v: T) => Uint8Array, what: string): string {
  let v: T;
  try { v = dec(x); } catch (e) {
    if (PROTOBUF(e)) return 'ERR_PROTOBUF_DECODE';
    throw e;
  }
  const y = enc(v);
  const y2 = enc(dec(y));
  check(equalBytes(y, y2), () => `${what}: encode(decode(y)) ≠ y for y = ${toHex(y)} (got ${toHex(y2)})`);
  return 'ok';
}

export const meshtasticProtobuf: FuzzTarget = {
  name: 'meshtastic-protobuf',
  description: 'FromRadio / ToRadio / MeshPacket / Data / QueueStatus / Routing / air header decoders: only ERR_PROTOBUF_DECODE, encode∘decode idempotent',
  maxLen: 512,
  dictionary: [Uint8Array.of(0x12), Uint8Array.of(0x22), Uint8Array.of(0x0a), Uint8Array.of(0x0d), Uint8Array.of(0x08), Uint8Array.of(0x45),
    Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), Uint8Array.of(0x1b), Uint8Array.of(0x1c), Uint8Array.of(0x60)],
  seeds() {
    const v = readJson<MeshVectors>('test/vectors/meshtastic-v1.json');
    const strip = (w: string): Uint8Array => hex(w).subarray(4);
    const pkt = encodeMeshPacket({ from: 0x1234, to: 0xffffffff, channel: 1, id: 77, decoded: encodeDataObj(), rxSnr: -7.25, rxRssi: -120, hopLimit: 3, hopStart: 3, wantAck: true, priority: 70, rxTime: 1700000000 });
    return [
      ...v.toRadio.map((x) => strip(x.wire)), ...v.fromRadio.map((x) => strip(x.wire)), pkt,
      encodeFromRadio({ id: 5, variant: { kind: 'queueStatus', queueStatus: { res: -1, free: 3, maxlen: 16, meshPacketId: 9 } } }),
      encodeToRadio({ wantConfigId: 42 }),
    ];
  },
  run(input) {
    const outcomes = [
      idempotent(input, decodeFromRadio, encodeFromRadio, 'FromRadio'),
      idempotent(input, decodeToRadio, (t: ToRadio | undefined) => (t === undefined ? new Uint8Array(0) : encodeToRadio(t)), 'ToRadio'),
      idempotent(input, decodeMeshPacket, encodeMeshPacket, 'MeshPacket'),
      idempotent(input, decodeData, encodeData, 'Data'),
      idempotent(input, decodeQueueStatus, encodeQueueStatus, 'QueueStatus'),
    ];
    try { decodeRoutingError(input); } catch (e) { if (!PROTOBUF(e)) throw e; }
    const h = decodeAirHeader(input);
    if (h !== undefined) check(equalBytes(encodeAirHeader(h), input.subarray(0, 16)), 'air header does not re-encode to its 16 bytes');
    return outcomes.join(',');
  },
};

function encodeDataObj(): { portnum: number; payload: Uint8Array; bitfield: number; requestId: number } {
  return { portnum: 256, payload: Uint8Array.of(0x40, 1, 2, 3), bitfield: 0, requestId: 9 };
}

export const meshtasticStream: FuzzTarget = {
  name: 'meshtastic-stream',
  description: 'Meshtastic StreamDecoder (0x94 0xC3 len16): packets 1..512 bytes, same whole and chunked, only ERR_FRAME_* errors, encodeStreamFrame round trip',
  maxLen: 1500,
  dictionary: [Uint8Array.of(0x94, 0xc3), Uint8Array.of(0x94), Uint8Array.of(0x02, 0x00), Uint8Array.of(0x02, 0x01), Uint8Array.of(0x00, 0x00)],
  seeds() {
    const v = readJson<MeshVectors>('test/vectors/meshtastic-v1.json');
    return [...v.toRadio.map((x) => hex(x.wire)), ...v.fromRadio.map((x) => hex(x.wire)), encodeStreamFrame(new Uint8Array(MAX_STREAM_PACKET).fill(7))];
  },
  run(input) {
    const whole = new StreamDecoder().push(input);
    const d = new StreamDecoder();
    const packets = chunks(input).flatMap((c) => d.push(c).packets);
    sameFrames(whole.packets, packets, 'Meshtastic stream');
    checkErrors(whole.errors, FRAME_CODES, 'Meshtastic stream');
    check(whole.text.length <= input.length, 'Meshtastic: more debug text than input');
    for (const p of whole.packets) {
      check(p.length >= 1 && p.length <= MAX_STREAM_PACKET, `Meshtastic packet of ${p.length} bytes`);
      const again = new StreamDecoder().push(encodeStreamFrame(p)).packets;
      check(again.length === 1 && equalBytes(again[0]!, p), 'Meshtastic: encode → decode changed a packet');
      try { decodeFromRadio(p); } catch (e) { if (!PROTOBUF(e)) throw e; }
    }
    return `ok:${Math.min(whole.packets.length, 3)}:${[...new Set(whole.errors.map((e) => e.code))].sort().join('+')}`;
  },
};

// ---------------------------------------------------------------------------------------------

interface NativeVectors { vectors: { messageHex?: string; frameHex?: string; wireHex?: string }[] }
const NATIVE_CODES = new Set([...FRAME_CODES]);

export const native: FuzzTarget = {
  name: 'native',
  description: 'Native firmware protocol: NativeDeframer (SLIP + CRC + message) chunk-invariant; decodeNativeMessage only coded WireErrors, encodeNativeMessage(decode(x)) == x byte for byte',
  maxLen: 700,
  dictionary: [...END_TOKENS, Uint8Array.of(0xef, 0xbb, 0xbf)],
  seeds() {
    const m = readJson<NativeVectors>('firmware-protocol/vectors/messages.json').vectors;
    const f = readJson<NativeVectors>('firmware-protocol/vectors/framing.json').vectors;
    return [...m.map((x) => hex(x.frameHex!)), ...m.map((x) => hex(x.messageHex!)), ...f.map((x) => hex(x.wireHex!))];
  },
  run(input) {
    const whole = new NativeDeframer().push(input);
    const d = new NativeDeframer();
    const msgs = chunks(input).flatMap((c) => d.push(c).messages);
    check(msgs.length === whole.messages.length && msgs.every((m, i) => equalBytes(encodeNativeMessage(m), encodeNativeMessage(whole.messages[i]!))), 'native: different messages whole and chunked');
    checkErrors(whole.errors, NATIVE_CODES, 'native');
    for (const m of whole.messages) {
      const b = encodeNativeMessage(m);
      check(b.length <= MAX_MESSAGE_LEN, `native message of ${b.length} bytes`);
      const again = new NativeDeframer().push(encodeNativeFrame(m)).messages;
      check(again.length === 1 && equalBytes(encodeNativeMessage(again[0]!), b), 'native: frame round trip changed a message');
    }
    // The same bytes as one bare message (type ‖ payload), as the decoder's own contract.
    let one = 'n/a';
    try {
      const m = decodeNativeMessage(input);
      const b = encodeNativeMessage(m);
      check(equalBytes(b, input), () => `native: decodeNativeMessage accepted ${toHex(input)} but it re-encodes as ${toHex(b)} (${m.name})`);
      one = `ok:${m.name}`;
    } catch (e) {
      if (!(e instanceof WireError && NATIVE_CODES.has(e.code))) throw e;
      one = `${e.code}:${String(e.detail?.['reason'] ?? '')}`;
    }
    return `${one}:${Math.min(whole.messages.length, 2)}`;
  },
};

export const MODEM_TARGETS: readonly FuzzTarget[] = [slip, transparent, kiss, rnode, meshtasticStream, meshtasticProtobuf, native];
