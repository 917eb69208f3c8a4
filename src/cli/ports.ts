/**
 * `trickle ports`: which serial devices are there, and which modem dialect answers on each.
 *
 * Listing: serialport's `SerialPort.list()` (udev on Linux), /dev/serial/by-id/* and
 * /dev/ttyUSB*, /dev/ttyACM*, merged by the device they resolve to; on Linux the USB vendor
 * and product ids also come from sysfs, so the list works where udevadm is missing.
 * PTYs are never listed: name them with `--device PATH` (repeatable), which probes exactly
 * the paths given.
 *
 * Probing (probePort) opens each device with the same flock as the apps (a device another
 * Trickle or serialport user holds is reported busy and not touched), sends read-only
 * queries, and closes it again. The queries are chosen so that no dialect reads one of them
 * as a setting:
 *
 *   1. Meshtastic: 0x08, 32 × 0xC3 (wake), ToRadio{want_config_id}. A KISS TNC or an RNode
 *      sees bytes outside a frame; should a KISS TNC be mid-frame, the frame's type byte is
 *      0x08, which no KISS command uses (KISS: 0–6 and 0xFF), and the bytes hold no FEND/FESC.
 *   2. RNode: FEND CMD_DETECT(0x08) DETECT_REQ FEND. KISS: port 0, command 8, undefined and
 *      ignored; native firmware: a frame with a bad FCS, dropped.
 *   3. Native: PING(nonce) (type 0x08 again, answered by PONG). An RNode takes it for a
 *      CMD_DETECT whose byte is not DETECT_REQ and ignores it; KISS ignores command 8.
 *
 * Only once a dialect has answered does the probe ask for more, in that dialect only:
 * native HELLO → VERSION and GET_CAPABILITIES (HELLO's type byte 0x01 is KISS TXDELAY and
 * RNode CMD_FREQUENCY, so it is never sent blind); RNode CMD_FW_VERSION, CMD_PLATFORM,
 * CMD_MCU queries (0x50 is a KISS data frame for port 5, so never sent blind either);
 * Meshtastic: the config stream up to config_complete_id, then ToRadio{disconnect}.
 * No SET command is sent to anything.
 *
 * A KISS TNC and a transparent radio answer none of this: "no answer". A transparent radio
 * TRANSMITS whatever is written to it, so probing one puts these ~60 bytes on air once
 * (`--no-probe` lists without opening anything).
 */
import { access, readdir, readFile, realpath } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { delimiter, join, basename, dirname } from 'node:path';
import { ConfigError, isTrickleError } from '../errors.ts';
import type { Link } from '../link/link.ts';
import { openSerialLink } from '../link/serial.ts';
import { encodeNativeFrame, nativeMessage, NativeDeframer } from '../modem/native/codec.ts';
import { CHIP_NAMES, MessageType, NATIVE_ERROR_CODE_NAMES, PROTOCOL_VERSION, type NativeMessage } from '../modem/native/protocol-generated.ts';
import { DETECT_REQ, DETECT_RESP, RNodeCmd, RNodeDecoder, encodeRNodeFrame } from '../modem/rnode/rnode-protocol.ts';
import { START2, StreamDecoder, WAKE_BYTES, decodeFromRadio, encodeStreamFrame, encodeToRadio } from '../modem/meshtastic/meshtastic-protocol.ts';
import { ProtoMessage } from '../modem/meshtastic/protobuf.ts';
import { utf8 } from '../util/bytes.ts';
import { parseFlags } from './args.ts';
import { FIRMWARE_DEFAULT_BAUD_RATE } from './modem-options.ts';

/** A serial device found by listing. */
export interface SerialDeviceInfo {
  /** The device node (e.g. /dev/ttyUSB0), or the path as given with --device. */
  path: string;
  /** Other names of the same device (/dev/serial/by-id/…): stable across replugging. */
  aliases: string[];
  /** USB ids as 4 hex digits, when known. */
  vendorId?: string;
  productId?: string;
  manufacturer?: string;
  product?: string;
  serialNumber?: string;
}

