// The one polling helper: waits for a condition that another process, the event loop or a timer brings about. Where a
// test bounds how fast something must happen (a change seen by every instance within a second), `ms` is that bound;
// elsewhere it only keeps a broken run from hanging. Either way a miss throws, naming what was awaited.

/** Polls `check` every `everyMs` until it holds; throws after `ms`. Answers how long it took. */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 5000, what = 'condition', everyMs = 20): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > ms) throw new Error(`${what}: not reached within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  return Date.now() - started;
}
