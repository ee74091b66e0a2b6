/**
 * The progress bar commands show while they wait: `[#####.....] 45% message`, redrawn in place on
 * stderr. It draws only on a TTY and never with `--json`, so piped output stays clean.
 */

/** Width of the bar between the brackets. */
export const BAR_WIDTH = 30;

/** Renders one bar line for `value` in 0..1 (clamped; NaN counts as 0). */
export function renderBar(value: number, width: number = BAR_WIDTH, message?: string): string {
  const fraction = Number.isFinite(value) ? Math.min(1, Math.max(0, value)) : 0;
  const filled = Math.round(fraction * width);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(fraction * 100)).padStart(3)}%`;
  return message ? `${bar} ${message}` : bar;
}

/** A bar bound to a stream. */
export interface ProgressBar {
  update(value: number, message?: string): void;
  /** Clears the bar's line, so what follows starts on a clean one. */
  done(): void;
}

/** A bar on `stream`; a no-op unless `enabled` and the stream is a TTY. */
export function createProgressBar(stream: NodeJS.WriteStream, enabled: boolean): ProgressBar {
  if (!enabled || !stream.isTTY) return { update: () => undefined, done: () => undefined };
  let drawn = false;
  const columns = () => Math.max(20, (stream.columns ?? 80) - 1);
  return {
    update(value, message) {
      const line = renderBar(value, BAR_WIDTH, message).slice(0, columns());
      stream.write(`\r${line}\u001b[K`);
      drawn = true;
    },
    done() {
      if (drawn) stream.write('\r\u001b[K');
      drawn = false;
    },
  };
}
