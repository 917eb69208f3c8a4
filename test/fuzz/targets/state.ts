/** Matrix session state read back from disk: HostSession / GatewaySession.importState on mutated JSON. */
import { TrickleError } from '../../../src/errors.ts';
import { decodeMessage } from '../../../src/coap/message.ts';
import { GatewaySession, HostSession } from '../../../src/matrix/session.ts';
import { check, expectCoded, type FuzzTarget } from '../engine.ts';
import { mutateJson, show, textOf } from '../util.ts';
import { FUZZ_MAX_BODY, REQUESTS, SESSION_ID, sessionStateSeeds, sessionWorld } from './matrix.ts';

const isState = (e: TrickleError): boolean => e.code === 'ERR_MATRIX_STATE';
const anyCoded = (e: TrickleError): boolean => e.code.startsWith('ERR_');

export const hostImport: FuzzTarget = {
  name: 'host-session-import',
  description: 'HostSession.importState on mutated state JSON: only ERR_MATRIX_STATE; an imported session encodes requests and decodes real responses with coded errors only, and its export imports again unchanged',
  maxLen: 16384,
  mutate: mutateJson,
  seeds() { return sessionStateSeeds().host; },
  run(input) {
    let st: unknown;
    try { st = JSON.parse(textOf(input)); } catch { return 'not-json'; }
    const h = new HostSession({ maxBodyBytes: FUZZ_MAX_BODY });
    const r = expectCoded(() => h.importState(st), isState);
    if (!r.ok) return r.outcome;
    const exported = JSON.parse(JSON.stringify(h.exportState())) as unknown;
    const h2 = new HostSession({ maxBodyBytes: FUZZ_MAX_BODY });
    const again = expectCoded(() => h2.importState(exported), isState);
    check(again.ok, () => `the host's export of an imported state does not import: ${again.ok ? '' : again.outcome}`);
    check(JSON.stringify(h2.exportState()) === JSON.stringify(exported), 'export → import → export changed the state');
    const w = sessionWorld();
    const outcomes: string[] = [];
    w.responseMessages.slice(-REQUESTS.length).forEach((bytes) => {
      const m = decodeMessage(bytes);
      const enc = expectCoded(() => h.encodeRequest(REQUESTS[m.mid % REQUESTS.length]!), anyCoded);
      if (!enc.ok) { outcomes.push(enc.outcome); return; }
      const d = expectCoded(() => h.decodeResponse({ code: m.code, options: m.options, payload: m.payload }, enc.value.sent), anyCoded);
      outcomes.push(d.ok ? d.value.kind : d.outcome);
    });
    return `ok:${[...new Set(outcomes)].sort().join('+')}`;
  },
};

export const gatewayImport: FuzzTarget = {
  name: 'gateway-session-import',
  description: 'GatewaySession.importState on mutated state JSON: only ERR_MATRIX_STATE; an imported session decodes real requests and encodes responses with coded errors only, and its export imports again unchanged',
  maxLen: 16384,
  mutate: mutateJson,
  seeds() { return sessionStateSeeds().gateway; },
  run(input) {
    let st: unknown;
    try { st = JSON.parse(textOf(input)); } catch { return 'not-json'; }
    const g = new GatewaySession({ sessionId: SESSION_ID, maxBodyBytes: FUZZ_MAX_BODY });
    const r = expectCoded(() => g.importState(st), isState);
    if (!r.ok) return r.outcome;
    const exported = JSON.parse(JSON.stringify(g.exportState())) as unknown;
    const g2 = new GatewaySession({ sessionId: SESSION_ID, maxBodyBytes: FUZZ_MAX_BODY });
    const again = expectCoded(() => g2.importState(exported), isState);
    check(again.ok, () => `the gateway's export of an imported state does not import: ${again.ok ? '' : again.outcome}: ${show(exported)}`);
    check(JSON.stringify(g2.exportState()) === JSON.stringify(exported), 'export → import → export changed the state');
    const outcomes: string[] = [];
    for (const bytes of sessionWorld().requestMessages.slice(-REQUESTS.length)) {
      const m = decodeMessage(bytes);
      try {
        const req = g.decodeRequest({ code: m.code, options: m.options, payload: m.payload, token: m.token });
        g.encodeResponse({ status: 200, contentType: 'application/json', body: new TextEncoder().encode('{"next_batch":"s9","room_id":"!x:hs"}') }, req);
        outcomes.push('ok');
      } catch (e) {
        if (!(e instanceof TrickleError && e.code.startsWith('ERR_'))) throw e;
        g.encodeError(e);
        outcomes.push(e.code);
      }
    }
    return `ok:${[...new Set(outcomes)].sort().join('+')}`;
  },
};

export const STATE_TARGETS: readonly FuzzTarget[] = [hostImport, gatewayImport];
