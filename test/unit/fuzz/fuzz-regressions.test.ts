/**
 * Inputs the fuzzers found (npm run fuzz), replayed through the same watched worker the campaign
 * uses and checked directly against the decoders that were fixed.
 */
import { describe, expect, it } from 'vitest';
import { replay } from '../../fuzz/campaign.ts';
import { decodeTrickleCbor } from '../../../src/codec/trickle-cbor-v1.ts';
import { decodeNativeMessage, encodeNativeMessage } from '../../../src/modem/native/codec.ts';
import { decodeBody, CONTENT_FORMAT_TEXT_MESSAGE } from '../../../src/matrix/session-wire.ts';
import { uintOption } from '../../../src/coap/message.ts';
import { Opt } from '../../../src/coap/numbers.ts';
import { fromHex } from '../../../src/util/bytes.ts';
import { MAX_MESSAGE_LEN } from '../../../src/modem/native/protocol-generated.ts';
import { SecureTransport, type TransportSnapshot } from '../../../src/secure/transport.ts';

const codeOf = (fn: () => unknown): string | undefined => {
  try { fn(); return undefined; } catch (e) { return (e as { code?: string }).code; }
};

describe('fuzz-found inputs', () => {
  it('a CBOR float32 NaN or infinity has no JSON form: refused like the float64 ones (it was returned as NaN)', () => {
    expect(codeOf(() => decodeTrickleCbor(Uint8Array.from([0xfa, 0x7f, 0xc0, 0x00, 0x00])))).toBe('ERR_CBOR_TYPE');
    expect(codeOf(() => decodeTrickleCbor(Uint8Array.from([0xfa, 0x7f, 0x80, 0x00, 0x00])))).toBe('ERR_CBOR_TYPE');
    expect(decodeTrickleCbor(Uint8Array.from([0xfa, 0x3f, 0xc0, 0x00, 0x00]))).toBe(1.5);
  });

  it('a native-protocol message over MAX_MESSAGE_LEN is refused, never decoded (variable layouts had no bound)', () => {
    const big = new Uint8Array(MAX_MESSAGE_LEN + 1);
    big[0] = 0x01;
    expect(codeOf(() => decodeNativeMessage(big))).toBe('ERR_FRAME_TOO_LONG');
  });

  it('the same inputs replayed through the campaign worker raise no failure', async () => {
    const failures = await replay('trickle-cbor', ['fa7fc00000', 'fa7f800000']);
    expect(failures.flat()).toEqual([]);
  }, 60_000);
});

