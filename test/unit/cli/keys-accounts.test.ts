/**
 * `trickle keys bind | unbind | local-account` against a stand-in homeserver (node:http) that
 * records what it is asked: the password is used once and never stored, the token is kept 0600
 * and never listed, revoking a kit ends its binding, and the running gateway's lookup follows
 * the file.
 */
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boundAccountsLookup, localAccountsReader, runKeysCommand, type PasswordReader } from '../../../src/cli/keys.ts';
import { X25519 } from '../../../src/secure/dh.ts';
import { encodePublicKey, fingerprint } from '../../../src/secure/fingerprint.ts';
import { checkPassword } from '../../../src/host/local-accounts.ts';
import { seededRandom } from '../secure/support.ts';

const PASSWORD = 'Tr0ub4dor&3 kit password';
const kit = X25519.generateKeyPair(seededRandom('bind-kit'));
const tmp = (): string => mkdtempSync(join(tmpdir(), 'trickle-bind-'));

interface Seen { method: string; path: string; auth: string | undefined; body: string }
let server: Server;
let hsUrl = '';
const seen: Seen[] = [];
let logins = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => { body += d.toString(); });
    req.on('end', () => {
      seen.push({ method: req.method ?? '', path: req.url ?? '', auth: req.headers.authorization, body });
      const send = (status: number, v: unknown) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(v)); };
      if (req.url === '/_matrix/client/v3/login') {
        const b = JSON.parse(body) as { password?: string; identifier?: { user?: string } };
        if (b.password !== PASSWORD) return send(403, { errcode: 'M_FORBIDDEN', error: 'Invalid username or password' });
        logins++;
        return send(200, { user_id: b.identifier?.user, access_token: `syt_bound_${logins}_secret`, device_id: `DEV${logins}` });
      }
      if (req.url === '/_matrix/client/v3/account/whoami') {
        return req.headers.authorization === 'Bearer sso_token_from_file' ? send(200, { user_id: '@sso:hs.example', device_id: 'SSODEV' }) : send(401, { errcode: 'M_UNKNOWN_TOKEN', error: 'nope' });
      }
      if (req.url === '/_matrix/client/v3/logout') return send(200, {});
      send(404, { errcode: 'M_UNRECOGNIZED', error: 'no' });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const a = server.address();
  hsUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

function reader(...answers: string[]): PasswordReader & { asked: { prompt: string; fromStdin: boolean }[] } {
  const asked: { prompt: string; fromStdin: boolean }[] = [];
  return { asked, readPassword: async (prompt, fromStdin) => { asked.push({ prompt, fromStdin }); return answers.shift() ?? ''; } };
}

async function run(args: string[], io: PasswordReader = reader()): Promise<string> {
  const lines: string[] = [];
  await runKeysCommand(args, (s) => lines.push(s), io);
  return lines.join('\n');
}

async function failure(args: string[], io: PasswordReader = reader()): Promise<string> {
  try { await runKeysCommand(args, () => {}, io); } catch (e) { return (e as Error).message; }
  throw new Error(`expected ${args.join(' ')} to fail`);
}

/** Everything in a state directory, as text. */
const allFiles = (dir: string): string => readdirSync(dir).map((f) => readFileSync(join(dir, f), 'utf8')).join('\n');

