// Runs every Rendezvous campaign with a bounded number of runs and fails when any invariant or
// property fails (the CLI's own exit status does not always reflect that).
// Usage: node tests/fuzz/run.mjs [runs]   (default 100)
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const project = path.resolve(here, "../..");
const runs = Number(process.argv[2] ?? process.env.FUZZ_RUNS ?? 100);
const campaigns = [
  ["rec-nft", "invariant"],
  ["rec-nft", "test"],
  ["marketplace", "invariant"],
  ["marketplace", "test"],
];

let failed = false;
for (const [contract, mode] of campaigns) {
  const out = spawnSync(process.execPath, [path.join(here, "rv.cjs"), ".", contract, mode, `--runs=${runs}`], {
    cwd: project,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  const text = `${out.stdout}\n${out.stderr}`;
  const failedSection = text.split("- FAILED")[1]?.split("LEGEND")[0] ?? "";
  const failures = [...failedSection.matchAll(/([\w-]+): x(\d+)/g)].filter(([, , n]) => Number(n) > 0);
  const passedSection = text.split("+ PASSED")[1]?.split(/[-!] (FAILED|DISCARDED)/)[0] ?? "";
  const passes = [...passedSection.matchAll(/([\w-]+): x(\d+)/g)].reduce((sum, [, , n]) => sum + Number(n), 0);
  const ok = out.status === 0 && failures.length === 0 && passes > 0;
  console.log(`${ok ? "ok  " : "FAIL"} ${contract} ${mode}: ${passes} checks passed` +
    (failures.length ? `, failed: ${failures.map(([, name, n]) => `${name} x${n}`).join(", ")}` : ""));
  if (!ok) {
    failed = true;
    console.log(text.slice(-4000));
  }
}
process.exit(failed ? 1 : 0);
