/**
 * Emulated Trickle-firmware boards on real ttys, for the demo and the hardware-in-the-loop
 * tests:
 *
 *   NativeModem ⇄ <dir>/host —socat— <dir>/host.emu ⇄ EmulatedModem ~~ RfMedium ~~ EmulatedModem ⇄ <dir>/gateway.emu —socat— <dir>/gateway ⇄ NativeModem
 *
 * The apps open `hostDevice` / `gatewayDevice` exactly as they would open /dev/ttyACM0 on a
 * real board (serialport, flock, termios), so the demo exercises the same code path.
 */
import type { PtyPair } from '../../link/pty.ts';
import type { Clock } from '../../util/clock.ts';
import type { NativeRadioSettings } from '../native/native-modem.ts';
import { NATIVE_RADIO_DEFAULTS } from '../native/native-modem.ts';
import { EmulatedModem, type EmulatedModemOptions } from './emulated-modem.ts';
import { servePtyDevice } from './pty-device.ts';
import { RfMedium, type RfMediumOptions } from './rf-medium.ts';

export interface EmulatedDevice {
  /** Path the host application opens (a symlink to a /dev/pts device). */
  readonly devicePath: string;
  readonly modem: EmulatedModem;
  /** The current PTY pair (replaced by `replug`). */
  readonly pty: PtyPair;
  /** Pull the cable: socat exits, both ttys hang up (EIO), the symlinks disappear. */
  unplug(): Promise<void>;
  /** Plug it back in at the same path; the emulated board reboots (USB power cycle). */
  replug(): Promise<void>;
  close(): Promise<void>;
}

export interface EmulatedDeviceOptions extends EmulatedModemOptions {
  /** Directory for the symlinks (default: a fresh temporary directory, removed on close). */
  dir?: string;
}

/** One emulated board on `medium`, reachable at `devicePath`. */
export async function startEmulatedDevice(medium: RfMedium, options: EmulatedDeviceOptions): Promise<EmulatedDevice> {
  const { dir, ...modemOptions } = options;
  const modem = new EmulatedModem(medium, modemOptions);
  const dev = await servePtyDevice(options.name, modem, dir !== undefined ? { dir } : {});
  return {
    devicePath: dev.devicePath,
    modem,
    get pty(): PtyPair { return dev.pty; },
    unplug: () => dev.unplug(),
    replug: () => dev.replug(),
    close: () => dev.close(),
  };
}

export interface EmulatedRadioPairOptions {
  /** Settings both sides should configure (returned as `radioSettings` for NativeModem). */
  sf?: number;
  bandwidthHz?: number;
  codingRate?: number;
  frequencyHz?: number;
  txPowerDbm?: number;
  /** Distance between the two boards (default 1000 m). */
  distanceM?: number;
  /** Random loss per frame and receiver (default 0). */
  lossRate?: number;
  capture?: RfMediumOptions['capture'];
  seed?: number;
  clock?: Clock;
  /** Use this medium (e.g. to add more boards); default a new one from the options above. */
  medium?: RfMedium;
  /** Extra options per board (misreport, chip, …). */
  host?: Partial<EmulatedModemOptions>;
  gateway?: Partial<EmulatedModemOptions>;
}

export interface EmulatedRadioPair {
  /** tty path for `trickle host` (open with NativeModem / openNativeModem). */
  hostDevice: string;
  /** tty path for `trickle gateway`. */
  gatewayDevice: string;
  medium: RfMedium;
  host: EmulatedDevice;
  gateway: EmulatedDevice;
  /** The settings both apps should ask for (NativeModemOptions.radio). */
  radioSettings: NativeRadioSettings;
  close(): Promise<void>;
}

/**
 * Two emulated boards `distanceM` apart on one medium, each behind its own PTY pair.
 * Defaults: 869.525 MHz (EU868 g3 sub-band), SF7, 125 kHz, 4/5, 14 dBm, 1 km, no random loss.
 */
export async function startEmulatedRadioPair(options: EmulatedRadioPairOptions = {}): Promise<EmulatedRadioPair> {
  const medium = options.medium ?? new RfMedium({
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.seed !== undefined ? { seed: options.seed } : {}),
    lossRate: options.lossRate ?? 0,
    ...(options.capture !== undefined ? { capture: options.capture } : {}),
  });
  const distanceM = options.distanceM ?? 1_000;
  const radioSettings: NativeRadioSettings = {
    ...NATIVE_RADIO_DEFAULTS,
    frequencyHz: options.frequencyHz ?? 869_525_000,
    bandwidthHz: options.bandwidthHz ?? 125_000,
    sf: options.sf ?? 7,
    codingRate: options.codingRate ?? NATIVE_RADIO_DEFAULTS.codingRate,
    txPowerDbm: options.txPowerDbm ?? NATIVE_RADIO_DEFAULTS.txPowerDbm,
  };
  const host = await startEmulatedDevice(medium, {
    name: 'host', positionM: { xM: 0, yM: 0 }, crystalPpm: 2, ...options.host,
  });
  let gateway: EmulatedDevice;
  try {
    gateway = await startEmulatedDevice(medium, {
      name: 'gateway', positionM: { xM: distanceM, yM: 0 }, crystalPpm: -3, ...options.gateway,
    });
  } catch (e) {
    await host.close();
    throw e;
  }
  return {
    hostDevice: host.devicePath,
    gatewayDevice: gateway.devicePath,
    medium, host, gateway, radioSettings,
    close: async () => { await Promise.all([host.close(), gateway.close()]); },
  };
}