export type ProbeAnswer = 'native' | 'rnode' | 'meshtastic' | 'none' | 'busy' | 'error' | 'not-probed';

export interface ProbeResult {
  path: string;
  answer: ProbeAnswer;
  /** Firmware and version as the device reported them. */
  firmware?: string;
  /** What answered, or why nothing did, in words. */
  detail: string;
  /** The `--modem` value to use with this device, when a dialect answered. */
  modem?: 'native' | 'rnode' | 'meshtastic';
  /** The error code when the device could not be opened. */
  code?: string;
}

export interface ProbeOptions {
  /** How long to wait for the first answer, and for each follow-up query. Default 1500 ms. */
  timeoutMs?: number;
  /** Line speed; irrelevant for USB CDC and PTYs. Default 115200 (RNode, Meshtastic, Trickle firmware). */
  baudRate?: number;
}

export const DEFAULT_PROBE_TIMEOUT_MS = 1_500;

/** PING nonce: its first byte (LE) is not DETECT_REQ, so an RNode ignores the frame. */
const PING_NONCE = 0x5452_4b4c;
/** want_config_id: its varint holds no 0xC0 / 0xDB (see the module comment). */
const CONFIG_NONCE = 0x002a_2a2a;
/** KISS command 8 (undefined), also native PING's type; first byte of the Meshtastic probe. */
const KISS_UNUSED_COMMAND = 0x08;

/** The bytes of the first, blind round of probes, in the order they are written. */
export function blindProbeBytes(): Uint8Array {
  const mesh = encodeStreamFrame(encodeToRadio({ wantConfigId: CONFIG_NONCE }));
  const parts = [
    Uint8Array.of(KISS_UNUSED_COMMAND), new Uint8Array(WAKE_BYTES).fill(START2), mesh,
    encodeRNodeFrame(RNodeCmd.DETECT, Uint8Array.of(DETECT_REQ)),
    encodeNativeFrame(nativeMessage('PING', { nonce: PING_NONCE })),
  ];
  return Buffer.concat(parts);
}

const RNODE_PLATFORMS: Readonly<Record<number, string>> = { 0x70: 'nRF52', 0x80: 'ESP32', 0x90: 'AVR' };
const RNODE_MCUS: Readonly<Record<number, string>> = { 0x71: 'nRF52840', 0x81: 'ESP32', 0x91: 'ATmega1284P', 0x92: 'ATmega2560' };

function hexByte(b: number): string { return `0x${b.toString(16).padStart(2, '0')}`; }

/** Waits for the first value a predicate picks from incoming events, with a timeout. */
class Inbox<T> {
  private readonly items: T[] = [];
  private waiter: { pick: (t: T) => boolean; resolve: (t: T | undefined) => void } | undefined;

  push(item: T): void {
    if (this.waiter?.pick(item)) { const w = this.waiter; this.waiter = undefined; w.resolve(item); return; }
    this.items.push(item);
  }

  next(pick: (t: T) => boolean, timeoutMs: number): Promise<T | undefined> {
    const i = this.items.findIndex(pick);
    if (i >= 0) return Promise.resolve(this.items.splice(i, 1)[0]);
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.waiter = undefined; resolve(undefined); }, timeoutMs);
      this.waiter = { pick, resolve: (t) => { clearTimeout(timer); resolve(t); } };
    });
  }
}

type Heard =
  | { kind: 'native'; msg: NativeMessage }
  | { kind: 'rnode'; cmd: number; data: Uint8Array }
  | { kind: 'meshtastic'; fromRadio: ReturnType<typeof decodeFromRadio>; raw: Uint8Array };

/**
 * Open `path`, find out which dialect answers, close it. Never throws for a device problem:
 * a busy device is `busy` (not probed), an open failure is `error` with the link's message.
 */
