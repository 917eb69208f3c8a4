/**
 * `trickle frame explain <hex>`: every layer of a captured frame, for people debugging from the
 * field. Reads bytes as they were captured on the serial line (SLIP + CRC of a transparent
 * radio, or KISS + AX.25) or as the radio packet payload, and peels them:
 *
 *   serial framing → packing container → security envelope → compact CoAP → RFC 7252 message
 *   → payload (CBOR diagnostic, JSON) → the HTTP request or status it stands for
 *
 * Encrypted transport frames cannot be opened without the session keys; captures made with
 * `--security authenticate-only` (or `none`) show everything. The compact form's sequence fields
 * are LSBs of session counters: they are shown as carried, reconstructed against a fresh context.
 */
import { TrickleError } from '../errors.ts';
import { fromHex, toHex, utf8 } from '../util/bytes.ts';
import { crc16 } from '../util/crc.ts';
import { SlipDecoder } from '../modem/transparent/slip.ts';
import { KissDecoder } from '../modem/kiss/kiss.ts';
import { decodeAx25Frame, formatAx25Address } from '../modem/kiss/ax25.ts';
import { unpackFrame, isContainer } from '../scheduler/packing.ts';
import { FrameKind } from '../secure/secure-link.ts';
import { explainCompact, createCompactContext } from '../coap/compact.ts';
import { decodeMessage, getOptions, getUintOption, type CoapMessage } from '../coap/message.ts';
import { Opt, TYPE_NAMES, codeToString, optionName, isRequestCode, TrickleContentFormat, ContentFormat } from '../coap/numbers.ts';
import { cborDiagnostic } from '../codec/cbor.ts';
import { decompressBody, matrixDictionaryV1 } from '../codec/dictionary.ts';
import { CONTENT_FORMAT_TRICKLE_CBOR_DEFLATE } from '../matrix/session-wire.ts';
import { decodeTrickleCbor, eventIdFromBytes } from '../codec/trickle-cbor-v1.ts';
import { uriPathToHttpPath } from '../codec/paths-v1.ts';
import { coapToHttpStatus } from '../matrix/http-coap.ts';
import { parseFlags } from './args.ts';

export const FRAME_USAGE = `usage: trickle frame explain <hex> [--security encrypt|authenticate-only|none] [--codec compact|rfc7252]

  <hex>       the bytes as captured: from the serial line (SLIP+CRC or KISS+AX.25) or the radio
              packet payload; spaces and colons are ignored
  --security  how the capturing link ran (default encrypt: transport frames stay opaque)
  --codec     the on-air CoAP form (default compact)`;

const CONTROL_NAMES = new Map<number, string>(Object.entries(FrameKind).map(([k, v]) => [v, k]));
const TAG_LEN = 16;

function indent(s: string, n = 2): string { return s.split('\n').map((l) => ' '.repeat(n) + l).join('\n'); }

/** Payload by content format: diagnostic + JSON, where we can. */
function describePayload(msg: CoapMessage): string[] {
  if (msg.payload.length === 0) return ['payload: (none)'];
  const cf = getUintOption(msg.options, Opt.CONTENT_FORMAT);
  const out: string[] = [`payload: ${msg.payload.length} bytes, Content-Format ${cf ?? '(none)'}`];
  try {
    if (cf === ContentFormat.CBOR) {
      // Trickle CBOR v1 rides under Content-Format 60: handles and enums show as ~N and strings.
      try { out.push(`  CBOR: ${cborDiagnostic(msg.payload)}`); } catch { /* Trickle extensions (simple values) are not plain CBOR */ }
      out.push(`  JSON: ${JSON.stringify(decodeTrickleCbor(msg.payload, { resolveHandle: (n) => `~${n}` }))}`);
    } else if (cf === TrickleContentFormat.TEXT_MESSAGE) {
      out.push(`  JSON: ${JSON.stringify({ msgtype: 'm.text', body: utf8.decode(msg.payload) })}`);
    } else if (cf === TrickleContentFormat.EVENT_ID) {
      out.push(`  JSON: ${JSON.stringify({ event_id: eventIdFromBytes(msg.payload) })}`);
    } else if (cf === CONTENT_FORMAT_TRICKLE_CBOR_DEFLATE) {
      const inflated = decompressBody(msg.payload, matrixDictionaryV1(), 16 << 20);
      out.push(`  DEFLATE with dictionary ${matrixDictionaryV1().id}: ${msg.payload.length} → ${inflated.length} bytes`);
      out.push(`  Trickle CBOR (handles shown as ~N): ${JSON.stringify(decodeTrickleCbor(inflated, { resolveHandle: (n) => `~${n}` }))}`);
    } else if (cf !== undefined && cf >= 65000) {
      // Trickle CBOR: handles are per-session; they show as "~N".
      const v = decodeTrickleCbor(msg.payload, { resolveHandle: (n) => `~${n}` });
      out.push(`  Trickle CBOR (handles shown as ~N): ${JSON.stringify(v)}`);
    } else {
      out.push(`  bytes: ${toHex(msg.payload)}`);
    }
  } catch (e) {
    out.push(`  could not decode: ${(e as Error).message}`);
  }
  return out;
}

