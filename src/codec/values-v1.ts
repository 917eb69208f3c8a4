/**
 * Trickle value enums, version 1: strings that Matrix traffic repeats, carried as CBOR simple
 * values (RFC 8949 §3.3) in Trickle's CBOR extension (trickle-cbor-v1.ts). JSON has no simple
 * values besides false/true/null, so an enum can never be confused with real data, at any key.
 *
 * Index 0–19 → one byte (0xE0 + i, simple values 0–19, unassigned by RFC 8949 §3.3).
 * Index 20–243 → two bytes (0xF8, 32 + (i − 20)), simple values 32–255.
 *
 * Frozen wire table: append-only within v1 is NOT allowed either; a change is values-v2.ts,
 * negotiated at session start. Order by frequency in real traffic: the first 20 cost 1 byte.
 */

export const VALUES_V1_VERSION = 1;

export const VALUES_V1: readonly string[] = Object.freeze([
  // 0–19: one byte each
  'm.room.message', 'm.text', 'join', 'm.room.member', 'm.reaction',
  'm.annotation', 'm.relates_to', 'rel_type', 'key', 'm.read',
  'm.receipt', 'm.typing', 'unread_notifications', 'notification_count', 'highlight_count',
  'device_one_time_keys_count', 'signed_curve25519', 'org.matrix.msc2732.device_unused_fallback_key_types', 'm.fully_read', 'leave',
  // 20–: two bytes each
  // event types
  'm.room.create', 'm.room.power_levels', 'm.room.join_rules', 'm.room.history_visibility', 'm.room.name',
  'm.room.topic', 'm.room.guest_access', 'm.room.encryption', 'm.room.encrypted', 'm.room.redaction',
  'm.room.avatar', 'm.room.canonical_alias', 'm.room.pinned_events', 'm.room.server_acl', 'm.room.tombstone',
  'm.sticker', 'm.presence', 'm.direct', 'm.push_rules', 'm.tag', 'm.read.private', 'm.room_key', 'm.forwarded_room_key',
  'm.room_key_request', 'm.key.verification.request', 'm.call.invite', 'm.call.answer', 'm.call.hangup', 'm.call.candidates',
  'm.space.child', 'm.space.parent', 'm.room.third_party_invite', 'm.ignored_user_list', 'm.secret_storage.default_key',
  // msgtypes
  'm.emote', 'm.notice', 'm.image', 'm.file', 'm.audio', 'm.video', 'm.location', 'm.server_notice',
  // membership and room settings
  'invite', 'ban', 'knock', 'public', 'private', 'restricted', 'knock_restricted',
  'shared', 'joined', 'invited', 'world_readable', 'can_join', 'forbidden',
  'private_chat', 'public_chat', 'trusted_private_chat',
  // relations
  'm.reference', 'm.replace', 'm.thread', 'm.in_reply_to', 'm.new_content', 'is_falling_back',
  'org.matrix.msc2285.read.private',
  // formats and mimetypes
  'org.matrix.custom.html', 'text/plain', 'text/html', 'image/png', 'image/jpeg', 'application/octet-stream',
  // login and auth
  'm.login.password', 'm.id.user', 'm.login.token', 'm.login.dummy', 'm.login.sso', 'flows', 'stages', 'session',
  'refresh_token', 'expires_in_ms',
  // errors
  'M_FORBIDDEN', 'M_UNKNOWN_TOKEN', 'M_MISSING_TOKEN', 'M_BAD_JSON', 'M_NOT_JSON', 'M_NOT_FOUND', 'M_LIMIT_EXCEEDED',
  'M_UNKNOWN', 'M_UNRECOGNIZED', 'M_USER_IN_USE', 'M_INVALID_USERNAME', 'M_ROOM_IN_USE', 'M_TOO_LARGE',
  'M_INVALID_PARAM', 'M_MISSING_PARAM', 'M_GUEST_ACCESS_FORBIDDEN', 'M_USER_DEACTIVATED', 'M_INCOMPATIBLE_ROOM_VERSION',
  'retry_after_ms',
  // sync and friends (keys outside MSC3079 Appendix A)
  'unread_thread_notifications', 'org.matrix.msc3773.unread_thread_notifications', 'summary', 'm.heroes',
  'm.joined_member_count', 'm.invited_member_count', 'knock_state', 'left', 'num_joined_members',
  'lazy_load_members', 'include_redundant_members', 'not_types', 'not_senders', 'senders', 'types', 'limit',
  'contains_url', 'event_format', 'event_fields', 'client', 'federation',   'org.matrix.msc4222.use_state_after', 'state_after', 'org.matrix.msc4222.state_after', 'm.relations',
  'filter_id', 'redacts', 'm.mentions', 'user_ids', 'room',   'guest_can_join',   'mimetype', 'size', 'info', 'url', 'w', 'h', 'thumbnail_url', 'thumbnail_info', 'filename',
  'ts', 'thread_id', 'main', 'receipts',
  'online', 'offline', 'unavailable', 'last_active_ago', 'currently_active',
  'status_msg', 'start', 'end', 'dir', 'b', 'f',
  'capabilities', 'm.change_password', 'm.room_versions', 'default', 'available', 'stable', 'unstable', 'enabled',
  'm.set_displayname', 'm.set_avatar_url', 'm.3pid_changes', 'm.get_login_token',
  'fallback_keys',   'global', 'override', 'underride', 'actions', 'notify', 'dont_notify',
  'set_tweak', 'highlight', 'sound', 'conditions', 'kind', 'event_match', 'pattern', 'rule_id', ]);

const INDEX = new Map<string, number>();
VALUES_V1.forEach((v, i) => { if (!INDEX.has(v)) INDEX.set(v, i); });

export const MAX_VALUE_ENUMS = 20 + 224;

export function valueEnumIndexV1(s: string): number | undefined { return INDEX.get(s); }
export function valueEnumV1(i: number): string | undefined { return VALUES_V1[i]; }
