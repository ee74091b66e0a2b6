/**
 * A commit of lmdb-js, failing with its cause. On a failed commit (a full disk's ENOSPC, an EIO)
 * lmdb-js rejects with a generic error and rejects a second promise, `error.commitError`, with the
 * cause, leaving it to whoever reads it: unread, that rejection would take the process down.
 */
export function committed<T>(commit: Promise<T>): Promise<T> {
  return commit.catch(async (error: Error & { commitError?: Promise<unknown> }) => {
    const pending = error?.commitError;
    if (!pending) throw error;
    // It is rejected in the same callback as the commit, so its reason is there at once; should it
    // still be pending, the commit's own error goes out after a turn rather than never.
    const cause = await Promise.race([
      pending.then(
        () => error,
        (reason: unknown) => (reason instanceof Error ? reason : error),
      ),
      new Promise<Error>((resolve) => setImmediate(() => resolve(error))),
    ]);
    throw cause;
  });
}
