/**
 * CRC-16/X-25: the 16-bit frame check sequence (FCS-16) of HDLC, AX.25 and PPP.
 *
 * Parameters (catalogue name CRC-16/IBM-SDLC, alias X-25):
 *   width 16, poly 0x1021 (x^16 + x^12 + x^5 + 1), processed bit-reflected, i.e. 0x8408;
 *   init 0xFFFF, refin/refout true, xorout 0xFFFF; check("123456789") = 0x906E.
 *
 * The table-driven update below is the one given in RFC 1662 appendix C.2
 * ("16-bit FCS Computation Method"): fcs = (fcs >> 8) ^ fcstab[(fcs ^ byte) & 0xff],
 * starting from PPPINITFCS16 = 0xFFFF; the sender transmits the ones complement
 * (xorout 0xFFFF) least significant octet first (RFC 1662 §C.2, "tryfcs16").
 */

/** RFC 1662 appendix C.2: generate the 256-entry table for the reflected polynomial 0x8408. */
const FCS16_TABLE: Uint16Array = (() => {
  const table = new Uint16Array(256);
  for (let b = 0; b < 256; b++) {
    let v = b;
    for (let i = 0; i < 8; i++) v = v & 1 ? (v >>> 1) ^ 0x8408 : v >>> 1;
    table[b] = v;
  }
  return table;
})();

/** PPPINITFCS16 (RFC 1662 §C.2). */
const FCS16_INIT = 0xffff;
/** PPPGOODFCS16: the residue of the FCS run over data ‖ FCS (LSB first) when intact. */
export const FCS16_GOOD = 0xf0b8;

/** Continue an FCS-16 computation (no final xor). Exposed for incremental use. */
export function crc16Update(fcs: number, bytes: Uint8Array): number {
  let v = fcs & 0xffff;
  for (let i = 0; i < bytes.length; i++) {
    v = (v >>> 8) ^ FCS16_TABLE[(v ^ bytes[i]!) & 0xff]!;
  }
  return v;
}

/** CRC-16/X-25 of `bytes` (init 0xFFFF, reflected, xorout 0xFFFF). */
export function crc16(bytes: Uint8Array): number {
  return (crc16Update(FCS16_INIT, bytes) ^ 0xffff) & 0xffff;
}
