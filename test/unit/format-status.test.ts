/**
 * `troupe status` text: the store line appears only while the store is stopped, with why, since
 * when and how many tries.
 */
import { describe, expect, it } from 'vitest';
import { formatStatus } from '../../src/cli/format.js';
import type { RuntimeStats } from '../../src/stats.js';

function stats(storeFailure: RuntimeStats['storeFailure']): RuntimeStats {
  return { state: 'running', tasks: { queued: 2 }, freeze: null, slots: { busy: 1, total: 8 }, queued: 2, agents: {}, storeFailure } as unknown as RuntimeStats;
}

describe('formatStatus', () => {
  it('says nothing of the store while it is up', () => {
    expect(formatStatus(stats(null), [], 'socket')).not.toContain('store');
  });

  it('says the store is stopped, since when, after how many tries, and why', () => {
    const since = Date.UTC(2026, 11, 5, 22, 0, 0);
    const text = formatStatus(stats({ message: 'the store stopped after a failed commit (ENOSPC)', since, retries: 4, lastError: 'still full' }), [], 'socket');
    expect(text).toContain('store     stopped since 2026-12-05T22:00:00.000Z, 4 tries to open it again: the store stopped after a failed commit (ENOSPC)\n');
    expect(text.indexOf('store ')).toBeLessThan(text.indexOf('tasks '));
  });
});
