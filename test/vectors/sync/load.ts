/** Loads the captured Synapse /sync vectors (see capture.ts for provenance). */
import { readFileSync } from 'node:fs';
import type { SyncResponse } from '../../../src/matrix/sync-types.ts';

export interface SyncVectorStep { name: string; gateway: SyncResponse; raw: SyncResponse }
export interface SyncVectors {
  provenance: {
    source: string; homeserver: string; user: string; device: string; other: string;
    rooms: { general: string; quiet: string; later: string };
    ownEventId: string;
    filters: { gatewayInitial: unknown; gatewayIncremental: unknown };
  };
  steps: SyncVectorStep[];
}

export function loadSyncVectors(): SyncVectors {
  return JSON.parse(readFileSync(new URL('./synapse-sync.json', import.meta.url), 'utf8')) as SyncVectors;
}

export function step(v: SyncVectors, name: string): SyncVectorStep {
  const s = v.steps.find((x) => x.name === name);
  if (!s) throw new Error(`no vector step ${name}`);
  return s;
}