export async function probePort(path: string, options: ProbeOptions = {}): Promise<ProbeResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  let link: Link;
  try {
    link = await openSerialLink(path, { baudRate: options.baudRate ?? FIRMWARE_DEFAULT_BAUD_RATE });
  } catch (e) {
    if (isTrickleError(e, 'ERR_LINK_BUSY')) {
      return { path, answer: 'busy', code: e.code, detail: 'in use by another program (it holds the port lock); not probed' };
    }
    return { path, answer: 'error', code: isTrickleError(e) ? e.code : 'ERR_LINK_OPEN', detail: (e as Error).message };
  }
  const inbox = new Inbox<Heard>();
  const native = new NativeDeframer();
  const rnode = new RNodeDecoder();
  const mesh = new StreamDecoder();
  link.onData((chunk) => {
    // Every decoder sees every byte; each keeps only what is well-formed in its own dialect.
    for (const msg of native.push(chunk).messages) inbox.push({ kind: 'native', msg });
    for (const f of rnode.push(chunk).frames) inbox.push({ kind: 'rnode', cmd: f.cmd, data: f.data });
    for (const raw of mesh.push(chunk).packets) {
      try { inbox.push({ kind: 'meshtastic', fromRadio: decodeFromRadio(raw), raw }); } catch { /* not a FromRadio */ }
    }
  });
  let closed: Error | undefined;
  link.onClose((err) => { closed = err ?? new Error('closed'); });
  try {
    await link.write(blindProbeBytes());
    const first = await inbox.next((h) =>
      h.kind === 'native' ||
      (h.kind === 'rnode' && h.cmd === RNodeCmd.DETECT && h.data.length === 1 && h.data[0] === DETECT_RESP) ||
      (h.kind === 'meshtastic' && (h.fromRadio.variant.kind === 'myInfo' || h.fromRadio.variant.kind === 'configCompleteId')), timeoutMs);
    if (closed) return { path, answer: 'error', code: 'ERR_LINK_IO', detail: `the device went away while probing: ${closed.message}` };
    if (first === undefined) {
      return { path, answer: 'none', detail: 'no answer: could be a transparent radio or a KISS TNC (or a board still booting)' };
    }
    switch (first.kind) {
      case 'native': return await followNative(path, link, inbox, timeoutMs);
      case 'rnode': return await followRNode(path, link, inbox, timeoutMs);
      case 'meshtastic': return await followMeshtastic(path, link, inbox, first, timeoutMs);
    }
  } catch (e) {
    return { path, answer: 'error', code: isTrickleError(e) ? e.code : 'ERR_LINK_IO', detail: (e as Error).message };
  } finally {
    await link.close();
  }
}

async function followNative(path: string, link: Link, inbox: Inbox<Heard>, timeoutMs: number): Promise<ProbeResult> {
  const result: ProbeResult = { path, answer: 'native', modem: 'native', detail: 'Trickle firmware (native protocol)' };
  const ask = async (msg: NativeMessage, reply: NativeMessage['name']): Promise<NativeMessage | undefined> => {
    await link.write(encodeNativeFrame(msg));
    // An ERROR counts only if it names this command: the blind probes may have drawn BAD_FRAME errors.
    const h = await inbox.next((x) => x.kind === 'native' &&
      (x.msg.name === reply || (x.msg.name === 'ERROR' && x.msg.command === MessageType[msg.name])), timeoutMs);
    return h?.kind === 'native' ? h.msg : undefined;
  };
  const version = await ask(nativeMessage('HELLO', { minVersion: 1, maxVersion: PROTOCOL_VERSION }), 'VERSION');
  if (version?.name === 'VERSION') {
    result.firmware = `${version.firmwareName} ${version.firmwareMajor}.${version.firmwareMinor}.${version.firmwarePatch}`;
    result.detail = `Trickle firmware, protocol v${version.protocolVersion}, ${CHIP_NAMES[version.chip] ?? `chip ${version.chip}`}`;
  } else if (version?.name === 'ERROR') {
    result.detail = `Trickle firmware that refuses protocol v1..${PROTOCOL_VERSION}: ` +
      `${NATIVE_ERROR_CODE_NAMES[version.code] ?? version.code} ${version.message}`.trim();
    return result;
  } else {
    result.detail = 'Trickle firmware (answered PING) but no VERSION to HELLO';
    return result;
  }
  const caps = await ask(nativeMessage('GET_CAPABILITIES', {}), 'CAPABILITIES');
  if (caps?.name === 'CAPABILITIES') {
    result.detail += `, ${caps.frequencyMinHz / 1e6}–${caps.frequencyMaxHz / 1e6} MHz, ${caps.txPowerMinDbm}..${caps.txPowerMaxDbm} dBm, ` +
      `frames up to ${caps.maxPayload} B`;
  }
  return result;
}

