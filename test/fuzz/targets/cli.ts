/** `trickle frame explain` on arbitrary captures. */
import { TrickleError } from '../../../src/errors.ts';
import { explainFrame } from '../../../src/cli/frame-explain.ts';
import { encodeTransparentFrame } from '../../../src/modem/transparent/transparent-modem.ts';
import { encodeKissDataFrame } from '../../../src/modem/kiss/kiss.ts';
import { encodeAx25UiFrame } from '../../../src/modem/kiss/ax25.ts';
import { packFrame } from '../../../src/scheduler/packing.ts';
import { concatBytes, toHex } from '../../../src/util/bytes.ts';
import { check, type FuzzTarget } from '../engine.ts';
import { hex } from '../util.ts';
import { runScenario, scenario, observeScenario, handlesScenario } from '../../unit/coap/compact-scenario.ts';
import { sessionWorld } from './matrix.ts';

const MODES = [
  { security: 'authenticate-only', codec: 'compact' },
  { security: 'none', codec: 'compact' },
  { security: 'none', codec: 'rfc7252' },
  { security: 'encrypt', codec: 'compact' },
] as const;

/** What a capture would show around a message: an authenticate-only transport frame. */
const authFrame = (m: Uint8Array): Uint8Array => concatBytes(Uint8Array.of(0x05), m, new Uint8Array(16).fill(0xaa));

export const frameExplain: FuzzTarget = {
  name: 'frame-explain',
  description: 'explainFrame(hex) in four security/codec modes: returns text or throws a coded TrickleError, never anything else; the text stays proportional to the input',
  maxLen: 1024,
  cost: 3,
  slowMs: 100,
  dictionary: [Uint8Array.of(0xc0), Uint8Array.of(0xdb, 0xdc), Uint8Array.of(0xf0), Uint8Array.of(0xf1), Uint8Array.of(0x05), Uint8Array.of(0x83), Uint8Array.of(0x00, 0x40)],
  seeds() {
    const compact = [scenario(), observeScenario(), handlesScenario()].flatMap((s) => runScenario(s).steps.map((x) => hex(x.compact)));
    const w = sessionWorld();
    const rfc = [...w.requestMessages, ...w.responseMessages].filter((b) => b.length < 200);
    const ui = (info: Uint8Array): Uint8Array => encodeKissDataFrame(0, encodeAx25UiFrame({ destination: { callsign: 'TRICKL', ssid: 0 }, source: { callsign: 'N0CALL', ssid: 1 }, info }));
    return [
      ...compact.map(authFrame), ...compact.slice(0, 10),
      ...compact.slice(0, 10).map((c) => encodeTransparentFrame(authFrame(c))), ...compact.slice(10, 16).map((c) => ui(authFrame(c))),
      packFrame([authFrame(compact[0]!), authFrame(compact[2]!)]), ...rfc.slice(0, 12), ...rfc.slice(0, 6).map(authFrame),
    ];
  },
  run(input) {
    const outcomes: string[] = [];
    for (const m of MODES) {
      let text: string;
      try {
        text = explainFrame(toHex(input), m);
      } catch (e) {
        if (e instanceof TrickleError && e.code.startsWith('ERR_')) { outcomes.push(e.code); continue; }
        throw e;
      }
      check(typeof text === 'string' && text.length > 0, 'no text');
      check(text.length <= 200 * input.length + 4096, () => `${text.length} characters of explanation for ${input.length} bytes (${m.security}/${m.codec})`);
      outcomes.push(text.includes('cannot decode') ? 'partial' : 'ok');
    }
    return outcomes.join(',');
  },
};

export const CLI_TARGETS: readonly FuzzTarget[] = [frameExplain];
