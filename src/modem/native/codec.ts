/**
 * Codec of Trickle's native firmware protocol (firmware-protocol/spec/01-framing.md,
 * 02-messages.md). Pure: bytes in, messages and coded errors out.
 *
 * One message on the serial line:
 *
 *   END ‖ escape( type ‖ payload ‖ FCS ) ‖ END        SLIP, RFC 1055 (src/modem/transparent/slip.ts)
 *   FCS = CRC-16/X-25(type ‖ payload), LSB first      RFC 1662 §C.2 (src/util/crc.ts)
 *
 * which is exactly the transparent dialect's frame with `type ‖ payload` as its payload, so
 * both directions reuse `encodeTransparentFrame` / `TransparentDeframer`. The payload layouts
 * come from the generated tables (protocol-generated.ts ← firmware-protocol/protocol.json);
 * all integers are little-endian.
 */
import { TrickleError, WireError, type ErrorCode } from '../../errors.ts';
import { utf8 } from '../../util/bytes.ts';
import { TransparentDeframer, encodeTransparentFrame, transparentFramingOverhead } from '../transparent/transparent-modem.ts';
import {
  MAX_MESSAGE_LEN, MESSAGE_LAYOUTS, MESSAGE_NAMES,
  type FieldLayout, type MessageName, type NativeMessage, type NativeMessageFields,
} from './protocol-generated.ts';

/**
 * Code for a well-framed message (good FCS) that does not fit the protocol: unknown type
 * byte, or a payload that does not match the type's layout.
 * TODO(lead): errors.ts has no modem-protocol code yet; ERR_MODEM_PROTOCOL is proposed.
 * Until then such messages are counted as noise, which is what they are to us.
 */
export const ERR_NATIVE_PROTOCOL: ErrorCode = 'ERR_FRAME_NOISE';

/** Build a message object with its name (typed by the name). */
export function nativeMessage<K extends MessageName>(name: K, fields: NativeMessageFields[K]): NativeMessage {
  return { name, ...fields } as unknown as NativeMessage;
}

const INT_RANGES: Record<string, [number, number]> = {
  u8: [0, 0xff], u16: [0, 0xffff], u32: [0, 0xffff_ffff],
  i8: [-0x80, 0x7f], i16: [-0x8000, 0x7fff], i32: [-0x8000_0000, 0x7fff_ffff],
};

/** type ‖ payload of `msg`. Throws TypeError/RangeError for a value that does not fit its field (a caller bug). */
export function encodeNativeMessage(msg: NativeMessage): Uint8Array {
  const layout = MESSAGE_LAYOUTS[msg.name];
  const values = msg as unknown as Record<string, unknown>;
  let tail: Uint8Array = new Uint8Array(0);
  const last = layout.fields[layout.fields.length - 1];
  if (layout.variable && last) {
    const v = values[last.name];
    if (last.type === 'utf8') {
      if (typeof v !== 'string') throw new TypeError(`${msg.name}.${last.name} must be a string`);
      tail = utf8.encode(v);
    } else {
      if (!(v instanceof Uint8Array)) throw new TypeError(`${msg.name}.${last.name} must be a Uint8Array`);
      tail = v;
    }
  }
  const total = 1 + layout.fixedLen + tail.length;
  if (total > MAX_MESSAGE_LEN) throw new RangeError(`${msg.name} of ${total} bytes exceeds MAX_MESSAGE_LEN ${MAX_MESSAGE_LEN}`);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out[0] = layout.type;
  let off = 1;
  for (const f of layout.fields) {
    if (f.type === 'bytes' || f.type === 'utf8') { out.set(tail, off); off += tail.length; continue; }
    const v = values[f.name];
    const [lo, hi] = INT_RANGES[f.type]!;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
      throw new RangeError(`${msg.name}.${f.name} must be an integer ${lo}..${hi} (${f.type}), got ${String(v)}`);
    }
    off += writeInt(view, off, f, v);
  }
  return out;
}

function writeInt(view: DataView, off: number, f: FieldLayout, v: number): number {
  switch (f.type) {
    case 'u8': view.setUint8(off, v); return 1;
    case 'i8': view.setInt8(off, v); return 1;
    case 'u16': view.setUint16(off, v, true); return 2;
    case 'i16': view.setInt16(off, v, true); return 2;
    case 'u32': view.setUint32(off, v, true); return 4;
    case 'i32': view.setInt32(off, v, true); return 4;
    default: return 0;
  }
}

function readInt(view: DataView, off: number, f: FieldLayout): number {
  switch (f.type) {
    case 'u8': return view.getUint8(off);
    case 'i8': return view.getInt8(off);
    case 'u16': return view.getUint16(off, true);
    case 'i16': return view.getInt16(off, true);
    case 'u32': return view.getUint32(off, true);
    case 'i32': return view.getInt32(off, true);
    default: return 0;
  }
}

