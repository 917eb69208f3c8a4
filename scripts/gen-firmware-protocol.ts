/**
 * Generate the protocol constants of Trickle's native firmware protocol from its one
 * machine-readable source, firmware-protocol/protocol.json:
 *
 *   src/modem/native/protocol-generated.ts        (TypeScript: constants, layouts, message types)
 *   firmware-protocol/generated/trickle_protocol.h (C: #defines for firmware authors)
 *   firmware-protocol/spec/02-messages.md          (the message and code tables of the spec)
 *
 *   npx tsx scripts/gen-firmware-protocol.ts           write the three files
 *   npx tsx scripts/gen-firmware-protocol.ts --check   exit 1 if any of them is out of date
 *
 * All outputs are committed; test/unit/modem/native-protocol.test.ts fails when they differ
 * from what this script would write. The generator validates the JSON first (unique type
 * bytes, replies that exist, variable-length fields only last, …) and throws naming the
 * offending entry.
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export type FieldType = 'u8' | 'u16' | 'u32' | 'i8' | 'i16' | 'i32' | 'bytes' | 'utf8';

interface JsonField { name: string; type: FieldType; param?: string; enum?: string; bits?: string; doc?: string }
interface JsonStructRef { struct: string }
interface JsonMessage {
  name: string; type: number; direction: 'host-to-modem' | 'modem-to-host';
  replies?: string[]; doc?: string; fields: (JsonField | JsonStructRef)[];
}
interface JsonEnum { doc?: string; tsName?: string; values: { name: string; value: number; doc?: string }[] }
interface JsonBits { doc?: string; values: { name: string; bit: number; doc?: string }[] }
export interface ProtocolJson {
  protocol: string;
  version: number;
  byteOrder: 'little-endian';
  framing: { maxMessageLen: number; replyTimeoutMs: number };
  bandwidthsHz: number[];
  enums: Record<string, JsonEnum>;
  bits: Record<string, JsonBits>;
  structs: Record<string, JsonField[]>;
  messages: JsonMessage[];
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const PROTOCOL_JSON_PATH = join(ROOT, 'firmware-protocol', 'protocol.json');
export const TS_OUT_PATH = join(ROOT, 'src', 'modem', 'native', 'protocol-generated.ts');
export const C_OUT_PATH = join(ROOT, 'firmware-protocol', 'generated', 'trickle_protocol.h');
export const MD_OUT_PATH = join(ROOT, 'firmware-protocol', 'spec', '02-messages.md');

const FIXED_SIZES: Record<FieldType, number> = { u8: 1, u16: 2, u32: 4, i8: 1, i16: 2, i32: 4, bytes: 0, utf8: 0 };

function pascal(name: string): string {
  return name.replace(/(^|_)([a-z])/g, (_m, _u, c: string) => c.toUpperCase()).replace(/^[a-z]/, (c) => c.toUpperCase());
}
function messagePascal(name: string): string {
  return name.toLowerCase().split('_').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('');
}
function upperSnake(camel: string): string {
  return camel.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}
function hex(n: number, width = 2): string { return `0x${n.toString(16).toUpperCase().padStart(width, '0')}`; }

/** Expand struct references; validate the whole document. */
export function resolveMessages(p: ProtocolJson): { msg: JsonMessage; fields: JsonField[] }[] {
  const names = new Set<string>();
  const types = new Set<number>();
  const out = p.messages.map((msg) => {
    const where = `message ${msg.name}`;
    if (!/^[A-Z][A-Z0-9_]*$/.test(msg.name)) throw new Error(`${where}: name must be UPPER_SNAKE`);
    if (names.has(msg.name)) throw new Error(`${where}: duplicate name`);
    if (!Number.isInteger(msg.type) || msg.type < 0 || msg.type > 255) throw new Error(`${where}: type must be 0..255`);
    if (types.has(msg.type)) throw new Error(`${where}: duplicate type byte ${hex(msg.type)}`);
    if (msg.type === 0xc0 || msg.type === 0xdb) throw new Error(`${where}: type byte ${hex(msg.type)} is a SLIP special byte`);
    const hostToModem = msg.direction === 'host-to-modem';
    if (hostToModem !== (msg.type < 0x80)) throw new Error(`${where}: host-to-modem types are 0x01..0x7F, modem-to-host 0x80..0xFF`);
    names.add(msg.name);
    types.add(msg.type);
    const fields: JsonField[] = [];
    for (const f of msg.fields) {
      if ('struct' in f) {
        const s = p.structs[f.struct];
        if (!s) throw new Error(`${where}: unknown struct ${f.struct}`);
        fields.push(...s);
      } else fields.push(f);
    }
    fields.forEach((f, i) => {
      if (!(f.type in FIXED_SIZES)) throw new Error(`${where}.${f.name}: unknown type ${String(f.type)}`);
      if ((f.type === 'bytes' || f.type === 'utf8') && i !== fields.length - 1) throw new Error(`${where}.${f.name}: ${f.type} must be the last field`);
      if (f.param !== undefined && !p.enums['param']?.values.some((v) => v.name === f.param)) throw new Error(`${where}.${f.name}: unknown param ${f.param}`);
      if (f.enum !== undefined && !p.enums[f.enum]) throw new Error(`${where}.${f.name}: unknown enum ${f.enum}`);
      if (f.bits !== undefined && !p.bits[f.bits]) throw new Error(`${where}.${f.name}: unknown bits ${f.bits}`);
    });
    if (new Set(fields.map((f) => f.name)).size !== fields.length) throw new Error(`${where}: duplicate field names`);
    return { msg, fields };
  });
  for (const { msg } of out) {
    for (const r of msg.replies ?? []) {
      const reply = p.messages.find((m) => m.name === r);
      if (!reply || reply.direction !== 'modem-to-host') throw new Error(`message ${msg.name}: reply ${r} is not a modem-to-host message`);
    }
    if (msg.direction === 'host-to-modem' && (msg.replies ?? []).length === 0) throw new Error(`message ${msg.name}: a command needs a reply`);
  }
  return out;
}

