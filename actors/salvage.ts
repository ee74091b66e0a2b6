/**
 * A turn's reports when their batch could not be posted. `postMessage` copies the batch only at
 * the end of the turn, and an agent may change what it handed over before then (a log line's
 * fields, the value it returned) so that it can no longer be copied (a function, a class instance):
 * the post throws, and with it would go every report of the turn, its neighbours' outcomes too.
 * Here each report is posted alone, and one that cannot be copied is replaced by what the host can
 * store: an outcome by an INVALID_RESULT end, a log line's fields by a field saying why. This path
 * is slow on purpose; the common turn posts its one batch and copies nothing beforehand.
 */
import { invalidResult } from './results.js';
import { describeUnserializable, messageOf, Report, REPORT_STRIDE, type WireLogLine, type WireResult, type WorkerBatch } from './wire.js';

/** Posts `batch` report by report through `post`, replacing each report that cannot be copied. */
export function postEach(post: (batch: WorkerBatch) => void, batch: WorkerBatch): void {
  for (let i = 0; i < batch.length; i += REPORT_STRIDE) {
    const report = batch.slice(i, i + REPORT_STRIDE);
    try {
      post(report);
      continue;
    } catch (error) {
      const replaced = replacement(report, error);
      if (!replaced) continue;
      try {
        post(replaced);
      } catch {
        // Even the replacement could not be sent: nothing more can be said for this report.
      }
    }
  }
}

/** What stands for a report that could not be copied, or undefined when nothing can. */
function replacement([kind, attemptId, token, payload]: unknown[], error: unknown): WorkerBatch | undefined {
  const why = `could not be copied to the host (${messageOf(error)})`;
  switch (kind) {
    case Report.OUTPUT:
      return [Report.END, attemptId, token, invalidResult(describeUnserializable(payload, 'result.output') ?? `result.output ${why}`)];
    case Report.END: {
      const result = payload as WireResult;
      const problem = result.ok ? describeUnserializable(result.result, 'result') : describeUnserializable(result.error, 'error');
      return [Report.END, attemptId, token, invalidResult(problem ?? `the agent's ${result.ok ? 'result' : 'error'} ${why}`)];
    }
    case Report.LOG:
      return [Report.LOG, attemptId, token, (payload as WireLogLine[]).map((line) => plainLine(line, why))];
    default:
      return undefined;
  }
}

/** A log line whose fields are replaced by one saying why, if they cannot be copied. */
function plainLine(line: WireLogLine, why: string): WireLogLine {
  const fields = line[3];
  if (fields === undefined) return line;
  const problem = describeUnserializable(fields, 'fields');
  if (problem === undefined) {
    try {
      structuredClone(fields);
      return line;
    } catch {
      // Below: they pass the check and still cannot be copied.
    }
  }
  return [line[0], line[1], line[2], { unserializable: problem ?? `fields ${why}` }];
}
