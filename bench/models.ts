/**
 * The two reference encodings the byte bench compares Trickle against, modelled from the
 * same real request and the same real Synapse response.
 *
 * httpsJsonBytes — what a Matrix client sends and receives over HTTPS today: the HTTP/1.1
 *   request as matrix-js-sdk sent it and the response as Synapse sent it (status line,
 *   headers, body), on a kept-alive TLS 1.3 connection over TCP/IPv4:
 *   - TLS 1.3 records (RFC 8446 §5.2): 5-byte header + 1-byte inner content type + 16-byte
 *     AEAD tag = 22 bytes per record of at most 16 384 bytes;
 *   - TCP/IPv4: 20-byte IPv4 + 20-byte TCP + 12-byte timestamp option = 52 bytes per segment,
 *     MSS 1448; one pure ACK (52 bytes) per direction. Connection setup is not counted.
 *
 * msc3079Bytes — the same exchange as MSC3079 describes it: CoAP (RFC 7252) with MSC3079 v1
 *   path enums and CBOR integer keys, over DTLS 1.2 / UDP / IPv4:
 *   - CON request with a 1-byte token, piggybacked response in the ACK; the access token
 *     option is "sticky" (sent once per connection), so it is not counted here;
 *   - bodies over 1024 bytes use RFC 7959 blocks of 1024 bytes, each block a datagram
 *     that repeats the request's options;
 *   - DTLS 1.2 record with TLS_PSK_WITH_AES_128_CCM_8 (RFC 7252 §9.1.3.1's mandatory suite):
 *     13-byte header + 8-byte explicit nonce + 8-byte tag = 29 bytes; UDP 8 + IPv4 20 = 28.
 */
import { encodeMessage } from '../src/coap/message.ts';
import { ACK, CON, Opt } from '../src/coap/numbers.ts';
import { encodeBlock } from '../src/coap/block.ts';
import { encodeHttpRequest, encodeHttpResponse } from '../src/matrix/http-coap.ts';
import type { HttpRequestLike, HttpResponseLike } from '../src/matrix/http.ts';

const TLS13_RECORD_OVERHEAD = 22;
const TLS_MAX_RECORD = 16_384;
const TCP_IP_HEADER = 52;
const TCP_MSS = 1448;

function tlsTcpDirection(appBytes: number): number {
  if (appBytes === 0) return TCP_IP_HEADER;
  const records = Math.ceil(appBytes / TLS_MAX_RECORD);
  const onTls = appBytes + records * TLS13_RECORD_OVERHEAD;
  const segments = Math.ceil(onTls / TCP_MSS);
  return onTls + segments * TCP_IP_HEADER + TCP_IP_HEADER; // + the other side's pure ACK
}

export function httpsJsonBytes(httpRequestBytes: number, httpResponseBytes: number): number {
  return tlsTcpDirection(httpRequestBytes) + tlsTcpDirection(httpResponseBytes);
}

const DTLS12_CCM8_OVERHEAD = 29;
const UDP_IP_HEADER = 28;
const MSC3079_BLOCK = 1024;

function datagrams(header: (block?: { num: number; more: boolean }) => number, payloadLen: number): number {
  if (payloadLen <= MSC3079_BLOCK) return header() + payloadLen + DTLS12_CCM8_OVERHEAD + UDP_IP_HEADER;
  let total = 0;
  const n = Math.ceil(payloadLen / MSC3079_BLOCK);
  for (let i = 0; i < n; i++) {
    const len = Math.min(MSC3079_BLOCK, payloadLen - i * MSC3079_BLOCK);
    total += header({ num: i, more: i < n - 1 }) + len + DTLS12_CCM8_OVERHEAD + UDP_IP_HEADER;
  }
  return total;
}

export function msc3079Bytes(req: HttpRequestLike, res: HttpResponseLike): number {
  const { accessToken: _sticky, ...withoutToken } = req;
  const r = encodeHttpRequest(withoutToken);
  const s = encodeHttpResponse(res);
  const token = new Uint8Array([0x01]);
  const reqHeader = (block?: { num: number; more: boolean }) => encodeMessage({
    type: CON, code: r.code, mid: 1, token,
    options: block ? [...r.options, { number: Opt.BLOCK1, value: encodeBlock({ num: block.num, more: block.more, szx: 6 }) }] : r.options,
    payload: new Uint8Array(0),
  }).length + (r.payload.length > 0 ? 1 : 0);
  const resHeader = (block?: { num: number; more: boolean }) => encodeMessage({
    type: ACK, code: s.code, mid: 1, token,
    options: block ? [...s.options, { number: Opt.BLOCK2, value: encodeBlock({ num: block.num, more: block.more, szx: 6 }) }] : s.options,
    payload: new Uint8Array(0),
  }).length + (s.payload.length > 0 ? 1 : 0);
  // Follow-up Block2 requests repeat the request without its body (RFC 7959 §2.4).
  const block2Requests = s.payload.length > MSC3079_BLOCK ? (Math.ceil(s.payload.length / MSC3079_BLOCK) - 1) * (reqHeader() + DTLS12_CCM8_OVERHEAD + UDP_IP_HEADER + 2) : 0;
  return datagrams(reqHeader, r.payload.length) + datagrams(resHeader, s.payload.length) + block2Requests;
}