function describeMessage(msg: CoapMessage, rfc7252: Uint8Array): string[] {
  const out = [
    `RFC 7252 (${rfc7252.length} bytes): ${toHex(rfc7252)}`,
    `  ${TYPE_NAMES[msg.type]} ${codeToString(msg.code)} mid=${msg.mid} token=${toHex(msg.token) || '(empty)'}`,
  ];
  for (const o of msg.options) {
    let v: string;
    try { v = /[^\x20-\x7e]/.test(utf8.decode(o.value)) ? toHex(o.value) : JSON.stringify(utf8.decode(o.value)); } catch { v = toHex(o.value); }
    out.push(`  option ${o.number} ${optionName(o.number)}: ${v}`);
  }
  out.push(...describePayload(msg).map((l) => `  ${l}`));
  if (isRequestCode(msg.code)) {
    try {
      const segs = getOptions(msg.options, Opt.URI_PATH).map((b) => utf8.decode(b));
      const query = getOptions(msg.options, Opt.URI_QUERY).map((b) => utf8.decode(b)).join('&');
      const method = ['', 'GET', 'POST', 'PUT', 'DELETE'][msg.code] ?? `method ${msg.code}`;
      let path: string;
      try {
        path = uriPathToHttpPath(segs, { clientVersion: 'v3' });
      } catch {
        // send / redact / sendToDevice travel without their txn id: the gateway derives it from the token.
        path = uriPathToHttpPath([...segs, '{txn}'], { clientVersion: 'v3' });
      }
      out.push(`HTTP: ${method} ${path}${query ? `?${query}` : ''}  (handles ~N and {txn} are filled in by the gateway)`);
    } catch (e) { out.push(`HTTP: (path not mappable: ${(e as Error).message})`); }
  } else if (msg.code !== 0) {
    try { out.push(`HTTP: status ${coapToHttpStatus(msg.code, msg.options)}`); } catch { /* not a response */ }
  }
  return out;
}

function explainCoap(bytes: Uint8Array, codec: 'compact' | 'rfc7252'): string[] {
  if (codec === 'rfc7252') {
    const msg = decodeMessage(bytes);
    return describeMessage(msg, bytes);
  }
  const ex = explainCompact(bytes, createCompactContext());
  const out = [`compact CoAP (${bytes.length} bytes): rule ${ex.ruleId} "${ex.rule}" — ${ex.doc}`];
  for (const f of ex.fields) out.push(`  @${f.offset} ${f.name}: ${f.hex} = ${f.value}`);
  out.push(...describeMessage(ex.message, ex.rfc7252));
  return out;
}

