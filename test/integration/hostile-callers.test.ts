/**
 * Runtime options that were silently wrong on LMDB (a data dir, a metrics port: neither is taken on
 * PostgreSQL). The hostile calls both stores share (listeners that throw, options a call does not
 * know, updates of fields that cannot change) are in contract-faults.ts and contract-schedules.ts.
 */
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createRuntime, type RuntimeOptions } from 'troupe';
import { rejection, tempDir } from '../helpers.js';

describe('settings that were silently wrong', () => {
  it('are INVALID_OPTIONS naming the option, before anything is opened', async () => {
    const dir = tempDir();
    const file = join(dir.path, 'a-file');
    writeFileSync(file, 'not a dir');
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const busy = (holder.address() as AddressInfo).port;
    try {
      const cases: Array<[RuntimeOptions, string]> = [
        [{ dataDir: `${dir.path}/x\u0000y` }, 'options.dataDir must not contain a NUL byte'],
        [{ dataDir: file }, 'is not a directory'],
        [{ dataDir: join(dir.path, 'rt'), threads: 100_000 }, 'options.threads must be at most 256'],
        [{ dataDir: join(dir.path, 'rt'), slotsPerThread: 1_000_000 }, 'options.slotsPerThread must be at most 1000'],
        [{ dataDir: join(dir.path, 'rt'), logger: { level: 'nope' } }, 'options.logger'],
        [{ dataDir: join(dir.path, 'rt'), agents: [{ name: 'dir', module: pathToFileURL(dir.path) }] }, 'is not a file'],
        [{ dataDir: join(dir.path, 'rt'), agents: [{ name: 'far', module: 'file://otherhost/x.js' }] }, 'is not a local file URL or path'],
        [{ dataDir: join(dir.path, 'rt'), metricsPort: busy }, `options.metricsPort: cannot listen on 127.0.0.1:${busy}`],
      ];
      for (const [options, message] of cases) {
        const error = await rejection(createRuntime({ logger: false, threads: 1, ...options }));
        expect(error.code, message).toBe('INVALID_OPTIONS');
        expect(error.message).toContain(message);
      }
      // The busy port left nothing behind: the same dir opens.
      const rt = await createRuntime({ dataDir: join(dir.path, 'rt'), logger: false, threads: 1 });
      await rt.close();
    } finally {
      holder.close();
      dir.cleanup();
    }
  });
});
