import { describe, expect, it } from 'vitest';
import {
  checkListenAddress, extractAccessToken, hostAllowed, isLoopbackHost, originAllowed, ownBaseUrl,
  parseAllowedOrigin, rewriteWellKnown, tokenRequirement,
} from '../../../src/host/local-api-policy.ts';
import { isTrickleError } from '../../../src/errors.ts';

describe('listen address', () => {
  it('knows loopback from the network', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '192.168.1.5', '10.0.0.1', 'kit.local', '128.0.0.1', '::2']) expect(isLoopbackHost(h), h).toBe(false);
  });
  it('refuses a network address without --allow-lan, naming the flag', () => {
    let err: unknown;
    try { checkListenAddress('0.0.0.0', false); } catch (e) { err = e; }
    expect(isTrickleError(err, 'ERR_CONFIG')).toBe(true);
    expect((err as Error).message).toContain('--allow-lan');
    expect(checkListenAddress('0.0.0.0', true).warning).toMatch(/anyone/);
    expect(checkListenAddress('127.0.0.1', false)).toEqual({});
  });
});

describe('origins and host names', () => {
  const policy = { allowedOrigins: new Set(['https://app.element.io', 'http://localhost:8080']), allowedHostNames: new Set(['kit.local']) };
  it('parses --allow-origin to the browser serialization and refuses wildcards, null and paths', () => {
    expect(parseAllowedOrigin('https://App.Element.io')).toBe('https://app.element.io');
    expect(parseAllowedOrigin('https://app.element.io:443/')).toBe('https://app.element.io');
    expect(parseAllowedOrigin('http://localhost:8080')).toBe('http://localhost:8080');
    for (const bad of ['*', 'null', 'https://app.element.io/path', 'ftp://x', 'app.element.io', 'https://u:p@x.org', 'https://x.org/?q']) {
      expect(() => parseAllowedOrigin(bad), bad).toThrow(/--allow-origin/);
    }
  });
  it('accepts no Origin, the kit\'s own origin and named origins only (exact match)', () => {
    const own = 'http://127.0.0.1:8008';
    expect(originAllowed(undefined, own, policy)).toBe(true);
    expect(originAllowed(own, own, policy)).toBe(true);
    expect(originAllowed('https://app.element.io', own, policy)).toBe(true);
    expect(originAllowed('https://app.element.io.evil.example', own, policy)).toBe(false);
    expect(originAllowed('http://app.element.io', own, policy)).toBe(false);
    expect(originAllowed('http://localhost:8081', own, policy)).toBe(false);
    expect(originAllowed('null', own, policy)).toBe(false);
  });
  it('answers to IP literals, localhost and named hosts, not to a rebinding name', () => {
    for (const h of ['127.0.0.1:8008', '[::1]:8008', 'localhost:8008', '192.168.1.5:8008', 'KIT.local:8008', undefined]) expect(hostAllowed(h, policy), String(h)).toBe(true);
    for (const h of ['evil.example:8008', 'kit.local.evil.example', 'localhost.evil.example:8008']) expect(hostAllowed(h, policy), h).toBe(false);
  });
  it('names the kit as the client reached it', () => {
    expect(ownBaseUrl('127.0.0.1:8008', '127.0.0.1', 8008)).toBe('http://127.0.0.1:8008');
    expect(ownBaseUrl('192.168.1.5:9000', '0.0.0.0', 9000)).toBe('http://192.168.1.5:9000');
    expect(ownBaseUrl(undefined, '::1', 8008)).toBe('http://[::1]:8008');
    expect(ownBaseUrl('bad host/x', '127.0.0.1', 8008)).toBe('http://127.0.0.1:8008');
  });
});

describe('access tokens', () => {
  it('reads Bearer or the query parameter, removing it from the query and keeping the rest byte for byte', () => {
    expect(extractAccessToken('Bearer abc', 'since=s1&timeout=30000')).toEqual({ kind: 'token', token: 'abc', query: 'since=s1&timeout=30000' });
    expect(extractAccessToken(undefined, 'since=s%2F1&access_token=t%2Bk&timeout=0')).toEqual({ kind: 'token', token: 't+k', query: 'since=s%2F1&timeout=0' });
    expect(extractAccessToken(undefined, 'filter=%7B%7D')).toEqual({ kind: 'none', query: 'filter=%7B%7D' });
  });
  it('treats ambiguous or malformed credentials as invalid, as Synapse does', () => {
    expect(extractAccessToken('Bearer a', 'access_token=b').kind).toBe('invalid');
    expect(extractAccessToken('Basic Zm9vOmJhcg==', '').kind).toBe('invalid');
    expect(extractAccessToken(undefined, 'access_token=a&access_token=b').kind).toBe('invalid');
    expect(extractAccessToken(undefined, 'access_token=').kind).toBe('invalid');
    expect(extractAccessToken('Bearer a', 'access_token=b').query).toBe('');
  });
  it('classifies endpoints: open, optional, required (unknown paths fail closed)', () => {
    expect(tokenRequirement('GET', '/_matrix/client/versions')).toBe('open');
    expect(tokenRequirement('POST', '/_matrix/client/v3/login')).toBe('open');
    expect(tokenRequirement('GET', '/_matrix/client/r0/login')).toBe('open');
    expect(tokenRequirement('POST', '/_matrix/client/v3/register')).toBe('open');
    expect(tokenRequirement('POST', '/_matrix/client/v3/refresh')).toBe('open');
    expect(tokenRequirement('GET', '/_matrix/media/v3/download/localhost/abc')).toBe('open');
    expect(tokenRequirement('GET', '/_matrix/client/v1/media/download/localhost/abc')).toBe('required');
    expect(tokenRequirement('GET', '/_matrix/client/v3/publicRooms')).toBe('optional');
    expect(tokenRequirement('POST', '/_matrix/client/v3/publicRooms')).toBe('required');
    expect(tokenRequirement('GET', '/_matrix/client/v3/profile/%40a%3Alocalhost')).toBe('optional');
    expect(tokenRequirement('PUT', '/_matrix/client/v3/profile/%40a%3Alocalhost/displayname')).toBe('required');
    expect(tokenRequirement('GET', '/_matrix/client/v3/sync')).toBe('required');
    expect(tokenRequirement('POST', '/_matrix/client/v3/logout')).toBe('required');
    expect(tokenRequirement('GET', '/_matrix/client/unstable/org.example/anything')).toBe('required');
    expect(tokenRequirement('GET', '/anything/else')).toBe('required');
    // An open prefix followed by a climb out of it is not open.
    expect(tokenRequirement('GET', '/_matrix/media/v3/download/../../../_synapse/admin/v1/users')).toBe('required');
    expect(tokenRequirement('GET', '/_matrix/media/v3/download/%2e%2e/x')).toBe('required');
    expect(tokenRequirement('GET', '/_matrix/media/v3/download/a%2Fb')).toBe('required');
  });
});

describe('well_known', () => {
  it('names the kit, drops the identity server, keeps the rest', () => {
    const doc = { 'm.homeserver': { base_url: 'https://hs.example', extra: 1 }, 'm.identity_server': { base_url: 'https://vector.im' }, 'org.example.setting': true };
    expect(rewriteWellKnown(doc, 'http://127.0.0.1:8008')).toEqual({ 'm.homeserver': { base_url: 'http://127.0.0.1:8008', extra: 1 }, 'org.example.setting': true });
    expect(rewriteWellKnown(undefined, 'http://127.0.0.1:8008')).toEqual({ 'm.homeserver': { base_url: 'http://127.0.0.1:8008' } });
  });
});
