/**
 * A minimal Protocol Buffers wire codec: just what the Meshtastic serial API needs
 * (https://protobuf.dev/programming-guides/encoding/): varint (wire type 0), fixed64 (1, skipped
 * only), length-delimited (2), fixed32 / float (5). Groups (3, 4) are rejected. Pure.
 *
 * Decoding follows proto3 rules: fields may come in any order, unknown fields are skipped,
 * for a repeated scalar field the last value wins. Every length is checked against the
 * bytes present; a varint longer than 10 bytes, a field number 0 or a truncated field is an
 * ERR_PROTOBUF_DECODE WireError (the caller drops the message and counts it).
 */
import { WireError } from '../../errors.ts';

export const WireType = { VARINT: 0, I64: 1, LEN: 2, I32: 5 } as const;

function bad(message: string, detail: Record<string, unknown> = {}): WireError {
  return new WireError('ERR_PROTOBUF_DECODE', 'modem', message, detail);
}

/** Builds one message; fields are written in call order. */
export class ProtoWriter {
  private readonly out: number[] = [];

  private tag(field: number, wireType: number): void {
    if (!Number.isInteger(field) || field < 1 || field > 0x1fff_ffff) throw new RangeError(`bad protobuf field number ${String(field)}`);
    this.rawVarint(field * 8 + wireType);
  }

  /** Unsigned varint of a non-negative integer ≤ 2^53. */
  private rawVarint(n: number): void {
    let v = n;
    while (v >= 0x80) {
      this.out.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.out.push(v);
  }

  /** uint32 / uint64 / enum / bool field (non-negative). */
  uint(field: number, value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > Number.MAX_SAFE_INTEGER) throw new RangeError(`varint field ${field} needs a non-negative integer, got ${String(value)}`);
    this.tag(field, WireType.VARINT);
    this.rawVarint(value);
    return this;
  }

  /** int32 field: negative values are sign-extended to 64 bits (10 bytes), as protobuf requires. */
  int32(field: number, value: number): this {
    if (!Number.isInteger(value) || value < -0x8000_0000 || value > 0x7fff_ffff) throw new RangeError(`int32 field ${field} out of range: ${String(value)}`);
    if (value >= 0) return this.uint(field, value);
    this.tag(field, WireType.VARINT);
    // Two's complement over 64 bits: low 32 bits of the value, high 32 bits all ones.
    let lo = value >>> 0;
    for (let i = 0; i < 4; i++) { this.out.push((lo & 0x7f) | 0x80); lo >>>= 7; }
    // Byte 5 carries bits 28..34: 4 bits of lo, 3 bits of hi (all ones).
    this.out.push((lo & 0x0f) | 0x70 | 0x80);
    for (let i = 0; i < 4; i++) this.out.push(0xff);
    this.out.push(0x01);
    return this;
  }

  bool(field: number, value: boolean): this { return this.uint(field, value ? 1 : 0); }

  fixed32(field: number, value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) throw new RangeError(`fixed32 field ${field} out of range: ${String(value)}`);
    this.tag(field, WireType.I32);
    this.out.push(value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24);
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, WireType.I32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.out.push(...b);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, WireType.LEN);
    this.rawVarint(value.length);
    for (const b of value) this.out.push(b);
    return this;
  }

  finish(): Uint8Array { return Uint8Array.from(this.out); }
}

/** Bytes of the varint encoding of n (non-negative). */
export function varintLen(n: number): number {
  let len = 1;
  let v = n;
  while (v >= 0x80) { v = Math.floor(v / 0x80); len++; }
  return len;
}

export type ProtoField =
  | { field: number; wireType: 0; lo: number; hi: number }
  | { field: number; wireType: 1; bytes: Uint8Array }
  | { field: number; wireType: 2; bytes: Uint8Array }
  | { field: number; wireType: 5; bytes: Uint8Array };

