/**
 * Issue 3's round-trip contract on real traffic: every request and response body of the corpus
 * captured through the project's own harness (real matrix-js-sdk, real Synapse; see
 * test/vectors/corpus/matrix-v1.json and scripts/train-dictionary.ts) crosses the full wire
 * path — HostSession → compact CoAP → bytes → compact CoAP → GatewaySession, and back — and
 * arrives as an identical request and an equal JSON value.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ACK, CON } from '../../../src/coap/numbers.ts';
import { encodeCompact, decodeCompact, createCompactContext, sequenceToken } from '../../../src/coap/compact.ts';
import { GatewaySession, HostSession } from '../../../src/matrix/session.ts';
import { eventId, ok, parse, req } from './support.ts';

interface Entry { kind: 'request' | 'response'; endpoint: string; status?: number; value: unknown }
const corpus = JSON.parse(readFileSync(new URL('../../vectors/corpus/matrix-v1.json', import.meta.url), 'utf8')) as { entries: Entry[] };

const fill = (p: string): string => p
  .replace('{roomId}', '!QzJrVtYkLmNoPqRs:localhost')
  .replace('{userId}', '@alice:localhost')
  .replace('{eventId}', eventId(7))
  .replace('{txnId}', 'm1795699017172.3');

describe('the captured corpus round-trips through the whole wire path', () => {
  it(`carries all ${corpus.entries.length} captured bodies exactly`, () => {
    const host = new HostSession();
    const gateway = new GatewaySession({ sessionId: 'corpus' });
    const hostCtx = createCompactContext();
    const gatewayCtx = createCompactContext();
    let seq = 0;
    let checked = 0;
    for (const e of corpus.entries) {
      const [method, path] = e.endpoint.split(' ') as [string, string];
      const isRequest = e.kind === 'request';
      const request = req(method, fill(path), { token: 'syt_REDACTED', ...(isRequest ? { body: e.value } : method === 'GET' ? {} : { body: {} }) });
      const enc = host.encodeRequest(request);
      seq++;
      const msg = { type: CON as typeof CON, code: enc.code, mid: seq & 0xffff, token: sequenceToken(seq), options: enc.options, payload: enc.payload };
      const atGateway = decodeCompact(encodeCompact(msg, hostCtx), gatewayCtx);
      const performed = gateway.decodeRequest({ code: atGateway.code, options: atGateway.options, payload: atGateway.payload, token: atGateway.token });
      expect(performed.method).toBe(method);
      if (!/\/send\/|\/redact\//.test(path)) expect(performed.path).toBe(fill(path));
      expect(performed.accessToken).toBe('syt_REDACTED');
      if (request.body.length > 0) expect(parse(performed.body)).toEqual(parse(request.body));

      const res = gateway.encodeResponse(isRequest ? ok({}) : ok(e.value, e.status ?? 200), performed);
      const back = decodeCompact(encodeCompact({ type: ACK as typeof ACK, code: res.code, mid: seq & 0xffff, token: sequenceToken(seq), options: res.options, payload: res.payload }, gatewayCtx), hostCtx);
      const result = host.decodeResponse(back, enc.sent);
      expect(result.kind).toBe('response');
      if (result.kind !== 'response') continue;
      expect(result.response.status).toBe(isRequest ? 200 : e.status ?? 200);
      expect(parse(result.response.body)).toEqual(isRequest ? {} : e.value);
      checked++;
    }
    expect(checked).toBe(corpus.entries.length);
    // The session learned and used handles along the way (ids recur in real traffic).
    expect(host.status().handles).toBeGreaterThan(5);
  });
});
