import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Only the TypeScript sources: never the compiled copies under dist/.
    include: ['test/**/*.test.ts'],
    exclude: ['**/node_modules/**', 'dist/**'],
    setupFiles: ['test/setup.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // The summary reporter prints `Tests: N passed, N failed` as the run's very last line (read by CI).
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
