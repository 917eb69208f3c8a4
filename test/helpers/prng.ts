/** mulberry32: a small seeded PRNG, so losses and random inputs replay exactly from a seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The same stream as integers in [0, n). */
export function mulberry32Int(seed: number): (n: number) => number {
  const next = mulberry32(seed);
  return (n) => (next() * n) | 0;
}
