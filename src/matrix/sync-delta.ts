export interface SyncReducerOptions {
  timelineLimit: number;
  initialTimelineLimit: number;
  typing: boolean;
  receipts: boolean;
  presence: boolean;
}
export const DEFAULT_SYNC_REDUCER_OPTIONS: SyncReducerOptions = { timelineLimit: 20, initialTimelineLimit: 10, typing: false, receipts: false, presence: false };
export function gatewaySyncFilter(o: Partial<SyncReducerOptions> = {}, phase: 'initial' | 'incremental' = 'incremental'): Record<string, unknown> {
  const opts = { ...DEFAULT_SYNC_REDUCER_OPTIONS, ...o };
  const ephemeralTypes = [...(opts.typing ? ['m.typing'] : []), ...(opts.receipts ? ['m.receipt'] : [])];
  return {
    presence: opts.presence ? { types: ['m.presence'] } : { not_types: ['*'] },
    room: {
      state: { lazy_load_members: true },
      timeline: { limit: phase === 'initial' ? opts.initialTimelineLimit : opts.timelineLimit },
      ephemeral: ephemeralTypes.length > 0 ? { types: ephemeralTypes } : { not_types: ['*'] },
    },
  };
}
export const GATEWAY_SYNC_FILTER = gatewaySyncFilter();