describe('trickle keys bind / unbind (gateway)', () => {
  it('logs in once with the password, keeps only the token (0600), lists the binding without it, and the lookup follows', async () => {
    const dir = tmp();
    await run(['add', encodePublicKey(kit.publicKey), 'valley-kit', '--state-dir', dir]);
    const lookup = boundAccountsLookup(dir);
    expect(lookup(kit.publicKey)).toBeUndefined();
    const io = reader(PASSWORD);
    const out = await run(['bind', 'valley-kit', '@alice:hs.example', '--homeserver', hsUrl, '--password-stdin', '--state-dir', dir], io);
    expect(io.asked).toEqual([{ prompt: expect.stringContaining('@alice:hs.example'), fromStdin: true }]);
    expect(out).toContain('bound valley-kit');
    const login = seen.filter((s) => s.path === '/_matrix/client/v3/login').at(-1)!;
    expect(JSON.parse(login.body)).toMatchObject({ type: 'm.login.password', identifier: { type: 'm.id.user', user: '@alice:hs.example' }, initial_device_display_name: 'Trickle valley-kit' });
    const file = join(dir, 'accounts-gateway.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(allFiles(dir)).not.toContain(PASSWORD);
    const bound = lookup(kit.publicKey)!;
    expect(bound).toMatchObject({ userId: '@alice:hs.example', deviceId: `DEV${logins}`, kitName: 'valley-kit', via: 'password', homeserver: hsUrl });
    expect(bound.accessToken).toMatch(/^syt_bound_\d+_secret$/);
    const listed = await run(['list', '--state-dir', dir]);
    expect(listed).toContain('bound to @alice:hs.example');
    expect(listed).not.toContain(bound.accessToken);

    // Bound again (by fingerprint): the old device is logged out, the new token replaces it.
    const again = await run(['bind', fingerprint(kit.publicKey), '@alice:hs.example', '--homeserver', hsUrl, '--password-stdin', '--state-dir', dir], reader(PASSWORD));
    expect(again).toContain('logged out device');
    expect(seen.at(-1)).toMatchObject({ path: '/_matrix/client/v3/logout', auth: `Bearer ${bound.accessToken}` });
    expect(lookup(kit.publicKey)!.accessToken).not.toBe(bound.accessToken);

    // unbind: forgotten, and its device logged out.
    const token = lookup(kit.publicKey)!.accessToken;
    expect(await run(['unbind', 'valley-kit', '--state-dir', dir])).toContain('logged out device');
    expect(seen.at(-1)).toMatchObject({ path: '/_matrix/client/v3/logout', auth: `Bearer ${token}` });
    expect(lookup(kit.publicKey)).toBeUndefined();
    expect(await failure(['unbind', 'valley-kit', '--state-dir', dir])).toMatch(/no bound account/);
  });

  it('a wrong password binds nothing; an unknown kit, a bad user id and a missing --homeserver are refused before any login', async () => {
    const dir = tmp();
    await run(['add', encodePublicKey(kit.publicKey), 'valley-kit', '--state-dir', dir]);
    const before = seen.length;
    expect(await failure(['bind', 'valley-kit', '@alice:hs.example', '--homeserver', hsUrl, '--password-stdin', '--state-dir', dir], reader('wrong'))).toMatch(/refused the login.*M_FORBIDDEN/);
    expect(seen.length).toBe(before + 1);
    expect(boundAccountsLookup(dir)(kit.publicKey)).toBeUndefined();
    expect(await failure(['bind', 'other-kit', '@alice:hs.example', '--homeserver', hsUrl, '--password-stdin', '--state-dir', dir], reader(PASSWORD))).toMatch(/no authorized field kit matches/);
    expect(await failure(['bind', 'valley-kit', 'alice', '--homeserver', hsUrl, '--password-stdin', '--state-dir', dir], reader(PASSWORD))).toMatch(/not a Matrix user id/);
    expect(await failure(['bind', 'valley-kit', '@alice:hs.example', '--password-stdin', '--state-dir', dir], reader(PASSWORD))).toMatch(/--homeserver/);
    expect(await failure(['list', '--homeserver', hsUrl, '--state-dir', dir])).toMatch(/applies to "bind" only/);
    expect(seen.length).toBe(before + 1);
  });

  it('--access-token-file: checked with whoami, kept, and left valid when unbound; revoke unbinds', async () => {
    const dir = tmp();
    await run(['add', encodePublicKey(kit.publicKey), 'sso-kit', '--state-dir', dir]);
    const tokenFile = join(dir, '..', `token-${Date.now()}`);
    writeFileSync(tokenFile, 'sso_token_from_file\n');
    expect(await failure(['bind', 'sso-kit', '@other:hs.example', '--homeserver', hsUrl, '--access-token-file', tokenFile, '--state-dir', dir])).toMatch(/belongs to @sso:hs.example/);
    await run(['bind', 'sso-kit', '@sso:hs.example', '--homeserver', hsUrl, '--access-token-file', tokenFile, '--state-dir', dir]);
    expect(boundAccountsLookup(dir)(kit.publicKey)).toMatchObject({ userId: '@sso:hs.example', deviceId: 'SSODEV', via: 'token', accessToken: 'sso_token_from_file' });
    const before = seen.length;
    const out = await run(['revoke', 'sso-kit', '--state-dir', dir]);
    expect(out).toContain('revoked sso-kit');
    expect(out).toContain('left valid');
    expect(seen.length).toBe(before); // not logged out: the token came from elsewhere
    expect(boundAccountsLookup(dir)(kit.publicKey)).toBeUndefined();
  });

  it('an accounts file others can read is refused (fail closed: no account)', async () => {
    const dir = tmp();
    await run(['add', encodePublicKey(kit.publicKey), 'valley-kit', '--state-dir', dir]);
    await run(['bind', 'valley-kit', '@alice:hs.example', '--homeserver', hsUrl, '--password-stdin', '--state-dir', dir], reader(PASSWORD));
    const { chmodSync } = await import('node:fs');
    chmodSync(join(dir, 'accounts-gateway.json'), 0o644);
    const errors: string[] = [];
    expect(boundAccountsLookup(dir, (e) => errors.push(e.message))(kit.publicKey)).toBeUndefined();
    expect(errors.join()).toMatch(/chmod 600/);
  });
});

describe('trickle keys local-account (field kit)', () => {
  it('stores a scrypt verifier (0600), never the password; asks twice on a terminal; --remove removes', async () => {
    const dir = tmp();
    const read = localAccountsReader(dir);
    expect(read()).toEqual([]);
    await run(['local-account', '@alice:hs.example', '--password-stdin', '--state-dir', dir], reader('kit pass 1'));
    const file = join(dir, 'local-accounts.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8')).not.toContain('kit pass 1');
    const [a] = read();
    expect(a!.userId).toBe('@alice:hs.example');
    expect(await checkPassword('kit pass 1', a!.scrypt)).toBe(true);
    expect(await failure(['local-account', '@alice:hs.example', '--state-dir', dir], reader('one', 'two'))).toMatch(/differ/);
    const io = reader('kit pass 2', 'kit pass 2');
    await run(['local-account', '@alice:hs.example', '--state-dir', dir], io);
    expect(io.asked.map((x) => x.fromStdin)).toEqual([false, false]);
    expect(await checkPassword('kit pass 2', read()[0]!.scrypt)).toBe(true);
    expect(read()).toHaveLength(1);
    expect(await run(['list', '--state-dir', dir])).toContain('local account @alice:hs.example');
    await run(['local-account', '@alice:hs.example', '--remove', '--state-dir', dir]);
    expect(read()).toEqual([]);
    expect(await failure(['local-account', '@alice:hs.example', '--password-stdin', '--state-dir', dir], reader(''))).toMatch(/empty/);
  });
});

describe('authenticate-only mode keeps the kit\'s own tokens apart', () => {
  it('the host\'s token registry is tokens-host-local.json there, so tokens known from encrypt mode do not run as the bound account', async () => {
    const { mkdtempSync, existsSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { secretsPolicy, stateStores } = await import('../../../src/cli/security.ts');
    const { silentLogger } = await import('../../../src/log.ts');
    const dir = mkdtempSync(join(tmpdir(), 'trickle-amateur-tokens-'));
    const merged = { ...stateStores(dir, 'host', silentLogger()), ...secretsPolicy('host', dir, 'authenticate-only', silentLogger()) };
    merged.tokensStore!.save({ version: 1 });
    expect(existsSync(join(dir, 'tokens-host-local.json'))).toBe(true);
    expect(existsSync(join(dir, 'tokens-host.json'))).toBe(false);
    expect(secretsPolicy('host', dir, 'encrypt', silentLogger()).tokensStore).toBeUndefined();
  });
});