/**
 * Decode type ‖ payload. Rejects (never truncates): unknown type, a payload shorter than the
 * layout, trailing bytes after a fixed layout, invalid UTF-8 in a text field, a message over
 * MAX_MESSAGE_LEN. Throws WireError (ERR_NATIVE_PROTOCOL, ERR_FRAME_TOO_SHORT for a truncated
 * payload, ERR_FRAME_TOO_LONG).
 */
export function decodeNativeMessage(bytes: Uint8Array): NativeMessage {
  if (bytes.length < 1) throw new WireError('ERR_FRAME_TOO_SHORT', 'modem', 'empty native message (no type byte)', { len: 0 });
  if (bytes.length > MAX_MESSAGE_LEN) throw new WireError('ERR_FRAME_TOO_LONG', 'modem', `native message of ${bytes.length} bytes exceeds MAX_MESSAGE_LEN ${MAX_MESSAGE_LEN}; dropped`, { len: bytes.length, maxFrameLen: MAX_MESSAGE_LEN });
  const type = bytes[0]!;
  const name = MESSAGE_NAMES[type];
  if (name === undefined) {
    throw new WireError(ERR_NATIVE_PROTOCOL, 'modem', `unknown native message type 0x${type.toString(16).padStart(2, '0')}; dropped`,
      { reason: 'unknown-type', type });
  }
  const layout = MESSAGE_LAYOUTS[name];
  const payloadLen = bytes.length - 1;
  if (payloadLen < layout.fixedLen) {
    throw new WireError('ERR_FRAME_TOO_SHORT', 'modem',
      `${name} payload of ${payloadLen} bytes is shorter than its ${layout.fixedLen}-byte layout; dropped`,
      { reason: 'short-payload', type, len: payloadLen, expected: layout.fixedLen });
  }
  if (!layout.variable && payloadLen !== layout.fixedLen) {
    throw new WireError(ERR_NATIVE_PROTOCOL, 'modem',
      `${name} payload of ${payloadLen} bytes, expected exactly ${layout.fixedLen}; dropped`,
      { reason: 'bad-length', type, len: payloadLen, expected: layout.fixedLen });
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + 1, payloadLen);
  const out: Record<string, unknown> = { name };
  let off = 0;
  for (const f of layout.fields) {
    if (f.type === 'bytes') { out[f.name] = bytes.slice(1 + off); continue; }
    if (f.type === 'utf8') {
      try { out[f.name] = utf8.decode(bytes.subarray(1 + off)); } catch {
        throw new WireError(ERR_NATIVE_PROTOCOL, 'modem', `${name}.${f.name} is not valid UTF-8; dropped`, { reason: 'bad-utf8', type });
      }
      continue;
    }
    out[f.name] = readInt(view, off, f);
    off += f.type.endsWith('8') ? 1 : f.type.endsWith('16') ? 2 : 4;
  }
  return out as unknown as NativeMessage;
}

/** The bytes written to the serial line for `msg`: SLIP(type ‖ payload ‖ FCS). */
export function encodeNativeFrame(msg: NativeMessage): Uint8Array {
  return encodeTransparentFrame(encodeNativeMessage(msg));
}

/** Serial bytes the framing adds around `typeAndPayload` (2 END, 2 FCS, escapes). */
export function nativeFramingOverhead(typeAndPayload: Uint8Array): number {
  return transparentFramingOverhead(typeAndPayload);
}

export interface NativeDecodeResult {
  messages: NativeMessage[];
  /** Dropped input in wire order: SLIP/FCS errors, then protocol errors. */
  errors: WireError[];
}

/** Incremental receive side (either direction): SLIP + FCS + message decoding. */
export class NativeDeframer {
  private readonly deframer = new TransparentDeframer({ maxFrameLen: MAX_MESSAGE_LEN });

  push(chunk: Uint8Array): NativeDecodeResult {
    const { frames, errors } = this.deframer.push(chunk);
    const messages: NativeMessage[] = [];
    for (const f of frames) {
      try { messages.push(decodeNativeMessage(f)); } catch (e) {
        if (e instanceof WireError) errors.push(e); else throw e;
      }
    }
    return { messages, errors };
  }
}

/** The host-side view of an ERROR answer, thrown by NativeModem commands. */
export class NativeCommandError extends TrickleError {
  constructor(
    message: string,
    readonly nativeCode: number,
    readonly nativeCodeName: string,
    readonly param: string | undefined,
    detail: Record<string, unknown>,
    code: ErrorCode = 'ERR_MODEM_CONFIG',
  ) {
    super(code, 'modem', message, detail);
    this.name = 'NativeCommandError';
  }
}
