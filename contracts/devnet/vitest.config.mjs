import { defineConfig } from "vitest/config";

// The devnet recorder and node run in plain Node (they open their own simnet sessions and real
// HTTP servers), so they need neither the clarinet environment nor its setup file.
export default defineConfig({
  test: {
    environment: "node",
    include: ["devnet/**/*.test.mjs"],
    pool: "forks",
    maxWorkers: 1,
    testTimeout: 120000,
    hookTimeout: 180000,
  },
});