async function followRNode(path: string, link: Link, inbox: Inbox<Heard>, timeoutMs: number): Promise<ProbeResult> {
  const result: ProbeResult = { path, answer: 'rnode', modem: 'rnode', detail: 'RNode firmware' };
  const query = async (cmd: number): Promise<Uint8Array | undefined> => {
    await link.write(encodeRNodeFrame(cmd, Uint8Array.of(0x00)));
    const h = await inbox.next((x) => x.kind === 'rnode' && x.cmd === cmd, timeoutMs);
    return h?.kind === 'rnode' ? h.data : undefined;
  };
  const fw = await query(RNodeCmd.FW_VERSION);
  if (fw?.length === 2) result.firmware = `RNode ${fw[0]}.${String(fw[1]).padStart(2, '0')}`;
  const platform = await query(RNodeCmd.PLATFORM);
  const mcu = await query(RNodeCmd.MCU);
  const parts = [
    platform?.length === 1 ? `platform ${RNODE_PLATFORMS[platform[0]!] ?? hexByte(platform[0]!)}` : undefined,
    mcu?.length === 1 ? `MCU ${RNODE_MCUS[mcu[0]!] ?? hexByte(mcu[0]!)}` : undefined,
  ].filter((p) => p !== undefined);
  if (parts.length > 0) result.detail += `, ${parts.join(', ')}`;
  return result;
}

async function followMeshtastic(path: string, link: Link, inbox: Inbox<Heard>, first: Heard, timeoutMs: number): Promise<ProbeResult> {
  const result: ProbeResult = { path, answer: 'meshtastic', modem: 'meshtastic', detail: 'Meshtastic node' };
  let nodeNum: number | undefined;
  let firmware: string | undefined;
  const take = (h: Heard): boolean => {
    if (h.kind !== 'meshtastic') return false;
    const v = h.fromRadio.variant;
    if (v.kind === 'myInfo') nodeNum = v.myNodeNum;
    if (v.kind === 'other' && v.field === 13) {
      // FromRadio.metadata (13) = DeviceMetadata, whose field 1 is firmware_version (a string).
      try {
        const meta = new ProtoMessage(new ProtoMessage(h.raw, 'FromRadio').bytes(13) ?? new Uint8Array(0), 'DeviceMetadata').bytes(1);
        if (meta) firmware = utf8.decode(meta);
      } catch { /* leave it unknown */ }
    }
    return v.kind === 'configCompleteId' && v.configCompleteId === CONFIG_NONCE;
  };
  let done = take(first);
  while (!done) {
    const h = await inbox.next((x) => x.kind === 'meshtastic', timeoutMs);
    if (h === undefined) break;
    done = take(h);
  }
  // The official clients say goodbye so the node leaves API mode; nothing on air.
  await link.write(encodeStreamFrame(encodeToRadio({ disconnect: true })));
  if (nodeNum !== undefined) result.detail += ` !${(nodeNum >>> 0).toString(16).padStart(8, '0')}`;
  if (!done) result.detail += ' (config stream did not complete)';
  result.firmware = firmware === undefined ? 'Meshtastic' : `Meshtastic ${firmware}`;
  return result;
}

// -------------------------------------------------------------------------------------------
// Listing

async function exists(p: string, mode = fsConstants.F_OK): Promise<boolean> {
  try { await access(p, mode); return true; } catch { return false; }
}

/**
 * serialport's Linux list spawns `udevadm` without an 'error' listener: where udevadm is
 * missing (containers) the process would crash, so it is only called when udevadm is on PATH.
 */
async function commandOnPath(name: string): Promise<boolean> {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir && await exists(join(dir, name), fsConstants.X_OK)) return true;
  }
  return false;
}

