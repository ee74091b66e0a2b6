/**
 * Resolves when `promise` settles or `ms` have passed (wall time), whichever is first: for waits
 * that must end (a close's grace, a scrape's wait for fresh counts). The timer is cleared either
 * way; with `unref` it does not hold the process meanwhile. A rejection of `promise` within the
 * time is passed on.
 */
export async function within(ms: number, promise: Promise<unknown>, unref = false): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      promise,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ms);
        if (unref) timer.unref();
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
