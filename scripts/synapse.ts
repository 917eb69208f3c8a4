/**
 * A throwaway Synapse homeserver for tests, the demo and the benches.
 *
 * `startSynapse()` installs matrix-synapse into a cached virtualenv (scripts/synapse.sh),
 * writes a SQLite config bound to 127.0.0.1 on a free port (registration by shared secret,
 * rate limits loosened for tests), starts it, waits until /_matrix/client/versions answers,
 * and returns a handle that registers users and stops the server cleanly.
 *
 * Run directly: `tsx scripts/synapse.ts` starts one and prints its URL until Ctrl-C.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));

export interface SynapseHandle {
  baseUrl: string;
  serverName: string;
  dir: string;
  registerUser(localpart: string, password: string, admin?: boolean): Promise<{ userId: string; accessToken: string }>;
  stop(): Promise<void>;
  /** The last lines of the homeserver log, for failing tests. */
  logTail(lines?: number): string;
}

export class SynapseUnavailableError extends Error {
  constructor(message: string) { super(message); this.name = 'SynapseUnavailableError'; }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Install (once, cached) and return the virtualenv path. */
export async function installSynapse(): Promise<string> {
  try {
    const { stdout } = await execFileP('bash', [join(here, 'synapse.sh'), 'install'], { maxBuffer: 1 << 20, timeout: 900_000 });
    const lines = stdout.trim().split('\n');
    return lines[lines.length - 1]!;
  } catch (e) {
    const err = e as { code?: number; stderr?: string };
    if (err.code === 3) throw new SynapseUnavailableError(err.stderr?.trim() ?? 'python3 is missing');
    throw new SynapseUnavailableError(`installing matrix-synapse failed: ${err.stderr?.trim() ?? String(e)}`);
  }
}

function config(dir: string, port: number, secret: string): string {
  const rc = (n: number) => `{per_second: ${n}, burst_count: ${n}}`;
  return `# written by trickle scripts/synapse.ts for a throwaway test homeserver
server_name: "localhost"
pid_file: ${dir}/homeserver.pid
public_baseurl: http://127.0.0.1:${port}/
listeners:
  - port: ${port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: ${dir}/homeserver.db
log_config: ${dir}/log.yaml
media_store_path: ${dir}/media_store
signing_key_path: ${dir}/signing.key
registration_shared_secret: "${secret}"
enable_registration: false
report_stats: false
macaroon_secret_key: "${randomBytes(16).toString('hex')}"
form_secret: "${randomBytes(16).toString('hex')}"
trusted_key_servers: []
suppress_key_server_warning: true
presence:
  enabled: false
url_preview_enabled: false
rc_message: ${rc(10000)}
rc_registration: ${rc(10000)}
rc_joins:
  local: ${rc(10000)}
  remote: ${rc(10000)}
rc_invites:
  per_room: ${rc(10000)}
  per_user: ${rc(10000)}
  per_issuer: ${rc(10000)}
rc_login:
  address: ${rc(10000)}
  account: ${rc(10000)}
  failed_attempts: ${rc(10000)}
rc_admin_redaction: ${rc(10000)}
rc_room_creation: ${rc(10000)}
`;
}

const LOG_CONFIG = (dir: string) => `version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: ${dir}/homeserver.log
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
`;

export async function startSynapse(opts: { startTimeoutMs?: number } = {}): Promise<SynapseHandle> {
  const venv = await installSynapse();
  const python = join(venv, 'bin', 'python');
  const dir = mkdtempSync(join(tmpdir(), 'trickle-synapse-'));
  const port = await freePort();
  const secret = randomBytes(16).toString('hex');
  const cfgPath = join(dir, 'homeserver.yaml');
  writeFileSync(cfgPath, config(dir, port, secret));
  writeFileSync(join(dir, 'log.yaml'), LOG_CONFIG(dir));
  await execFileP(python, ['-m', 'synapse.app.homeserver', '-c', cfgPath, '--generate-keys'], { cwd: dir, timeout: 120_000 });

  const child: ChildProcess = spawn(python, ['-m', 'synapse.app.homeserver', '-c', cfgPath], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: false,
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-8000); });
  let exited: number | null = null;
  child.on('exit', (code) => { exited = code ?? -1; });

  const baseUrl = `http://127.0.0.1:${port}`;
  const logTail = (lines = 30): string => {
    const p = join(dir, 'homeserver.log');
    const text = existsSync(p) ? readFileSync(p, 'utf8') : '';
    return (text + '\n' + stderr).split('\n').slice(-lines).join('\n');
  };
  const deadline = Date.now() + (opts.startTimeoutMs ?? 120_000);
  for (;;) {
    if (exited !== null) throw new SynapseUnavailableError(`synapse exited with ${exited} while starting:\n${logTail()}`);
    try {
      const r = await fetch(`${baseUrl}/_matrix/client/versions`);
      if (r.ok) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new SynapseUnavailableError(`synapse did not answer on ${baseUrl} in time:\n${logTail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  const handle: SynapseHandle = {
    baseUrl,
    serverName: 'localhost',
    dir,
    logTail,
    async registerUser(localpart, password, admin = false) {
      const url = `${baseUrl}/_synapse/admin/v1/register`;
      const { nonce } = (await (await fetch(url)).json()) as { nonce: string };
      const mac = createHmac('sha1', secret)
        .update(nonce).update('\x00').update(localpart).update('\x00').update(password).update('\x00')
        .update(admin ? 'admin' : 'notadmin')
        .digest('hex');
      const r = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ nonce, username: localpart, password, admin, mac }),
      });
      const body = (await r.json()) as { user_id?: string; access_token?: string; error?: string };
      if (!r.ok || !body.user_id || !body.access_token) throw new Error(`register ${localpart} failed: ${r.status} ${JSON.stringify(body)}`);
      return { userId: body.user_id, accessToken: body.access_token };
    },
    async stop() {
      if (exited === null) {
        const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await done;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return handle;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const hs = await startSynapse();
  process.stdout.write(`synapse running at ${hs.baseUrl} (config in ${hs.dir}); Ctrl-C stops it\n`);
  const stop = () => { void hs.stop().then(() => process.exit(0)); };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
