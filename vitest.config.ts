import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Only the TypeScript sources: never the compiled copies under dist/.
    include: ['test/**/*.test.ts'],
    exclude: ['**/node_modules/**', 'dist/**'],
    setupFiles: ['test/setup.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    // Three test files at a time: most of a file's time is spent waiting (servers, timers, child processes), so on a
    // two-core machine this brings a run from about nine minutes to six. Timing assertions scale with the load they see.
    maxWorkers: 3,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // The summary reporter prints `Tests: N passed, N failed` as the run's very last line (read by CI).
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
