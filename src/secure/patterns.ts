/**
 * Noise handshake patterns as data (Noise spec rev 34 §7) and protocol-name parsing (§8, §9, §10.2).
 *
 * Every base pattern of §7.4 (one-way), §7.5 (fundamental interactive) and §7.6 (deferred) is a
 * row below: its pre-messages and its message patterns. Messages alternate, the initiator
 * (Alice, "->") first, so a row lists only the tokens. Modifiers are applied left to right:
 *   pskN (§9.2): psk0 puts a "psk" token at the start of the first message, pskN (N ≥ 1) at the
 *                end of the N-th message;
 *   fallback (§10.2): Alice's first message (which must be exactly "e") becomes a pre-message,
 *                so Bob speaks first (the XXfallback of Noise Pipes, §10.4).
 */
import { TrickleError } from '../errors.ts';

export type PreMessageToken = 'e' | 's';
export type Token = 'e' | 's' | 'ee' | 'es' | 'se' | 'ss' | 'psk';
export type Role = 'initiator' | 'responder';

export interface MessagePattern {
  /** Who writes this message: "->" is the initiator, "<-" the responder. */
  readonly from: Role;
  readonly tokens: readonly Token[];
}

export interface HandshakePattern {
  /** The name as written in the protocol name, modifiers included (e.g. "IKpsk2", "XXfallback"). */
  readonly name: string;
  /** The base pattern (e.g. "IK"). */
  readonly base: string;
  readonly modifiers: readonly string[];
  readonly initiatorPreMessage: readonly PreMessageToken[];
  readonly responderPreMessage: readonly PreMessageToken[];
  readonly messages: readonly MessagePattern[];
  /** §7.4: one-way patterns have a single message; transport is initiator → responder only. */
  readonly oneWay: boolean;
  /** §9.2: any psk modifier makes "e" tokens also call MixKey(e.public_key). */
  readonly psk: boolean;
}

interface BaseRow {
  /** [initiator pre-message, responder pre-message] */
  readonly pre: readonly [readonly PreMessageToken[], readonly PreMessageToken[]];
  /** message i is written by the initiator if i is even */
  readonly msgs: readonly (readonly Token[])[];
}

const NONE: readonly PreMessageToken[] = [];
const S: readonly PreMessageToken[] = ['s'];

/** §7.4 one-way patterns. */
const ONE_WAY: Readonly<Record<string, BaseRow>> = {
  N: { pre: [NONE, S], msgs: [['e', 'es']] },
  K: { pre: [S, S], msgs: [['e', 'es', 'ss']] },
  X: { pre: [NONE, S], msgs: [['e', 'es', 's', 'ss']] },
};

/** §7.5 fundamental interactive patterns and §7.6 deferred patterns. */
const INTERACTIVE: Readonly<Record<string, BaseRow>> = {
  NN: { pre: [NONE, NONE], msgs: [['e'], ['e', 'ee']] },
  NK: { pre: [NONE, S], msgs: [['e', 'es'], ['e', 'ee']] },
  NX: { pre: [NONE, NONE], msgs: [['e'], ['e', 'ee', 's', 'es']] },
  KN: { pre: [S, NONE], msgs: [['e'], ['e', 'ee', 'se']] },
  KK: { pre: [S, S], msgs: [['e', 'es', 'ss'], ['e', 'ee', 'se']] },
  KX: { pre: [S, NONE], msgs: [['e'], ['e', 'ee', 'se', 's', 'es']] },
  XN: { pre: [NONE, NONE], msgs: [['e'], ['e', 'ee'], ['s', 'se']] },
  XK: { pre: [NONE, S], msgs: [['e', 'es'], ['e', 'ee'], ['s', 'se']] },
  XX: { pre: [NONE, NONE], msgs: [['e'], ['e', 'ee', 's', 'es'], ['s', 'se']] },
  IN: { pre: [NONE, NONE], msgs: [['e', 's'], ['e', 'ee', 'se']] },
  IK: { pre: [NONE, S], msgs: [['e', 'es', 's', 'ss'], ['e', 'ee', 'se']] },
  IX: { pre: [NONE, NONE], msgs: [['e', 's'], ['e', 'ee', 'se', 's', 'es']] },
  // §7.6 deferred: a "1" after a party's letter defers that party's authentication DH one message.
  NK1: { pre: [NONE, S], msgs: [['e'], ['e', 'ee', 'es']] },
  NX1: { pre: [NONE, NONE], msgs: [['e'], ['e', 'ee', 's'], ['es']] },
  X1N: { pre: [NONE, NONE], msgs: [['e'], ['e', 'ee'], ['s'], ['se']] },
  X1K: { pre: [NONE, S], msgs: [['e', 'es'], ['e', 'ee'], ['s'], ['se']] },
  XK1: { pre: [NONE, S], msgs: [['e'], ['e', 'ee', 'es'], ['s', 'se']] },
  X1K1: { pre: [NONE, S], msgs: [['e'], ['e', 'ee', 'es'], ['s'], ['se']] },
  X1X: { pre: [NONE, NONE], msgs: [['e'], ['e', 'ee', 's', 'es'], ['s'], ['se']] },
  XX1: { pre: [NONE, NONE], msgs: [['e'], ['e', 'ee', 's'], ['es', 's', 'se']] },
  X1X1: { pre: [NONE, NONE], msgs: [['e'], ['e', 'ee', 's'], ['es', 's'], ['se']] },
  K1N: { pre: [S, NONE], msgs: [['e'], ['e', 'ee'], ['se']] },
  K1K: { pre: [S, S], msgs: [['e', 'es'], ['e', 'ee'], ['se']] },
  KK1: { pre: [S, S], msgs: [['e'], ['e', 'ee', 'se', 'es']] },
  K1K1: { pre: [S, S], msgs: [['e'], ['e', 'ee', 'es'], ['se']] },
  K1X: { pre: [S, NONE], msgs: [['e'], ['e', 'ee', 's', 'es'], ['se']] },
  KX1: { pre: [S, NONE], msgs: [['e'], ['e', 'ee', 'se', 's'], ['es']] },
  K1X1: { pre: [S, NONE], msgs: [['e'], ['e', 'ee', 's'], ['se', 'es']] },
  I1N: { pre: [NONE, NONE], msgs: [['e', 's'], ['e', 'ee'], ['se']] },
  I1K: { pre: [NONE, S], msgs: [['e', 'es', 's'], ['e', 'ee'], ['se']] },
  IK1: { pre: [NONE, S], msgs: [['e', 's'], ['e', 'ee', 'se', 'es']] },
  I1K1: { pre: [NONE, S], msgs: [['e', 's'], ['e', 'ee', 'es'], ['se']] },
  I1X: { pre: [NONE, NONE], msgs: [['e', 's'], ['e', 'ee', 's', 'es'], ['se']] },
  IX1: { pre: [NONE, NONE], msgs: [['e', 's'], ['e', 'ee', 'se', 's'], ['es']] },
  I1X1: { pre: [NONE, NONE], msgs: [['e', 's'], ['e', 'ee', 's'], ['se', 'es']] },
};

