/**
 * CoAP over a modem: the composition every app uses (link → modem → CoAP endpoint).
 * The scheduler (duty cycle) and the security layer slot in between `modem.send` and the
 * endpoint's `send`, and between `modem.onFrame` and `endpoint.receive`.
 */
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import type { Logger } from '../log.ts';
import { systemClock, type Clock, type RandomBytes } from '../util/clock.ts';
import { toHex } from '../util/bytes.ts';
import { openSerialLink } from '../link/serial.ts';
import type { Link } from '../link/link.ts';
import type { Modem } from '../modem/modem.ts';
import { TransparentModem } from '../modem/transparent/transparent-modem.ts';
import { CoapEndpoint } from './endpoint.ts';

export interface RadioStackOptions {
  device?: string;
  /** Use this link instead of opening `device` (tests, KISS over TCP). */
  link?: Link;
  /** Build the modem dialect on the link (default: the transparent serial radio). */
  createModem?: (link: Link) => Modem;
  baudRate: number;
  maxFrameLen: number;
  /** Over-the-air data rate of the radio in bit/s; sizes the retransmission timers. */
  airBitrateBps: number;
  maxBodyBytes: number;
  logger: Logger;
  clock?: Clock;
  randomBytes?: RandomBytes;
}

export interface FrameRecord {
  direction: 'tx' | 'rx';
  /** The CoAP message as handed to / received from the modem. */
  compactBytes: number;
  /** What the modem wrote / read on the serial line for it, framing included. */
  wireBytes: number;
  /** Token of the CoAP message, hex ('' for empty messages). */
  tokenHex: string;
  /** CoAP type (0 CON, 1 NON, 2 ACK, 3 RST) and message id, for attributing empty ACKs. */
  type: number;
  mid: number;
}

export interface RadioStack {
  link: Link;
  modem: Modem;
  endpoint: CoapEndpoint;
  onFrameRecord(listener: (rec: FrameRecord) => void): void;
  status(): Record<string, unknown>;
  close(): Promise<void>;
}

/** Type, message id and token of a CoAP message in RFC 7252 layout (§3), without a full decode. */
function peekHeader(frame: Uint8Array): { type: number; mid: number; tokenHex: string } {
  const b0 = frame[0] ?? 0;
  const tkl = b0 & 0x0f;
  const mid = ((frame[2] ?? 0) << 8) | (frame[3] ?? 0);
  const tokenHex = tkl === 0 || tkl > 8 || frame.length < 4 + tkl ? '' : toHex(frame.subarray(4, 4 + tkl));
  return { type: (b0 >> 4) & 0x03, mid, tokenHex };
}

/**
 * Retransmission timeout for a CON of `frameLen` bytes: the request's airtime, the
 * response's airtime (a full frame, the worst case) and processing time at the peer.
 * Never CoAP's fixed 2 s default: on a 300 bit/s link a full frame alone takes ~7 s.
 */
export function ackTimeoutForBitrate(airBitrateBps: number, maxFrameLen: number): (frameLen: number) => number {
  const perByteMs = 8_000 / airBitrateBps;
  return (frameLen) => Math.ceil((frameLen + maxFrameLen + 16) * perByteMs * 1.25 + 250);
}

export async function openRadioStack(opts: RadioStackOptions): Promise<RadioStack> {
  const log = opts.logger.child({ component: 'radio' });
  const link = opts.link ?? await openSerialLink(opts.device ?? '', { baudRate: opts.baudRate });
  const modem = opts.createModem ? opts.createModem(link) : new TransparentModem(link, { maxFrameLen: opts.maxFrameLen });
  const wireBytesOf = (frame: Uint8Array): number => { const o = modem.framingOverhead(frame); return frame.length + o.onAir + o.serial; };
  const listeners: ((rec: FrameRecord) => void)[] = [];
  const emit = (rec: FrameRecord) => { for (const l of listeners) l(rec); };
  let sendErrors = 0;

  const endpoint = new CoapEndpoint({
    clock: opts.clock ?? systemClock,
    randomBytes: opts.randomBytes ?? ((n) => new Uint8Array(nodeRandomBytes(n))),
    maxFrameLen: opts.maxFrameLen,
    ackTimeoutMs: ackTimeoutForBitrate(opts.airBitrateBps, opts.maxFrameLen),
    maxBodyBytes: opts.maxBodyBytes,
    send: (frame) => {
      emit({ direction: 'tx', compactBytes: frame.length, wireBytes: wireBytesOf(frame), ...peekHeader(frame) });
      modem.send(frame).catch((e: unknown) => {
        sendErrors++;
        log.warn({ code: (e as { code?: string }).code, len: frame.length, err: (e as Error).message }, 'frame not sent');
      });
    },
  });
  modem.onFrame((frame) => {
    emit({ direction: 'rx', compactBytes: frame.length, wireBytes: wireBytesOf(frame), ...peekHeader(frame) });
    endpoint.receive(frame);
  });
  modem.onDrop((code, detail) => log.warn({ code, ...detail }, 'frame dropped'));
  endpoint.onDrop((d) => log.warn({ code: d.reason, len: d.frameLen, err: d.error?.message }, 'CoAP message dropped'));
  modem.onClose((err) => {
    if (err) log.error({ code: (err as { code?: string }).code, port: link.name, err: err.message }, 'serial device closed');
  });

  return {
    link, modem, endpoint,
    onFrameRecord: (l) => { listeners.push(l); },
    status: () => ({ device: link.name, dialect: modem.dialect, modem: modem.stats(), coap: endpoint.stats(), sendErrors }),
    async close() {
      endpoint.close();
      await modem.close();
    },
  };
}