function fixedLen(fields: JsonField[]): number { return fields.reduce((n, f) => n + FIXED_SIZES[f.type], 0); }
function isVariable(fields: JsonField[]): boolean { return fields.some((f) => f.type === 'bytes' || f.type === 'utf8'); }

const HEADER_TEXT = 'GENERATED FILE, do not edit. Generated by scripts/gen-firmware-protocol.ts from\n' +
  'firmware-protocol/protocol.json (`npx tsx scripts/gen-firmware-protocol.ts`); the spec is in\n' +
  'firmware-protocol/spec/. test/unit/modem/native-protocol.test.ts fails when this file is stale.';

export function generateTypeScript(p: ProtocolJson): string {
  const msgs = resolveMessages(p);
  const L: string[] = [];
  L.push('/**', ...HEADER_TEXT.split('\n').map((l) => ` * ${l}`), ' */', '/* eslint-disable */', '');
  L.push(`export const PROTOCOL_NAME = ${JSON.stringify(p.protocol)};`);
  L.push(`export const PROTOCOL_VERSION = ${p.version};`);
  L.push('/** Largest message (type byte + payload), before CRC and SLIP. */');
  L.push(`export const MAX_MESSAGE_LEN = ${p.framing.maxMessageLen};`);
  L.push('/** How long a host waits for the reply to a command (TRANSMIT: TX_DONE comes after the airtime). */');
  L.push(`export const REPLY_TIMEOUT_MS = ${p.framing.replyTimeoutMs};`);
  L.push('/** Nominal LoRa bandwidths; CAPABILITIES.bandwidthMask bit i stands for BANDWIDTHS_HZ[i]. */');
  L.push(`export const BANDWIDTHS_HZ = [${p.bandwidthsHz.join(', ')}] as const;`, '');

  for (const [key, e] of Object.entries(p.enums)) {
    const name = e.tsName ?? pascal(key);
    if (e.doc) L.push(`/** ${e.doc} */`);
    L.push(`export const ${name} = {`);
    for (const v of e.values) L.push(`  ${v.doc ? `/** ${v.doc} */\n  ` : ''}${v.name}: ${v.value},`);
    L.push('} as const;');
    L.push(`export type ${name}Name = keyof typeof ${name};`);
    L.push(`export const ${upperSnake(name)}_NAMES: Readonly<Record<number, ${name}Name>> = {`);
    for (const v of e.values) L.push(`  ${v.value}: '${v.name}',`);
    L.push('};', '');
  }
  for (const [key, b] of Object.entries(p.bits)) {
    const name = pascal(key);
    if (b.doc) L.push(`/** Bit masks of ${b.doc}. */`);
    L.push(`export const ${name} = {`);
    for (const v of b.values) L.push(`  ${v.doc ? `/** ${v.doc} */\n  ` : ''}${v.name}: ${hex(1 << v.bit)},`);
    L.push('} as const;', '');
  }

  L.push('/** Type byte of every message. */');
  L.push('export const MessageType = {');
  for (const { msg } of msgs) L.push(`  ${msg.name}: ${hex(msg.type)},`);
  L.push('} as const;');
  L.push('export type MessageName = keyof typeof MessageType;');
  L.push('export const MESSAGE_NAMES: Readonly<Record<number, MessageName>> = {');
  for (const { msg } of msgs) L.push(`  ${hex(msg.type)}: '${msg.name}',`);
  L.push('};', '');

  L.push(`export type FieldType = ${Object.keys(FIXED_SIZES).map((t) => `'${t}'`).join(' | ')};`);
  L.push('export interface FieldLayout {');
  L.push('  readonly name: string;');
  L.push('  readonly type: FieldType;');
  L.push('  /** Param id (ERROR.param) this field is reported as. */');
  L.push('  readonly param?: number;');
  L.push('}');
  L.push('export interface MessageLayout {');
  L.push('  readonly name: MessageName;');
  L.push('  readonly type: number;');
  L.push("  readonly direction: 'host-to-modem' | 'modem-to-host';");
  L.push('  readonly replies: readonly MessageName[];');
  L.push('  readonly fields: readonly FieldLayout[];');
  L.push('  /** Bytes of the fixed-size fields (the whole payload unless `variable`). */');
  L.push('  readonly fixedLen: number;');
  L.push('  /** The last field (bytes/utf8) takes the rest of the payload. */');
  L.push('  readonly variable: boolean;');
  L.push('}', '');
  L.push('export const MESSAGE_LAYOUTS: { readonly [K in MessageName]: MessageLayout } = {');
  const paramValue = (name: string | undefined): number | undefined => p.enums['param']?.values.find((v) => v.name === name)?.value;
  for (const { msg, fields } of msgs) {
    L.push(`  ${msg.name}: {`);
    L.push(`    name: '${msg.name}', type: ${hex(msg.type)}, direction: '${msg.direction}',`);
    L.push(`    replies: [${(msg.replies ?? []).map((r) => `'${r}'`).join(', ')}],`);
    L.push(`    fixedLen: ${fixedLen(fields)}, variable: ${isVariable(fields)},`);
    L.push('    fields: [');
    for (const f of fields) {
      const pv = paramValue(f.param);
      L.push(`      { name: '${f.name}', type: '${f.type}'${pv !== undefined ? `, param: ${pv}` : ''} },`);
    }
    L.push('    ],');
    L.push('  },');
  }
  L.push('};', '');

  const tsType = (t: FieldType): string => (t === 'bytes' ? 'Uint8Array' : t === 'utf8' ? 'string' : 'number');
  for (const { msg, fields } of msgs) {
    L.push(`/** ${msg.name} (${hex(msg.type)}, ${msg.direction})${msg.doc ? `: ${msg.doc}` : ''} */`);
    if (fields.length === 0) { L.push(`export type ${messagePascal(msg.name)}Fields = Record<never, never>;`, ''); continue; }
    L.push(`export interface ${messagePascal(msg.name)}Fields {`);
    for (const f of fields) {
      const notes = [f.doc, f.enum ? `enum ${f.enum}` : undefined, f.bits ? `bits ${f.bits}` : undefined].filter(Boolean).join('; ');
      if (notes) L.push(`  /** ${notes} */`);
      L.push(`  ${f.name}: ${tsType(f.type)};`);
    }
    L.push('}', '');
  }
  L.push('export interface NativeMessageFields {');
  for (const { msg } of msgs) L.push(`  ${msg.name}: ${messagePascal(msg.name)}Fields;`);
  L.push('}');
  L.push('/** Any message, tagged by name. */');
  L.push("export type NativeMessage = { [K in MessageName]: { name: K } & NativeMessageFields[K] }[MessageName];");
  L.push('');
  return L.join('\n');
}

