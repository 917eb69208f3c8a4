/**
 * Loaders for the vector files the codec tests read. The shared MSC3079 vectors live outside the
 * repository (../shared/vectors/msc3079/ from the repo root) and are read-only; their "source"
 * field is their provenance and is checked, never rewritten.
 */
import { readFileSync } from 'node:fs';

export interface Msc3079Vectors {
  source: string;
  rules: string[];
  vectors: { title: string; json: unknown; cbor_hex: string }[];
  decode_only: { title: string; cbor_diag: string; cbor_hex: string; json: unknown }[];
  paths: { http: string; coap: string; coap_to_http_only?: boolean; note?: string }[];
}

/** test/unit/codec/ → test/unit → test → repo root → its parent, where shared/ lives. */
export const MSC3079_VECTORS_URL = new URL('../../../../shared/vectors/msc3079/cbor-v1.json', import.meta.url);

export function loadMsc3079Vectors(): Msc3079Vectors {
  return JSON.parse(readFileSync(MSC3079_VECTORS_URL, 'utf8')) as Msc3079Vectors;
}

export function loadLocalVectors<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`../../vectors/codec/${name}`, import.meta.url), 'utf8')) as T;
}