function explainMessage(m: Uint8Array, security: string, codec: 'compact' | 'rfc7252'): string[] {
  if (security === 'none') return explainCoap(m, codec);
  const kind = m[0]!;
  if (kind & 0x80) {
    return [`secure control frame ${CONTROL_NAMES.get(kind) ?? `0x${kind.toString(16)} (unknown)`}, ${m.length} bytes (Noise handshake messages are opaque by design)`];
  }
  const out = [`secure transport frame: nonce LSBs ${kind & 0x7f}, ${m.length - 1 - TAG_LEN} bytes of ${security === 'authenticate-only' ? 'cleartext' : 'ciphertext'}, tag ${toHex(m.subarray(m.length - TAG_LEN))}`];
  if (m.length < 1 + TAG_LEN) return [...out, '  too short for a transport frame'];
  if (security !== 'authenticate-only') return [...out, '  encrypted: the content cannot be shown without the session keys'];
  return [...out, ...explainCoap(m.subarray(1, m.length - TAG_LEN), codec).map((l) => indent(l))];
}

export function explainFrame(hex: string, opts: { security?: string; codec?: 'compact' | 'rfc7252' } = {}): string {
  const security = opts.security ?? 'encrypt';
  const codec = opts.codec ?? 'compact';
  let bytes: Uint8Array;
  try { bytes = fromHex(hex); } catch (e) { throw new TrickleError('ERR_USAGE', 'cli', `${(e as Error).message}\n\n${FRAME_USAGE}`); }
  const out: string[] = [`${bytes.length} bytes: ${toHex(bytes)}`];
  let packets: Uint8Array[] = [bytes];
  if (bytes[0] === 0xc0) {
    const slip = new SlipDecoder({ maxFrameLen: 65_535 }).push(bytes);
    const first = slip.frames[0];
    if (first && first.length >= 3 && crc16(first.subarray(0, first.length - 2)) === (first[first.length - 2]! | (first[first.length - 1]! << 8))) {
      out.push(`serial framing: SLIP + CRC-16/X.25 (transparent radio), CRC ok, payload ${first.length - 2} bytes`);
      packets = [first.subarray(0, first.length - 2)];
    } else {
      const kiss = new KissDecoder({ maxFrameLen: 65_535 }).push(bytes).frames[0];
      const ax = kiss ? decodeAx25Frame(kiss.data, { maxInfoLen: 65_535 }) : undefined;
      if (kiss && ax?.ok) {
        out.push(`serial framing: KISS port ${kiss.port}, AX.25 UI ${formatAx25Address(ax.frame.source)} > ${formatAx25Address(ax.frame.destination)}, PID 0x${ax.frame.pid.toString(16)}, info ${ax.frame.info.length} bytes`);
        packets = [ax.frame.info];
      } else {
        out.push('serial framing: starts with 0xC0 but is neither a SLIP frame with a good CRC nor a KISS AX.25 UI frame; reading it as a radio payload');
      }
    }
  }
  for (const p of packets) {
    const messages = isContainer(p) ? unpackFrame(p) : [p];
    if (messages.length > 1) out.push(`packing container: ${messages.length} messages`);
    messages.forEach((m, i) => {
      if (messages.length > 1) out.push(`message ${i + 1}:`);
      try {
        out.push(...explainMessage(m, security, codec).map((l) => (messages.length > 1 ? indent(l) : l)));
      } catch (e) {
        out.push(`  cannot decode: ${(e as TrickleError).code ?? ''} ${(e as Error).message}`);
      }
    });
  }
  return out.join('\n');
}

export function runFrameCommand(argv: string[], write: (s: string) => void): number {
  const [sub, ...rest] = argv;
  if (sub !== 'explain') throw new TrickleError('ERR_USAGE', 'cli', FRAME_USAGE);
  const { flags, positionals } = parseFlags(rest, { security: { type: 'string' }, codec: { type: 'string' } }, FRAME_USAGE);
  if (positionals.length === 0) throw new TrickleError('ERR_USAGE', 'cli', `give the frame as hex\n\n${FRAME_USAGE}`);
  const codec = (flags['codec'] as string | undefined) ?? 'compact';
  if (codec !== 'compact' && codec !== 'rfc7252') throw new TrickleError('ERR_USAGE', 'cli', `--codec must be compact or rfc7252\n\n${FRAME_USAGE}`);
  write(explainFrame(positionals.join(''), { ...(flags['security'] ? { security: flags['security'] as string } : {}), codec }));
  return 0;
}