async function readSysfs(dir: string, file: string): Promise<string | undefined> {
  try { return (await readFile(join(dir, file), 'utf8')).trim() || undefined; } catch { return undefined; }
}

/** USB ids of a tty from sysfs: walk up from /sys/class/tty/<name>/device to the USB device. */
async function sysfsUsbInfo(devPath: string): Promise<Partial<SerialDeviceInfo>> {
  let dir: string;
  try { dir = await realpath(`/sys/class/tty/${basename(devPath)}/device`); } catch { return {}; }
  for (let i = 0; i < 4 && dir !== '/'; i++, dir = dirname(dir)) {
    const vendorId = await readSysfs(dir, 'idVendor');
    if (vendorId === undefined) continue;
    const info: Partial<SerialDeviceInfo> = { vendorId };
    for (const [key, file] of [['productId', 'idProduct'], ['manufacturer', 'manufacturer'], ['product', 'product'], ['serialNumber', 'serial']] as const) {
      const v = await readSysfs(dir, file);
      if (v !== undefined) info[key] = v;
    }
    return info;
  }
  return {};
}

export interface ListOptions {
  /** serialport's list (injectable for tests); default `SerialPort.list` when it can run. */
  listPorts?: () => Promise<{ path: string; manufacturer?: string | undefined; serialNumber?: string | undefined; vendorId?: string | undefined; productId?: string | undefined }[]>;
  /** Where to look for device nodes. Default /dev. */
  devDir?: string;
}

/** Serial devices on this machine, one entry per device, by-id names as aliases. */
export async function listSerialDevices(options: ListOptions = {}): Promise<SerialDeviceInfo[]> {
  const devDir = options.devDir ?? '/dev';
  const byReal = new Map<string, SerialDeviceInfo>();
  const add = async (path: string, extra: Partial<SerialDeviceInfo> = {}): Promise<void> => {
    let real: string;
    try { real = await realpath(path); } catch { return; }
    let entry = byReal.get(real);
    if (!entry) { entry = { path: real, aliases: [] }; byReal.set(real, entry); }
    if (path !== real && !entry.aliases.includes(path)) entry.aliases.push(path);
    for (const [k, v] of Object.entries(extra)) {
      if (v !== undefined && k !== 'path' && k !== 'aliases' && (entry as unknown as Record<string, unknown>)[k] === undefined) {
        (entry as unknown as Record<string, unknown>)[k] = v;
      }
    }
  };

  let listPorts = options.listPorts;
  if (!listPorts && (process.platform !== 'linux' || await commandOnPath('udevadm'))) {
    listPorts = async () => (await import('serialport')).SerialPort.list();
  }
  if (listPorts) {
    try {
      for (const p of await listPorts()) {
        await add(p.path, {
          ...(p.vendorId ? { vendorId: p.vendorId.toLowerCase() } : {}), ...(p.productId ? { productId: p.productId.toLowerCase() } : {}),
          ...(p.manufacturer ? { manufacturer: p.manufacturer } : {}), ...(p.serialNumber ? { serialNumber: p.serialNumber } : {}),
        });
      }
    } catch { /* fall back to the device nodes below */ }
  }
  const byIdDir = join(devDir, 'serial', 'by-id');
  for (const name of await readdir(byIdDir).catch(() => [] as string[])) await add(join(byIdDir, name));
  for (const name of await readdir(devDir).catch(() => [] as string[])) {
    if (/^tty(USB|ACM)\d+$/.test(name)) await add(join(devDir, name));
  }
  const out = [...byReal.values()].sort((a, b) => a.path.localeCompare(b.path, 'en', { numeric: true }));
  if (process.platform === 'linux') {
    for (const d of out) if (d.vendorId === undefined) Object.assign(d, await sysfsUsbInfo(d.path));
  }
  return out;
}

// -------------------------------------------------------------------------------------------
// The command

