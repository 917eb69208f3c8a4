import { describe, expect, it } from 'vitest';
import { checkClientServerPath } from '../../../src/matrix/allowed-paths.ts';
import { GatewaySession, HostSession } from '../../../src/matrix/session.ts';
import { Method, Opt } from '../../../src/coap/numbers.ts';
import { stringOption } from '../../../src/coap/message.ts';
import { HomeserverClient } from '../../../src/gateway/homeserver-client.ts';
import { createServer } from 'node:http';

const reasonOf = (path: string): string | undefined => {
  try {
    checkClientServerPath(path);
    return undefined;
  } catch (e) {
    return (e as { code: string; detail: { reason: string } }).code === 'ERR_MATRIX_PATH' ? (e as { detail: { reason: string } }).detail.reason : 'other';
  }
};

describe('the gateway performs only the Matrix client-server API', () => {
  it('allows client-server and media paths, with encoded ids', () => {
    for (const p of [
      '/_matrix/client/versions', '/_matrix/client/v3/sync', '/_matrix/client/r0/rooms/!a%3Ab/send/m.room.message/t1',
      '/_matrix/client/v3/rooms/!r:hs/event/%24abc%2Fdef', '/_matrix/client/unstable/org.matrix.msc3575/sync',
      '/_matrix/media/v3/download/hs/abc', '/_matrix/client/v1/media/thumbnail/hs/abc', '/_matrix/client/v3/directory/room/%23a..b%3Ahs',
    ]) expect(reasonOf(p), p).toBeUndefined();
  });

  it('refuses dot segments, plain or percent-encoded, and ones hidden behind an encoded slash', () => {
    for (const p of [
      '/_matrix/client/v3/../../../_synapse/admin/v1/users', '/_matrix/client/v3/%2e%2e/%2E%2E/%2e%2e/_synapse/admin/v1/users',
      '/../../etc/passwd', '/_matrix/client/./v3/sync', '/_matrix/client/v3/rooms/a%2F..%2F..%2F..%2F_synapse/x',
      '/_matrix/client/v3/rooms/..%5C..%5Cx/state', '/_matrix/client/v3/rooms/.',
    ]) expect(reasonOf(p), p).toBe(p === '/../../etc/passwd' ? 'dot-segment' : 'dot-segment');
  });

  it('refuses every other prefix, and malformed paths', () => {
    expect(reasonOf('/_synapse/admin/v1/users')).toBe('prefix');
    expect(reasonOf('/_matrix/federation/v1/version')).toBe('prefix');
    expect(reasonOf('/_matrix/key/v2/server')).toBe('prefix');
    expect(reasonOf('/_matrix/client%2F../x')).toBe('dot-segment');
    expect(reasonOf('/_matrix/clientx/v3/sync')).toBe('prefix');
    expect(reasonOf('/.well-known/matrix/client')).toBe('prefix');
    expect(reasonOf('/')).toBe('prefix');
    expect(reasonOf('_matrix/client/v3/sync')).toBe('malformed');
    expect(reasonOf('/_matrix/client/v3/sync?x=1')).toBe('malformed');
    expect(reasonOf('/_matrix/client/v3/rooms/%E0%A4%A/x')).toBe('malformed');
  });

  it('the host refuses before encoding (nothing crosses the air); the gateway refuses after decoding', () => {
    const host = new HostSession();
    for (const path of ['/_matrix/client/v3/../../../_synapse/admin/v1/users', '/_synapse/admin/v1/users', '/_matrix/client/v3/%2e%2e/%2e%2e/%2e%2e/_synapse/admin/v1/users']) {
      expect(() => host.encodeRequest({ method: 'GET', path, query: '', body: new Uint8Array(0), accessToken: 'tok' })).toThrow(/client-server API|dot segments/);
    }
    // A kit running other code sends the segments anyway.
    const gw = new GatewaySession({ sessionId: 'abc' });
    const req = (segs: string[]) => ({ code: Method.GET, token: new Uint8Array([0, 0, 0, 1]), payload: new Uint8Array(0), options: [...segs.map((s) => stringOption(Opt.URI_PATH, s)), stringOption(256, 'tok')] });
    for (const segs of [['_matrix', 'client', 'v3', '..', '..', '..', '_synapse', 'admin', 'v1', 'users'], ['_synapse', 'admin', 'v1', 'users'], ['..', '..', 'etc', 'passwd']]) {
      let code = '';
      try { gw.decodeRequest(req(segs)); } catch (e) { code = (e as { code: string }).code; }
      expect(code, segs.join('/')).toBe('ERR_MATRIX_PATH');
      const answer = gw.encodeError(Object.assign(new Error('x'), { code }));
      expect(answer.code).toBeGreaterThan(0);
    }
  });

  it('the homeserver client never sends a path the URL parser would rewrite', async () => {
    const seen: string[] = [];
    const server = createServer((req, res) => { seen.push(req.url ?? ''); res.end('{}'); });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const hs = new HomeserverClient({ baseUrl: `http://127.0.0.1:${port}`, requestTimeoutMs: 5000 });
    for (const path of ['/_matrix/client/v3/../../../_synapse/admin/v1/users', '/_synapse/admin/v1/users', '/_matrix/client/v3/a\\..\\..\\x']) {
      const r = await hs.perform({ method: 'GET', path, query: '', body: new Uint8Array(0) });
      expect(r.status).toBe(400);
    }
    expect((await hs.perform({ method: 'GET', path: '/_matrix/client/versions', query: '', body: new Uint8Array(0) })).status).toBe(200);
    server.close();
    expect(seen).toEqual(['/_matrix/client/versions']);
    expect(hs.refusedPaths).toBe(3);
    expect(hs.requestsTotal).toBe(1);
  });
});
