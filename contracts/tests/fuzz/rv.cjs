// Runs the Rendezvous CLI (`rv`) against this project.
// Rendezvous 0.12 reads deployment plans in the older nested shape
// (`- emulated-contract-publish: {contract-name, ...}`), while clarinet-sdk 3.x writes the flat
// shape (`- transaction-type: emulated-contract-publish` plus the same keys). This shim converts
// the plan on read; nothing on disk changes. Usage: node tests/fuzz/rv.cjs . <contract> <mode> [--runs=N]
const fs = require("node:fs");
const path = require("node:path");
const YAML = require("yaml");

const originalRead = fs.readFileSync;
fs.readFileSync = function patchedRead(file, ...rest) {
  const content = originalRead.call(this, file, ...rest);
  if (typeof file !== "string" || !file.endsWith(path.join("deployments", "default.simnet-plan.yaml"))) {
    return content;
  }
  const plan = YAML.parse(content.toString());
  for (const batch of plan.plan?.batches ?? []) {
    batch.transactions = batch.transactions.map((tx) => {
      if (!tx["transaction-type"]) return tx;
      const { "transaction-type": kind, ...fields } = tx;
      return { [kind]: fields };
    });
  }
  return YAML.stringify(plan);
};

const { main } = require("@stacks/rendezvous/dist/app.js");
main();