export const PORTS_USAGE = `usage: trickle ports [--json] [--probe-timeout-ms N] [--no-probe] [--device PATH]…
  lists serial devices (serialport, /dev/serial/by-id, /dev/ttyUSB*, /dev/ttyACM*) and asks each
  which modem dialect it speaks: Trickle firmware (native), RNode, Meshtastic. Probes are
  read-only and the port is closed again; a port another program holds is skipped.
  A KISS TNC or a transparent radio does not answer; a transparent radio transmits the probe
  bytes (about 60), so use --no-probe near a radio whose channel you must keep quiet.
  --device PATH        probe this device instead of listing (repeatable; PTYs, unusual names)
  --probe-timeout-ms N wait this long for each answer (default ${DEFAULT_PROBE_TIMEOUT_MS}; 50-60000)
  --no-probe           list only, open nothing
  --json               one JSON array instead of the table`;

export interface PortsCommandOptions extends ListOptions {
  /** Replace listing entirely (tests). */
  list?: () => Promise<SerialDeviceInfo[]>;
}

function usbId(d: SerialDeviceInfo): string {
  const ids = d.vendorId && d.productId ? `${d.vendorId}:${d.productId}` : '';
  const name = [d.manufacturer, d.product].filter(Boolean).join(' ');
  return [ids, name].filter(Boolean).join(' ') || '-';
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_c, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

/** `trickle ports …`; returns the exit code (0, or 1 when a given --device could not be opened). */
export async function runPortsCommand(argv: string[], write: (s: string) => void, options: PortsCommandOptions = {}): Promise<number> {
  const { flags } = parseFlags(argv, {
    json: { type: 'boolean' }, 'no-probe': { type: 'boolean' }, 'probe-timeout-ms': { type: 'string' },
    device: { type: 'string', multiple: true }, help: { type: 'boolean', short: 'h' },
  }, PORTS_USAGE);
  if (flags['help']) { write(PORTS_USAGE); return 0; }
  const rawTimeout = flags['probe-timeout-ms'];
  let timeoutMs = DEFAULT_PROBE_TIMEOUT_MS;
  if (rawTimeout !== undefined) {
    timeoutMs = Number(rawTimeout);
    if (typeof rawTimeout !== 'string' || !/^\d+$/.test(rawTimeout) || timeoutMs < 50 || timeoutMs > 60_000) {
      throw new ConfigError(`--probe-timeout-ms must be an integer number of milliseconds from 50 to 60000, got ${JSON.stringify(rawTimeout)}`,
        { key: 'probe-timeout-ms', value: rawTimeout });
    }
  }
  const given = (flags as Record<string, unknown>)['device'] as string[] | undefined;
  const devices: SerialDeviceInfo[] = given && given.length > 0
    ? given.map((path) => ({ path, aliases: [] }))
    : await (options.list ?? (() => listSerialDevices(options)))();
  const results: ProbeResult[] = flags['no-probe']
    ? devices.map((d) => ({ path: d.path, answer: 'not-probed', detail: 'not probed (--no-probe)' }))
    : await Promise.all(devices.map((d) => probePort(d.path, { timeoutMs })));

  if (flags['json']) {
    write(JSON.stringify(devices.map((d, i) => ({ ...d, ...results[i]! })), null, 2));
  } else if (devices.length === 0) {
    write('no serial devices found (looked at serialport\'s list, /dev/serial/by-id, /dev/ttyUSB*, /dev/ttyACM*); ' +
      'is the radio plugged in? For a PTY or an unusual name use --device PATH');
  } else {
    const rows = [['DEVICE', 'USB ID', 'ANSWER', 'FIRMWARE', 'NOTES']];
    devices.forEach((d, i) => {
      const r = results[i]!;
      const name = d.aliases[0] ? `${d.path} (${d.aliases[0]})` : d.path;
      const notes = r.modem ? `${r.detail}; use --modem ${r.modem} --device ${d.aliases[0] ?? d.path}` : r.detail;
      rows.push([name, usbId(d), r.answer === 'none' ? 'no answer' : r.answer, r.firmware ?? '-', notes]);
    });
    write(table(rows));
  }
  return given && results.some((r) => r.answer === 'error') ? 1 : 0;
}