/** The names of every base pattern of §7 (3 one-way + 12 fundamental + 23 deferred). */
export const BASE_PATTERN_NAMES: readonly string[] = Object.freeze([...Object.keys(ONE_WAY), ...Object.keys(INTERACTIVE)]);

function patternError(message: string, detail?: Record<string, unknown>): TrickleError {
  return new TrickleError('ERR_NOISE_PATTERN', 'secure', message, detail);
}

/** Parse a pattern name with modifiers, e.g. "XX", "IKpsk2", "NNpsk0+psk2", "XXfallback". */
export function parseHandshakePattern(name: string): HandshakePattern {
  const m = /^([NKXI1]+)([a-z][a-z0-9+]*)?$/.exec(name);
  if (m === null) throw patternError(`malformed handshake pattern name "${name}"`);
  const base = m[1]!;
  const row = ONE_WAY[base] ?? INTERACTIVE[base];
  if (row === undefined) throw patternError(`unknown handshake pattern "${base}"`, { name });
  const oneWay = base in ONE_WAY;
  const modifiers = m[2] === undefined ? [] : m[2].split('+');

  let initiatorPre = [...row.pre[0]];
  const responderPre = [...row.pre[1]];
  let messages: { from: Role; tokens: Token[] }[] = row.msgs.map((tokens, i) => ({
    from: i % 2 === 0 ? 'initiator' : 'responder',
    tokens: [...tokens],
  }));
  let psk = false;
  const seen = new Set<string>();

  for (const mod of modifiers) {
    if (seen.has(mod)) throw patternError(`modifier "${mod}" repeated in "${name}"`);
    seen.add(mod);
    const pskMatch = /^psk(0|[1-9][0-9]*)$/.exec(mod);
    if (pskMatch !== null) {
      const n = Number(pskMatch[1]);
      if (n > messages.length) throw patternError(`${mod} needs at least ${n} messages in "${name}"`);
      if (n === 0) messages[0]!.tokens.unshift('psk');
      else messages[n - 1]!.tokens.push('psk');
      psk = true;
    } else if (mod === 'fallback') {
      // §10.2: only for a pattern whose first message is Alice's bare "e".
      const first = messages[0];
      if (oneWay || first === undefined || first.from !== 'initiator' || first.tokens.length !== 1 || first.tokens[0] !== 'e' || initiatorPre.includes('e')) {
        throw patternError(`fallback is not applicable to "${base}"`, { name });
      }
      initiatorPre = [...initiatorPre, 'e'];
      messages = messages.slice(1);
    } else {
      throw patternError(`unsupported pattern modifier "${mod}"`, { name });
    }
  }

  return Object.freeze({
    name,
    base,
    modifiers: Object.freeze(modifiers),
    initiatorPreMessage: Object.freeze(initiatorPre),
    responderPreMessage: Object.freeze(responderPre),
    messages: Object.freeze(messages.map((msg) => Object.freeze({ from: msg.from, tokens: Object.freeze(msg.tokens) }))),
    oneWay,
    psk,
  });
}

export interface ProtocolName {
  readonly name: string;
  readonly pattern: string;
  readonly dh: string;
  readonly cipher: string;
  readonly hash: string;
}

/**
 * Split a protocol name `Noise_<pattern>_<dh>_<cipher>_<hash>` (§8) without resolving the
 * algorithms (so a caller can skip names it does not support, e.g. 448 or AESGCM).
 */
export function splitProtocolName(name: string): ProtocolName {
  const parts = name.split('_');
  if (parts.length !== 5 || parts[0] !== 'Noise' || parts.some((p) => p.length === 0)) {
    throw patternError(`malformed protocol name "${name}"`);
  }
  return { name, pattern: parts[1]!, dh: parts[2]!, cipher: parts[3]!, hash: parts[4]! };
}
