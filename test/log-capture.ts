/** A pino logger whose lines a test can read back, as parsed objects, in order. */
import { Writable } from 'node:stream';
import { pino } from 'pino';

export function capturedLog(level: pino.Level = 'info'): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level }, stream), lines };
}