/** The fields of one message, in wire order. Throws ERR_PROTOBUF_DECODE. */
export function readFields(buf: Uint8Array, what = 'message'): ProtoField[] {
  const fields: ProtoField[] = [];
  let i = 0;
  const varint = (): { lo: number; hi: number } => {
    let lo = 0;
    let hi = 0;
    for (let n = 0; n < 10; n++) {
      if (i >= buf.length) throw bad(`${what}: truncated varint at byte ${i}`, { at: i });
      const b = buf[i++]!;
      if (n < 4) lo |= (b & 0x7f) << (7 * n);
      else if (n === 4) { lo |= (b & 0x0f) << 28; hi |= (b & 0x70) >> 4; }
      else hi |= (b & 0x7f) << (7 * n - 32); // bytes 5..9 carry bits 35..63
      if ((b & 0x80) === 0) return { lo: lo >>> 0, hi: hi >>> 0 };
    }
    throw bad(`${what}: varint longer than 10 bytes at byte ${i}`, { at: i });
  };
  while (i < buf.length) {
    const start = i;
    const key = varint();
    const field = key.lo >>> 3;
    const wireType = key.lo & 7;
    if (field === 0 || key.hi !== 0) throw bad(`${what}: invalid field number at byte ${start}`, { at: start });
    switch (wireType) {
      case 0: { const v = varint(); fields.push({ field, wireType: 0, lo: v.lo, hi: v.hi }); break; }
      case 1:
      case 5: {
        const n = wireType === 1 ? 8 : 4;
        if (i + n > buf.length) throw bad(`${what}: field ${field} truncated (${n}-byte fixed value)`, { field });
        fields.push({ field, wireType, bytes: buf.subarray(i, i + n) });
        i += n;
        break;
      }
      case 2: {
        const len = varint();
        if (len.hi !== 0 || i + len.lo > buf.length) throw bad(`${what}: field ${field} claims ${len.lo} bytes, ${buf.length - i} left`, { field });
        fields.push({ field, wireType: 2, bytes: buf.subarray(i, i + len.lo) });
        i += len.lo;
        break;
      }
      default:
        throw bad(`${what}: field ${field} has unsupported wire type ${wireType} (groups are not used by this protocol)`, { field, wireType });
    }
  }
  return fields;
}

/** Typed accessors over readFields, checking each field's wire type. */
export class ProtoMessage {
  private readonly byField = new Map<number, ProtoField>();
  readonly fields: readonly ProtoField[];

  constructor(buf: Uint8Array, private readonly what = 'message') {
    this.fields = readFields(buf, what);
    for (const f of this.fields) this.byField.set(f.field, f); // last one wins
  }

  has(field: number): boolean { return this.byField.has(field); }

  private get(field: number, wireType: number, type: string): ProtoField | undefined {
    const f = this.byField.get(field);
    if (f === undefined) return undefined;
    if (f.wireType !== wireType) throw bad(`${this.what}: field ${field} should be ${type} (wire type ${wireType}), got wire type ${f.wireType}`, { field });
    return f;
  }

  uint32(field: number): number | undefined {
    const f = this.get(field, 0, 'a varint');
    return f && f.wireType === 0 ? f.lo : undefined;
  }

  int32(field: number): number | undefined {
    const f = this.get(field, 0, 'a varint');
    return f && f.wireType === 0 ? f.lo | 0 : undefined;
  }

  bool(field: number): boolean | undefined {
    const v = this.uint32(field);
    return v === undefined ? undefined : v !== 0;
  }

  fixed32(field: number): number | undefined {
    const f = this.get(field, 5, 'a fixed32');
    if (!f || f.wireType !== 5) return undefined;
    const b = f.bytes;
    return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  }

  float(field: number): number | undefined {
    const f = this.get(field, 5, 'a float');
    if (!f || f.wireType !== 5) return undefined;
    return new DataView(f.bytes.buffer, f.bytes.byteOffset, 4).getFloat32(0, true);
  }

  bytes(field: number): Uint8Array | undefined {
    const f = this.get(field, 2, 'length-delimited');
    return f && f.wireType === 2 ? f.bytes.slice() : undefined;
  }
}