/** Found by the fuzzers in the snapshot import (a damaged state file must not crash or hang a restart). */
describe('found by the fuzzers in the transport snapshot import, fixed in src/secure/transport.ts', () => {
  const key = (b: number): string => b.toString(16).padStart(2, '0').repeat(32);
  const snapshot = (over: Record<string, unknown>): TransportSnapshot => ({
    version: 1, mode: 'encrypt', rekeyIntervalLog2: 8, persistMargin: 32,
    send: { nonce: '5', epoch: '0', key: key(1) },
    receive: { highest: '5', bitmap: '0', epoch: '0', key: key(2), previousKey: null },
    ...over,
  } as unknown as TransportSnapshot);

  // transport-import input (hex of the JSON): {"version":1,"mode":"encrypt","rekeyIntervalLog2":16,
  // "persistMargin":32,"send":{…},"receive":null}: TypeError "Cannot read properties of null (reading 'highest')".
  it('SecureTransport.importState refuses a snapshot whose send or receive is null with ERR_NOISE_STATE (it threw a TypeError)', () => {
    expect(codeOf(() => SecureTransport.importState(snapshot({ receive: null })))).toBe('ERR_NOISE_STATE');
    expect(codeOf(() => SecureTransport.importState(snapshot({ send: null })))).toBe('ERR_NOISE_STATE');
  });

  // transport-import hang: send.nonce "14073709551614", send.epoch "0". importState accepts an epoch
  // far behind its nonce; the first seal() then rekeys once per missing epoch (2^8 nonces each at
  // K = 8: 1e5 epochs ≈ 1 s, 1e6 ≈ 9 s, a 20-digit nonce never returns). The receive side is the
  // same with a forged radio frame: receive.epoch "0" under receive.highest "25600000" makes every
  // frame ahead of the window derive 1e5 keys in open() (≈ 1.2 s each, the keys held in an array),
  // and the work is not kept, so each forged frame costs it again. A snapshot the transport wrote
  // has send.epoch ≥ (send.nonce >> K) − 1 and receive.epoch = receive.highest >> K.
  it('SecureTransport.importState refuses key epochs that trail their nonces (else seal/open rekey once per missing epoch)', () => {
    expect(codeOf(() => SecureTransport.importState(snapshot({ send: { nonce: '25600000', epoch: '0', key: key(1) } }), { persist: () => {} }))).toBe('ERR_NOISE_STATE');
    expect(codeOf(() => SecureTransport.importState(snapshot({ receive: { highest: '25600000', bitmap: '0', epoch: '0', key: key(2), previousKey: null } }), { persist: () => {} }))).toBe('ERR_NOISE_STATE');
  });

  it('a consistent snapshot still imports', () => {
    expect(codeOf(() => SecureTransport.importState(snapshot({}), { persist: () => {} }))).toBeUndefined();
  });

  it('damaged transport snapshots are refused, never crash or hang (send/receive null; an epoch far behind its nonce made the next seal derive keys for ever)', async () => {
    const inputs = [
      '7b2276657273696f6e223a312c226d6f6465223a22656e6372797074222c2272656b65796e223a33322c22726563656976654d617267696e223a312c226e6f6e636542697473223a372c22726573796e635772617073223a382c2273656e64223a7b226e6f6e6365223a223134303733373039353531363135222c2265706f6368223a2230222c226b6579223a2265643731303034663038363866356539623166323365643232393939313534616266663865323737316464633566366165323062366334623561653461386436227d2c2272656365697665223a7b2268696768657374223a2235222c226269746d6170223a223633222c2265706f6368223a2230222c226b6579223a2237316366336634353464373836393333316639306233396333616530356161356636323936356461363039633965316635333830353965336563303035363439222c2270726576696f75734b6579223a6e756c6c7d7d',
      '7b2276657273696f6e223a312c22223a22222c22223a382c2273656e64223a6e756c6c2c2272656365697665223a22227d',
      '7b2276657273696f6e223a312c22223a22222c22223a382c2273656e64223a7b226e6f6e6365223a2237222c2265706f6368223a2230222c22223a22227d2c2272656365697665223a6e756c6c7d',
    ];
    const failures = await replay('transport-import', inputs);
    expect(failures.flat()).toEqual([]);
  }, 60_000);
});

describe('a leading U+FEFF (EF BB BF) is data: decoders keep it or refuse, never drop it', () => {
  it('Trickle CBOR keeps it (fixed: found by the cbor ⇄ trickle-cbor differential, input 63efbbbf)', () => {
    expect(decodeTrickleCbor(fromHex('63efbbbf'))).toBe('\uFEFF');
    expect(decodeTrickleCbor(fromHex('a164626f647965efbbbf6869'))).toEqual({ body: '\uFEFFhi' });
  });

  // Fixed in src/util/bytes.ts (utf8.decode: TextDecoder ignoreBOM): every text it decoded lost a
  // leading EF BB BF (native text fields, TEXT_MESSAGE bodies, option values). Native input
  // 810000000000efbbbf is a VERSION whose firmware name "\uFEFF" came out as ""; session-body
  // input 4402000000000000c2fde8ffefbbbf6869 is a TEXT_MESSAGE "\uFEFFhi" the gateway posted as "hi".
  it('utf8.decode keeps it: a native VERSION message re-encodes to its own bytes', () => {
    const x = fromHex('810000000000efbbbf');
    expect(encodeNativeMessage(decodeNativeMessage(x))).toEqual(x);
  });

  it('utf8.decode keeps it: a TEXT_MESSAGE body "\uFEFFhi" reaches the homeserver as it was sent', () => {
    const body = decodeBody([uintOption(Opt.CONTENT_FORMAT, CONTENT_FORMAT_TEXT_MESSAGE)], fromHex('efbbbf6869'),
      { allowTextMessage: true, allowEventId: false, maxBodyBytes: 1024, resolveHandle: () => undefined });
    expect(JSON.parse(new TextDecoder('utf-8', { ignoreBOM: true }).decode(body.body))).toEqual({ msgtype: 'm.text', body: '\uFEFFhi' });
  });
});
