#!/usr/bin/env python3
"""Independent check of the Trickle native protocol vectors, written from the spec
(firmware-protocol/spec/01-framing.md, 02-messages.md) and protocol.json only, not from the
TypeScript code. Firmware authors can use it as a reference encoder.

    python3 firmware-protocol/vectors/check_vectors.py            check messages.json and framing.json
    python3 firmware-protocol/vectors/check_vectors.py --write-framing   regenerate framing.json
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOCOL = json.load(open(os.path.join(HERE, '..', 'protocol.json')))

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
FMT = {'u8': '<B', 'u16': '<H', 'u32': '<I', 'i8': '<b', 'i16': '<h', 'i32': '<i'}


def crc16_x25(data: bytes) -> int:
    """CRC-16/X-25: poly 0x1021 reflected (0x8408), init 0xFFFF, xorout 0xFFFF, bit by bit."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


assert crc16_x25(b'123456789') == 0x906E


def slip(data: bytes) -> bytes:
    out = bytearray([END])
    for b in data:
        if b == END:
            out += bytes([ESC, ESC_END])
        elif b == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(b)
    out.append(END)
    return bytes(out)


def frame(message: bytes) -> bytes:
    crc = crc16_x25(message)
    return slip(message + bytes([crc & 0xFF, crc >> 8]))


def layout(name: str):
    for m in PROTOCOL['messages']:
        if m['name'] == name:
            fields = []
            for f in m['fields']:
                fields.extend(PROTOCOL['structs'][f['struct']] if 'struct' in f else [f])
            return m['type'], fields
    raise KeyError(name)


def encode(msg: dict) -> bytes:
    type_byte, fields = layout(msg['name'])
    out = bytearray([type_byte])
    for f in fields:
        v = msg[f['name']]
        if f['type'] == 'bytes':
            out += bytes.fromhex(v)
        elif f['type'] == 'utf8':
            out += v.encode('utf-8')
        else:
            out += struct.pack(FMT[f['type']], v)
    return bytes(out)


def check_messages() -> int:
    data = json.load(open(os.path.join(HERE, 'messages.json')))
    bad = 0
    seen = set()
    for v in data['vectors']:
        seen.add(v['message']['name'])
        m = encode(v['message'])
        if m.hex() != v['messageHex'] or frame(m).hex() != v['frameHex']:
            bad += 1
            print(f"MISMATCH {v['description']}: {m.hex()} / {frame(m).hex()}")
    missing = {m['name'] for m in PROTOCOL['messages']} - seen
    if missing:
        bad += 1
        print(f'no vector for {sorted(missing)}')
    print(f"messages.json: {len(data['vectors'])} vectors, {bad} problems")
    return bad


def framing_vectors():
    hello = encode({'name': 'HELLO', 'minVersion': 1, 'maxVersion': 1})
    ping = encode({'name': 'PING', 'nonce': 0x12345678})
    pong = encode({'name': 'PONG', 'nonce': 0xC0DBC0DB})
    get_radio = encode({'name': 'GET_RADIO'})
    bad_fcs = bytearray(frame(hello))
    bad_fcs[-2] ^= 0x01
    version_bad_utf8 = bytes([0x81, 1, 0, 1, 0, 2]) + b'\xff\xfe'
    return [
        {'description': 'two messages back to back', 'wireHex': (frame(hello) + frame(get_radio)).hex(),
         'messages': [{'name': 'HELLO', 'minVersion': 1, 'maxVersion': 1}, {'name': 'GET_RADIO'}], 'rejects': []},
        {'description': 'END and ESC inside the payload and the FCS are escaped', 'wireHex': frame(pong).hex(),
         'messages': [{'name': 'PONG', 'nonce': 0xC0DBC0DB}], 'rejects': []},
        {'description': 'line noise before the first END is dropped, the message after it survives',
         'wireHex': (b'\x41\x42\x43' + frame(ping)).hex(),
         'messages': [{'name': 'PING', 'nonce': 0x12345678}], 'rejects': ['noise']},
        {'description': 'empty frames (END END) are ignored', 'wireHex': ('c0c0c0' + frame(ping).hex()),
         'messages': [{'name': 'PING', 'nonce': 0x12345678}], 'rejects': []},
        {'description': 'one bit flipped in the FCS', 'wireHex': bytes(bad_fcs).hex(), 'messages': [], 'rejects': ['bad-fcs']},
        {'description': 'ESC followed by a byte other than ESC_END/ESC_ESC', 'wireHex': 'c001db01c0' + frame(ping).hex(),
         'messages': [{'name': 'PING', 'nonce': 0x12345678}], 'rejects': ['bad-escape']},
        {'description': 'unknown type byte 0x42 with a good FCS', 'wireHex': frame(bytes([0x42, 1, 2])).hex(),
         'messages': [], 'rejects': ['unknown-type']},
        {'description': 'PING with a 2-byte nonce (payload shorter than its layout)', 'wireHex': frame(ping[:3]).hex(),
         'messages': [], 'rejects': ['short-payload']},
        {'description': 'GET_RADIO with a trailing byte (fixed layouts take no extra bytes)', 'wireHex': frame(get_radio + b'\x00').hex(),
         'messages': [], 'rejects': ['bad-length']},
        {'description': 'VERSION whose firmwareName is not UTF-8', 'wireHex': frame(version_bad_utf8).hex(),
         'messages': [], 'rejects': ['bad-utf8']},
        {'description': 'TRANSMIT with an empty frame is well-formed on the wire (the modem answers BAD_PARAMETER PAYLOAD)',
         'wireHex': frame(bytes([0x05, 0x09, 0x00])).hex(), 'messages': [{'name': 'TRANSMIT', 'seq': 9, 'frame': ''}], 'rejects': []},
    ]


def main() -> int:
    path = os.path.join(HERE, 'framing.json')
    vectors = framing_vectors()
    if '--write-framing' in sys.argv:
        json.dump({
            'description': 'Serial streams (wireHex) and what a receiver of the Trickle native protocol must make of them: '
                           'the messages, in order, and the rejected input, in order (noise, bad-fcs, bad-escape, '
                           'too-long, too-short, unknown-type, short-payload, bad-length, bad-utf8).',
            'provenance': 'Generated by firmware-protocol/vectors/check_vectors.py --write-framing (independent of the TypeScript code).',
            'vectors': vectors,
        }, open(path, 'w'), indent=2)
        open(path, 'a').write('\n')
        print(f'wrote {path}')
    stored = json.load(open(path))['vectors']
    bad = check_messages()
    if stored != vectors:
        bad += 1
        print('framing.json differs from what this script generates')
    print(f'framing.json: {len(stored)} vectors')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
