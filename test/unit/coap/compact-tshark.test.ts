/**
 * Independent check of the compact form's expansion: every RFC 7252 message that the
 * compact vectors expand to is written into a pcap (UDP 5683, text2pcap) and decoded
 * by Wireshark's CoAP dissector (tshark). Type, code, mid, token, the option numbers in
 * order, Uri-Path, Uri-Query, Block values and the payload length must be what our
 * codec says, with no malformed-packet marks.
 *
 * Needs Debian package `tshark` (brings text2pcap). Without it the test SKIPS and says so.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromHex, toHex } from '../../../src/util/bytes.ts';
import { createCompactContext, decodeCompact, encodeCompact } from '../../../src/coap/compact.ts';
import { decodeMessage, decodeUint, encodeMessage, getOptions } from '../../../src/coap/message.ts';
import { Opt } from '../../../src/coap/numbers.ts';
import { decodeBlock } from '../../../src/coap/block.ts';
import { handlesScenario, observeScenario, scenario, type Step, type VectorStep } from './compact-scenario.ts';
import { readFileSync } from 'node:fs';

const vectors = JSON.parse(readFileSync(new URL('../../vectors/coap/compact-v1.json', import.meta.url), 'utf8')) as { steps: VectorStep[] };
const observeVectors = JSON.parse(readFileSync(new URL('../../vectors/coap/compact-v1-observe.json', import.meta.url), 'utf8')) as { steps: VectorStep[] };
const handlesVectors = JSON.parse(readFileSync(new URL('../../vectors/coap/compact-v1-handles.json', import.meta.url), 'utf8')) as { steps: VectorStep[] };

function have(cmd: string): boolean {
  const r = spawnSync(cmd, ['-v'], { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
}
const TOOLS = have('tshark') && have('text2pcap');
const SKIP_REASON = 'SKIPPED: tshark/text2pcap not installed (Debian package "tshark")';
if (!TOOLS) process.stderr.write(`compact-tshark.test.ts: ${SKIP_REASON}\n`);

const FIELDS = [
  'frame.number', 'coap.type', 'coap.code', 'coap.mid', 'coap.token', 'coap.opt.name', 'coap.opt.desc', 'coap.opt.uri_path',
  'coap.opt.uri_query', 'coap.opt.observe', 'coap.payload_length', 'udp.length', '_ws.malformed',
] as const;

type Row = Record<(typeof FIELDS)[number], string[]> & { optionSummaries: string[]; experts: string[] };

function dissect(messages: Uint8Array[]): Row[] {
  const dir = mkdtempSync(join(tmpdir(), 'trickle-tshark-'));
  try {
    // text2pcap hex dump: each packet starts at offset 0000.
    const dump = messages.map((m) => {
      const hex = toHex(m).match(/../g) ?? [];
      const lines: string[] = [];
      for (let i = 0; i < hex.length; i += 16) lines.push(`${i.toString(16).padStart(6, '0')} ${hex.slice(i, i + 16).join(' ')}`);
      return `${lines.join('\n')}\n`;
    }).join('\n');
    writeFileSync(join(dir, 'in.txt'), dump);
    execFileSync('text2pcap', ['-q', '-u', '5683,5683', join(dir, 'in.txt'), join(dir, 'out.pcap')], { stdio: 'ignore' });
    const out = execFileSync('tshark', [
      '-r', join(dir, 'out.pcap'), '-T', 'fields', '-E', 'separator=\t', '-E', 'occurrence=a', '-E', 'aggregator=\u001f',
      ...FIELDS.flatMap((f) => ['-e', f]),
    ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    // The option summaries ("Opt Name: #2: Block2: NUM:0, M:1, SZX:128") exist only in the tree view.
    const tree = execFileSync('tshark', ['-r', join(dir, 'out.pcap'), '-V', '-O', 'coap'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const packets = tree.split(/^Frame \d+:/m).slice(1);
    const summaries = packets.map((pkt) => [...pkt.matchAll(/^\s*Opt Name: #\d+: (.*)$/gm)].map((m) => m[1]!));
    const experts = packets.map((pkt) => [...pkt.matchAll(/^\s*\[Expert Info \(([^)]*)\): (.*)\]$/gm)].map((m) => `${m[1]!}: ${m[2]!}`));
    return out.trimEnd().split('\n').map((line, i) => {
      const cols = line.split('\t');
      const row = Object.fromEntries(FIELDS.map((f, j) => [f, cols[j] ? cols[j]!.split('\u001f') : []]));
      return { ...row, optionSummaries: summaries[i] ?? [], experts: experts[i] ?? [] } as Row;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('compact form: expansions checked by Wireshark\'s CoAP dissector', () => {
  it.skipIf(!TOOLS)(`tshark decodes every expanded vector as our codec does${TOOLS ? '' : ` (${SKIP_REASON})`}`, () => {
    checkWithTshark(vectors.steps, scenario());
  });
  it.skipIf(!TOOLS)(`tshark decodes every expanded Observe vector as our codec does${TOOLS ? '' : ` (${SKIP_REASON})`}`, () => {
    checkWithTshark(observeVectors.steps, observeScenario());
  });
  it.skipIf(!TOOLS)(`tshark decodes every expanded handle/part vector as our codec does${TOOLS ? '' : ` (${SKIP_REASON})`}`, () => {
    checkWithTshark(handlesVectors.steps, handlesScenario());
  });
});

function checkWithTshark(vectorSteps: VectorStep[], steps: Step[]): void {
  {
    // Replay the session: the sender encodes (its context learns what it sent), the
    // receiver expands the frame of the vector file.
    const a = createCompactContext();
    const b = createCompactContext();
    const expanded = vectorSteps.map((s, i) => {
      const [tx, rx] = s.from === 'A' ? [a, b] : [b, a];
      expect(toHex(encodeCompact(steps[i]!.msg, tx))).toBe(s.compact);
      const m = decodeCompact(fromHex(s.compact), rx);
      return { step: s, msg: m, bytes: encodeMessage(m) };
    });
    for (const e of expanded) expect(toHex(e.bytes)).toBe(e.step.rfc7252);
    const rows = dissect(expanded.map((e) => e.bytes));
    expect(rows).toHaveLength(expanded.length);
    rows.forEach((row, i) => {
      const { step, msg } = expanded[i]!;
      const where = `${step.name} (${step.rfc7252})`;
      // Wireshark 4.0 flags option numbers it has no name for: MSC3079's access-token
      // option 256 as "Invalid Option Number" (group Malformed: 256 is not registered
      // with IANA), the experimental 65000+ range as "Unknown Option Number". Nothing
      // else may be flagged.
      for (const x of row.experts) {
        const n = Number(/^Warning\/(?:Malformed: Invalid|Undecoded: Unknown) Option Number (\d+)$/.exec(x)?.[1]);
        expect(n === 256 || n >= 65000, `${where}: ${x}`).toBe(true);
      }
      if (row.experts.length === 0) expect(row['_ws.malformed'], where).toEqual([]);
      expect(Number(row['coap.type'][0]), where).toBe(msg.type);
      expect(Number(row['coap.code'][0]), where).toBe(msg.code);
      expect(Number(row['coap.mid'][0]), where).toBe(msg.mid);
      expect((row['coap.token'][0] ?? '').replace(/:/g, ''), where).toBe(toHex(msg.token));
      const numbers = row['coap.opt.desc'].map((d) => Number(/Type (\d+)/.exec(d)?.[1]));
      expect(numbers, where).toEqual(decodeMessage(fromHex(step.rfc7252)).options.map((o) => o.number));
      const text = (n: number) => getOptions(msg.options, n).map((v) => new TextDecoder().decode(v));
      // tshark drops empty Uri-Path values from the field list; compare the non-empty ones.
      expect(row['coap.opt.uri_path'].filter((s) => s !== ''), where).toEqual(text(Opt.URI_PATH).filter((s) => s !== ''));
      expect(row['coap.opt.uri_query'], where).toEqual(text(Opt.URI_QUERY));
      expect(row['coap.opt.observe'].map(Number), where).toEqual(getOptions(msg.options, Opt.OBSERVE).map((v) => decodeUint(v)));
      // Block and Size options as Wireshark summarises them ("#2: Block2: NUM:0, M:1, SZX:128").
      // (Its field coap.opt.block_size is also filled, wrongly, for Size2: not used.)
      const summary = (name: string) => row.optionSummaries.filter((n) => n.startsWith(`${name}: `));
      for (const [name, number] of [['Block2', Opt.BLOCK2], ['Block1', Opt.BLOCK1]] as const) {
        expect(summary(name), where).toEqual(getOptions(msg.options, number).map(decodeBlock)
          .map((x) => `${name}: NUM:${x.num}, M:${x.more ? 1 : 0}, SZX:${16 << x.szx}`));
      }
      for (const [name, number] of [['Size1', Opt.SIZE1], ['Size2', Opt.SIZE2]] as const) {
        expect(summary(name), where).toEqual(getOptions(msg.options, number).map((v) => `${name}: ${decodeUint(v)}`));
      }
      // The whole message went into the datagram; Wireshark reassembles block-wise
      // payloads across packets, so their own length is checked only without Block options.
      expect(Number(row['udp.length'][0]) - 8, where).toBe(expanded[i]!.bytes.length);
      const blockwise = getOptions(msg.options, Opt.BLOCK1).length + getOptions(msg.options, Opt.BLOCK2).length > 0;
      if (!blockwise) expect(Number(row['coap.payload_length'][0] ?? 0), where).toBe(msg.payload.length);
    });
  }
}