export function generateCHeader(p: ProtocolJson): string {
  const msgs = resolveMessages(p);
  const L: string[] = [];
  const pad = (s: string, n = 48): string => s.padEnd(n);
  L.push('/*', ...HEADER_TEXT.split('\n').map((l) => ` * ${l}`), ' *',
    ' * Wire format of one message: SLIP END, escape(type, payload, crc16_lo, crc16_hi), SLIP END.',
    ' * crc16 = CRC-16/X-25 (poly 0x1021 reflected, init 0xFFFF, xorout 0xFFFF) over type and payload.',
    ' * All integers are little-endian. *_OFFSET values are offsets into the payload (after the type byte).',
    ' */', '#ifndef TRICKLE_PROTOCOL_H', '#define TRICKLE_PROTOCOL_H', '', '#include <stdint.h>', '');
  L.push(`#define ${pad('TRK_PROTOCOL_VERSION')}${p.version}`);
  L.push(`#define ${pad('TRK_MAX_MESSAGE_LEN')}${p.framing.maxMessageLen}`);
  L.push(`#define ${pad('TRK_REPLY_TIMEOUT_MS')}${p.framing.replyTimeoutMs}`);
  L.push(`#define ${pad('TRK_SLIP_END')}0xC0`, `#define ${pad('TRK_SLIP_ESC')}0xDB`, `#define ${pad('TRK_SLIP_ESC_END')}0xDC`, `#define ${pad('TRK_SLIP_ESC_ESC')}0xDD`);
  L.push(`#define ${pad('TRK_CRC16_INIT')}0xFFFF`, `#define ${pad('TRK_CRC16_POLY_REFLECTED')}0x8408`, `#define ${pad('TRK_CRC16_XOROUT')}0xFFFF`, '');
  L.push('/* Nominal LoRa bandwidths in Hz; CAPABILITIES.bandwidthMask bit i = trk_bandwidths_hz[i]. */');
  L.push(`#define ${pad('TRK_BANDWIDTH_COUNT')}${p.bandwidthsHz.length}`);
  L.push(`static const uint32_t trk_bandwidths_hz[TRK_BANDWIDTH_COUNT] = { ${p.bandwidthsHz.map((b) => `${b}u`).join(', ')} };`, '');
  L.push('/* Message types */');
  for (const { msg } of msgs) L.push(`#define ${pad(`TRK_MSG_${msg.name}`)}${hex(msg.type)}  /* ${msg.direction} */`);
  L.push('');
  for (const [key, e] of Object.entries(p.enums)) {
    const prefix = `TRK_${upperSnake(key)}_`;
    L.push(`/* ${e.doc ?? key} */`);
    for (const v of e.values) L.push(`#define ${pad(prefix + v.name)}${v.value}`);
    L.push('');
  }
  for (const [key, b] of Object.entries(p.bits)) {
    const prefix = `TRK_${upperSnake(key)}_`;
    L.push(`/* Bits of ${b.doc ?? key} */`);
    for (const v of b.values) L.push(`#define ${pad(prefix + v.name)}(1u << ${v.bit})`);
    L.push('');
  }
  L.push('/* Payload layouts: offsets of each field, and the payload length (minimum length if the last field is variable). */');
  for (const { msg, fields } of msgs) {
    let off = 0;
    for (const f of fields) {
      L.push(`#define ${pad(`TRK_${msg.name}_${upperSnake(f.name)}_OFFSET`)}${off}  /* ${f.type} */`);
      off += FIXED_SIZES[f.type];
    }
    L.push(`#define ${pad(`TRK_${msg.name}_${isVariable(fields) ? 'MIN_LEN' : 'LEN'}`)}${fixedLen(fields)}`);
  }
  L.push('', '#endif /* TRICKLE_PROTOCOL_H */', '');
  return L.join('\n');
}

