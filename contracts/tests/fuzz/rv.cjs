// Runs the Rendezvous CLI (`rv`) against this project.
// Rendezvous 0.12 reads deployment plans in the older nested shape
// (`- emulated-contract-publish: {contract-name, ...}`), while clarinet-sdk 3.x writes the flat
// shape (`- transaction-type: emulated-contract-publish` plus the same keys). This shim converts
// the plan on read; nothing on disk changes. The plan orders publishes by the deployed contracts'
// own dependencies, which do not include calls that only the appended *.tests.clar fixtures make
// at deploy time; TEST_DEPENDENCIES moves those callees ahead of their caller.
// Usage: node tests/fuzz/rv.cjs . <contract> <mode> [--runs=N]
const fs = require("node:fs");
const path = require("node:path");
const YAML = require("yaml");

// contract -> contracts its Rendezvous fixture calls at deploy (sbtc-token: grants to wallets)
const TEST_DEPENDENCIES = { marketplace: ["sbtc-token"] };

function publishFirst(transactions) {
  const name = (tx) => tx["emulated-contract-publish"]?.["contract-name"];
  const out = [...transactions];
  for (const [caller, callees] of Object.entries(TEST_DEPENDENCIES)) {
    for (const callee of callees) {
      const at = out.findIndex((tx) => name(tx) === caller);
      const from = out.findIndex((tx) => name(tx) === callee);
      if (at >= 0 && from > at) out.splice(at, 0, ...out.splice(from, 1));
    }
  }
  return out;
}

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
    batch.transactions = publishFirst(batch.transactions);
  }
  return YAML.stringify(plan);
};

const { main } = require("@stacks/rendezvous/dist/app.js");
main();
