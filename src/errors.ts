/**
 * One vocabulary of stable error codes. Codes are API (tests, logs, metrics and
 * users' scripts match on them); messages are free text for people.
 *
 * Each layer owns one block of codes below. Add a code to your layer's block only.
 */

export type Layer =
  | 'util' | 'link' | 'modem' | 'scheduler' | 'secure' | 'coap' | 'codec'
  | 'net' | 'matrix' | 'host' | 'gateway' | 'cli' | 'config';

export type ErrorCode =
  // link: byte pipes
  | 'ERR_LINK_NOT_FOUND'        // device path does not exist
  | 'ERR_LINK_BUSY'             // device is locked or in use by another process
  | 'ERR_LINK_PERMISSION'       // no permission to open the device
  | 'ERR_LINK_OPEN'             // any other failure to open
  | 'ERR_LINK_CLOSED'           // write on a closed link
  | 'ERR_LINK_IO'               // EIO and friends while open
  // modem / framing
  | 'ERR_FRAME_BAD_FCS'         // CRC mismatch
  | 'ERR_FRAME_BAD_ESCAPE'      // SLIP ESC followed by anything but ESC_END/ESC_ESC
  | 'ERR_FRAME_TOO_LONG'        // frame exceeds the decoder's bound
  | 'ERR_FRAME_TOO_SHORT'       // shorter than the CRC
  | 'ERR_FRAME_NOISE'           // bytes before the first END
  | 'ERR_FRAME_EMPTY'           // END END
  | 'ERR_MODEM_MTU'             // frame larger than the modem can carry
  | 'ERR_MODEM_CONFIG'          // configuration rejected or read back different
  | 'ERR_MODEM_TIMEOUT'         // modem did not answer
  | 'ERR_KISS_COMMAND'          // KISS frame from the TNC that is not a data frame for our port
  | 'ERR_AX25_ADDRESS'          // malformed AX.25 address field (bad character, padding, too many digipeaters)
  | 'ERR_AX25_NOT_UI'           // AX.25 frame other than UI (connected mode I/S/U frames): not ours to handle
  | 'ERR_AX25_PID'              // UI frame whose PID is not 0xF0 "no layer 3" (IP 0xCC, NET/ROM 0xCF, …)
  | 'ERR_AX25_NOT_OURS'         // valid UI frame for another destination (or our own source echoed back)
  | 'ERR_MODEM_DEVICE'          // the device reported an error (RNode CMD_ERROR, a Meshtastic routing NAK other than the duty cycle)
  | 'ERR_MODEM_NOT_OURS'        // valid packet for another application port, channel or node (Meshtastic): not ours to deliver
  | 'ERR_PROTOBUF_DECODE'       // malformed protobuf from the device (Meshtastic serial API)
  // scheduler
  | 'ERR_DUTY_CYCLE'            // budget spent; retry later
  | 'ERR_DWELL_TIME'            // single transmission exceeds the dwell limit
  | 'ERR_REGION_CHANNEL'        // channel outside the region or straddling sub-bands
  | 'ERR_QUEUE_FULL'
  | 'ERR_AIRTIME_PARAMS'        // invalid radio parameters for the airtime formula
  | 'ERR_LINK_ADDRESS'          // net: a frame on a shared channel too short for its address byte
  | 'ERR_RELAY_HEADER'          // net: a relayed frame whose relay header is short or malformed
  | 'ERR_NETWORK_MODE'          // net: a field kit calls in the other --network mode (p2p / shared); logged with the fix
  | 'ERR_PACKED_FRAME'          // malformed packing container (count/length prefixes)
  // secure
  | 'ERR_NOISE_DECRYPT'         // AEAD authentication failed
  | 'ERR_NOISE_HANDSHAKE'       // handshake message malformed or out of order
  | 'ERR_NOISE_PATTERN'         // unknown or malformed pattern / protocol name
  | 'ERR_NOISE_NONCE'           // nonce exhausted or outside the window
  | 'ERR_NOISE_REPLAY'          // nonce already seen
  | 'ERR_NOISE_KEY'             // bad key length or unknown/unauthorized key
  | 'ERR_NOISE_STATE'           // operation not allowed in the current state
  | 'ERR_NOISE_RATE'            // a reply to an unauthenticated frame withheld: its airtime share is spent
  | 'ERR_NOISE_CONTROL'         // an unauthenticated control frame (REFUSED, UNKNOWN_SESSION) ignored: unsolicited or contradicted
  // coap
  | 'ERR_COAP_TRUNCATED'        // message ends inside a field
  | 'ERR_COAP_VERSION'          // version != 1
  | 'ERR_COAP_TOKEN_LENGTH'     // TKL 9..15
  | 'ERR_COAP_OPTION'           // reserved delta/length nibble 15, or bad option value
  | 'ERR_COAP_PAYLOAD_MARKER'   // payload marker followed by zero bytes
  | 'ERR_COAP_FORMAT'           // message shape invalid for its type/code
  | 'ERR_COAP_TIMEOUT'          // CON not acknowledged after MAX_RETRANSMIT
  | 'ERR_COAP_RESET'            // peer answered RST
  | 'ERR_COAP_BLOCK'            // blockwise transfer inconsistent or too large
  | 'ERR_COAP_TOO_LARGE'        // body exceeds the configured bound
  | 'ERR_COAP_CLOSED'           // endpoint closed while the request was pending, or used after close
  // codec
  | 'ERR_CBOR_DECODE'           // malformed CBOR
  | 'ERR_CBOR_LIMIT'            // depth/length bound exceeded
  | 'ERR_CBOR_TYPE'             // CBOR item with no JSON equivalent (tags, undefined, …)
  | 'ERR_INFLATE'               // corrupt DEFLATE stream
  | 'ERR_INFLATE_LIMIT'         // inflated output over its bound
  | 'ERR_DICTIONARY_MISMATCH'   // peers disagree on the preset dictionary
  | 'ERR_PATH_ENUM'             // unknown path enum
  | 'ERR_HANDLE_UNKNOWN'        // a session handle this side does not have
  // matrix / host / gateway
  | 'ERR_MATRIX_REQUEST'        // local request cannot be carried (bad method, body, …)
  | 'ERR_MATRIX_BODY'           // payload does not fit its Content-Format (bad UTF-8 text message, event id not 32 bytes, unknown format)
  | 'ERR_MATRIX_TOKEN_MISSING'  // gateway holds no session access token for a request that relies on it
  | 'ERR_MATRIX_HANDLE_CONFLICT' // a response defines a handle number this side already holds for another string
  | 'ERR_MATRIX_STATE'          // exported session state that cannot be imported
  | 'ERR_MATRIX_PATH'           // a path outside the Matrix client-server API, or with dot segments: never performed
  | 'ERR_MATRIX_SECRET_ON_AIR'  // authenticate-only mode: a request that carries (or would bring back) a password or token, never performed
  | 'ERR_MATRIX_UNBOUND'        // authenticate-only mode: no Matrix account is bound to this field kit at the gateway
  | 'ERR_HOMESERVER_UNREACHABLE'
  | 'ERR_GATEWAY_UNREACHABLE'
  // config / cli
  | 'ERR_CONFIG'                // bad option or config value
  | 'ERR_USAGE';

/** The base class of every error Trickle throws on purpose. */
export class TrickleError extends Error {
  readonly code: ErrorCode;
  readonly layer: Layer;
  readonly detail: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, layer: Layer, message: string, detail?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TrickleError';
    this.code = code;
    this.layer = layer;
    this.detail = detail;
  }
}

/** Malformed bytes from the wire: the owning layer drops, counts and logs them. */
export class WireError extends TrickleError {
  constructor(code: ErrorCode, layer: Layer, message: string, detail?: Record<string, unknown>) {
    super(code, layer, message, detail);
    this.name = 'WireError';
  }
}

/** Bad configuration or usage: the message says what is wrong and what is allowed. */
export class ConfigError extends TrickleError {
  constructor(message: string, detail?: Record<string, unknown>) {
    super('ERR_CONFIG', 'config', message, detail);
    this.name = 'ConfigError';
  }
}

export function isTrickleError(e: unknown, code?: ErrorCode): e is TrickleError {
  return e instanceof TrickleError && (code === undefined || e.code === code);
}
