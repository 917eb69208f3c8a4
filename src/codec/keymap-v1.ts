/**
 * MSC3079 "Low Bandwidth Client-Server API", Appendix A: CBOR integer keys, version 1.
 *
 * Source: matrix-org/matrix-spec-proposals, proposals/3079-low-bandwidth-csapi.md,
 * "Appendix A: CBOR integer keys — This is version 1 of this table" (keys 1..104). The same
 * rows open `cborv1Keys` in matrix-org/lb `cbor_v1.go`.
 *
 * Frozen wire table: a change is a new version (keymap-v2.ts), never an edit here.
 *
 * Deliberately NOT included: matrix-org/lb's `cborv1Keys` goes on past 104 with federation
 * keys (105 "server" … 151 "self_signing_key", no 150) that are not in the MSC. A peer that
 * sends one of those integers gets ERR_CBOR_TYPE from our decoder (see cbor.ts), never a
 * silently renamed key.
 */

export const CBOR_KEYMAP_V1_VERSION = 1;

/** [key name, integer] rows in the order of Appendix A. */
export const CBOR_KEYS_V1: readonly (readonly [string, number])[] = Object.freeze(([
  ['event_id', 1],
  ['type', 2],
  ['content', 3],
  ['state_key', 4],
  ['room_id', 5],
  ['sender', 6],
  ['user_id', 7],
  ['origin_server_ts', 8],
  ['unsigned', 9],
  ['prev_content', 10],
  ['state', 11],
  ['timeline', 12],
  ['events', 13],
  ['limited', 14],
  ['prev_batch', 15],
  ['transaction_id', 16],
  ['age', 17],
  ['redacted_because', 18],
  ['next_batch', 19],
  ['presence', 20],
  ['avatar_url', 21],
  ['account_data', 22],
  ['rooms', 23],
  ['join', 24],
  ['membership', 25],
  ['displayname', 26],
  ['body', 27],
  ['msgtype', 28],
  ['format', 29],
  ['formatted_body', 30],
  ['ephemeral', 31],
  ['invite_state', 32],
  ['leave', 33],
  ['third_party_invite', 34],
  ['is_direct', 35],
  ['hashes', 36],
  ['signatures', 37],
  ['depth', 38],
  ['prev_events', 39],
  ['prev_state', 40],
  ['auth_events', 41],
  ['origin', 42],
  ['creator', 43],
  ['join_rule', 44],
  ['history_visibility', 45],
  ['ban', 46],
  ['events_default', 47],
  ['kick', 48],
  ['redact', 49],
  ['state_default', 50],
  ['users', 51],
  ['users_default', 52],
  ['reason', 53],
  ['visibility', 54],
  ['room_alias_name', 55],
  ['name', 56],
  ['topic', 57],
  ['invite', 58],
  ['invite_3pid', 59],
  ['room_version', 60],
  ['creation_content', 61],
  ['initial_state', 62],
  ['preset', 63],
  ['servers', 64],
  ['identifier', 65],
  ['user', 66],
  ['medium', 67],
  ['address', 68],
  ['password', 69],
  ['token', 70],
  ['device_id', 71],
  ['initial_device_display_name', 72],
  ['access_token', 73],
  ['home_server', 74],
  ['well_known', 75],
  ['base_url', 76],
  ['device_lists', 77],
  ['to_device', 78],
  ['peek', 79],
  ['last_seen_ip', 80],
  ['display_name', 81],
  ['typing', 82],
  ['last_seen_ts', 83],
  ['algorithm', 84],
  ['sender_key', 85],
  ['session_id', 86],
  ['ciphertext', 87],
  ['one_time_keys', 88],
  ['timeout', 89],
  ['recent_rooms', 90],
  ['chunk', 91],
  ['m.fully_read', 92],
  ['device_keys', 93],
  ['failures', 94],
  ['device_display_name', 95],
  ['prev_sender', 96],
  ['replaces_state', 97],
  ['changed', 98],
  ['unstable_features', 99],
  ['versions', 100],
  ['devices', 101],
  ['errcode', 102],
  ['error', 103],
  ['room_alias', 104],
] as const).map((row) => Object.freeze(row)));

const byName: ReadonlyMap<string, number> = new Map(CBOR_KEYS_V1);
const byInt: ReadonlyMap<number, string> = new Map(CBOR_KEYS_V1.map(([k, n]) => [n, k]));

/** The Appendix A integer for a JSON key, or undefined when the key has none. */
export function cborKeyToIntV1(key: string): number | undefined {
  return byName.get(key);
}

/** The JSON key for an Appendix A integer, or undefined when the integer is not in the table. */
export function cborIntToKeyV1(n: number): string | undefined {
  return byInt.get(n);
}