export function generateMarkdown(p: ProtocolJson): string {
  const msgs = resolveMessages(p);
  const L: string[] = [];
  const cell = (s: string | undefined): string => (s ?? '').replace(/\|/g, '\\|');
  L.push('# 02 — Messages', '');
  L.push('<!-- GENERATED by scripts/gen-firmware-protocol.ts from firmware-protocol/protocol.json; do not edit. -->', '');
  L.push(`Protocol \`${p.protocol}\` version ${p.version}. Every message is one type byte followed by its payload; `
    + 'integers are little-endian (`u` unsigned, `i` two\'s complement); `bytes`/`utf8` take the rest of the message. '
    + 'Offsets count from the first payload byte (after the type byte). Framing: [01-framing.md](01-framing.md); '
    + 'when to send what: [03-sessions.md](03-sessions.md).', '');
  L.push('## Summary', '', '| type | name | direction | answered by | payload bytes |', '|---|---|---|---|---|');
  for (const { msg, fields } of msgs) {
    const len = isVariable(fields) ? `${fixedLen(fields)} + n` : String(fixedLen(fields));
    const replies = msg.direction === 'host-to-modem' ? [...(msg.replies ?? []), 'ERROR'].join(' or ') : '—';
    L.push(`| ${hex(msg.type)} | [${msg.name}](#${msg.name.toLowerCase().replace(/_/g, '_')}) | ${msg.direction} | ${replies} | ${len} |`);
  }
  L.push('');
  for (const [title, dir] of [['Host to modem (commands)', 'host-to-modem'], ['Modem to host (answers and events)', 'modem-to-host']] as const) {
    L.push(`## ${title}`, '');
    for (const { msg, fields } of msgs.filter((m) => m.msg.direction === dir)) {
      L.push(`### ${msg.name}`, '', `Type ${hex(msg.type)}. ${msg.doc ?? ''}`.trim(), '');
      if (msg.replies) L.push(`Answered by: ${[...msg.replies, 'ERROR'].join(' or ')}.`, '');
      if (fields.length === 0) { L.push('No payload.', ''); continue; }
      L.push('| offset | type | field | meaning |', '|---|---|---|---|');
      let off = 0;
      for (const f of fields) {
        const notes = [f.doc?.replace(/\.$/, ''), f.enum ? `values: [${f.enum}](#${f.enum.toLowerCase()})` : undefined, f.bits ? `bits: [${f.bits}](#${f.bits.toLowerCase()})` : undefined,
          f.param ? `ERROR.param ${f.param}` : undefined].filter(Boolean).join('; ');
        L.push(`| ${off} | ${f.type} | ${f.name} | ${cell(notes)} |`);
        off += FIXED_SIZES[f.type];
      }
      L.push('');
    }
  }
  L.push('## Codes', '');
  for (const [key, e] of Object.entries(p.enums)) {
    L.push(`### ${key}`, '', e.doc ?? '', '', '| value | name | meaning |', '|---|---|---|');
    for (const v of e.values) L.push(`| ${v.value} | ${v.name} | ${cell(v.doc)} |`);
    L.push('');
  }
  for (const [key, b] of Object.entries(p.bits)) {
    L.push(`### ${key}`, '', `Bits of ${b.doc ?? key}; unknown bits are sent as 0 and rejected (BAD_PARAMETER FLAGS) when set.`, '', '| bit | mask | name | meaning |', '|---|---|---|---|');
    for (const v of b.values) L.push(`| ${v.bit} | ${hex(1 << v.bit)} | ${v.name} | ${cell(v.doc)} |`);
    L.push('');
  }
  L.push('### bandwidthsHz', '', 'Nominal LoRa bandwidths (CAPABILITIES.bandwidthMask bit i = entry i; radioSettings.bandwidthHz takes the value itself):', '',
    '| bit | Hz |', '|---|---|', ...p.bandwidthsHz.map((b, i) => `| ${i} | ${b} |`), '');
  return L.join('\n');
}

export function loadProtocolJson(path = PROTOCOL_JSON_PATH): ProtocolJson {
  return JSON.parse(readFileSync(path, 'utf8')) as ProtocolJson;
}

function main(argv: string[]): number {
  const p = loadProtocolJson();
  const outputs: [string, string][] = [[TS_OUT_PATH, generateTypeScript(p)], [C_OUT_PATH, generateCHeader(p)], [MD_OUT_PATH, generateMarkdown(p)]];
  if (argv.includes('--check')) {
    let stale = 0;
    for (const [path, text] of outputs) {
      let current = '';
      try { current = readFileSync(path, 'utf8'); } catch { /* missing counts as stale */ }
      if (current !== text) { stale++; process.stderr.write(`${path} is out of date; run npx tsx scripts/gen-firmware-protocol.ts\n`); }
    }
    return stale === 0 ? 0 : 1;
  }
  for (const [path, text] of outputs) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
    process.stdout.write(`wrote ${path}\n`);
  }
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exit(main(process.argv.slice(2)));
}
