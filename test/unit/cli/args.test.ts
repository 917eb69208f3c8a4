import { describe, expect, it } from 'vitest';
import { pushCarryFlag } from '../../../src/cli/args.ts';

describe('--push-carry', () => {
  it('defaults to nothing ephemeral over the air and accepts any subset', () => {
    expect(pushCarryFlag(undefined)).toEqual({ typing: false, receipts: false, presence: false });
    expect(pushCarryFlag('')).toEqual({ typing: false, receipts: false, presence: false });
    expect(pushCarryFlag('typing, receipts')).toEqual({ typing: true, receipts: true, presence: false });
    expect(pushCarryFlag('presence')).toEqual({ typing: false, receipts: false, presence: true });
  });
  it('names an unknown item and the choices', () => {
    expect(() => pushCarryFlag('typing,read')).toThrowError(/unknown item "read"; use a comma-separated list of typing, receipts, presence/);
  });
});
