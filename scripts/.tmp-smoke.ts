import { startEmulatedRadioPair } from '../src/modem/emulator/radio-pair.ts';
import { NativeModem } from '../src/modem/native/native-modem.ts';
import { openSerialLink } from '../src/link/serial.ts';
import { openRadioStack } from '../src/coap/radio-stack.ts';
import { createLogger } from '../src/log.ts';

const sf = Number(process.argv[2] ?? 7), bw = Number(process.argv[3] ?? 125000);
const pair = await startEmulatedRadioPair({ sf, bandwidthHz: bw });
const logger = createLogger({ level: 'warn' });
const start = async (device: string) => {
  const open = () => openSerialLink(device, { baudRate: 115200 });
  const link = await open();
  const modem = await NativeModem.start(link, { radio: pair.radioSettings, reopenLink: open });
  const bitrate = sf * bw / 2 ** sf * 4 / 5;
  return openRadioStack({ link, createModem: () => modem, baudRate: 115200, maxFrameLen: 255, radio: { region: process.argv[4] ?? 'none', freqHz: 869_525_000, sf, bandwidthHz: bw, codingRate: 5 }, maxBodyBytes: 1 << 20, logger });
};
const gw = await start(pair.gatewayDevice);
const host = await start(pair.hostDevice);
gw.onRequest(async (req) => ({ code: 69, payload: new Uint8Array(3000).fill(7) }));
const t0 = Date.now();
for (let i = 0; i < 3; i++) {
  const res = await host.request({ code: 2, options: [], payload: new Uint8Array(1000).fill(1) });
  console.log('response', res.code, res.payload.length, Date.now() - t0, 'ms');
}
console.log('medium', pair.medium.stats());
console.log('host modem', host.modem.stats());
await host.close(); await gw.close(); await pair.close();
