#!/usr/bin/env node
// Record a scripted chain as the raw event-observer requests a stacks-node would have sent.
//
//   node devnet/record.mjs --scenario demo --out ../tests/fixtures/demo
//   node devnet/record.mjs --scenario scale --certificates 100000 --out /tmp/scale [--ipfs]
//
// Output: chain.tsv (stacks-blockchain-api event_observer_requests export: id, receive_timestamp,
// event_path, payload in PostgreSQL COPY text format), ipfs/<CID> metadata files, manifest.json
// and (not for `scale`) calls.jsonl, the recorder's own log of every block it built and every
// call in it with its arguments and result. The same input always produces byte-identical files.
import { createWriteStream, mkdirSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { dirname, resolve, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Chain, TsvWriter } from "./lib/chain.mjs";
import { demoScenario, scaleScenario, fixtureScenario } from "./scenarios.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));

export class UsageError extends Error {
  constructor(message) {
    super(message);
    this.name = "UsageError";
  }
}

export function parseArgs(argv) {
  const opts = { scenario: null, out: null, certificates: 10000, ipfs: false, manifestPath: resolve(HERE, "../Clarinet.toml"), quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--scenario") opts.scenario = next();
    else if (a === "--out") opts.out = resolve(next());
    else if (a === "--certificates") opts.certificates = Number(next());
    else if (a === "--manifest") opts.manifestPath = resolve(next());
    else if (a === "--ipfs") opts.ipfs = true;
    else if (a === "--quiet") opts.quiet = true;
    else throw new UsageError(`unknown option ${a}`);
  }
  if (!["demo", "scale", "fixture"].includes(opts.scenario)) throw new UsageError("--scenario must be demo, scale or fixture");
  if (!opts.out) throw new UsageError("--out DIR is required");
  if (!Number.isInteger(opts.certificates) || opts.certificates < 1 || opts.certificates > 10_000_000) {
    throw new UsageError("--certificates must be an integer 1..10000000");
  }
  return opts;
}

function jsonable(v) {
  return JSON.parse(JSON.stringify(v, (_, x) => (typeof x === "bigint" ? x.toString() : x)));
}

export async function record(opts) {
  const log = opts.quiet ? () => {} : (m) => console.error(`[record] ${m}`);
  const started = Date.now();
  mkdirSync(opts.out, { recursive: true });
  const tsvPath = join(opts.out, "chain.tsv");
  const stream = createWriteStream(tsvPath);
  // Stream rows as they are produced (scale runs can be large); respect backpressure loosely by
  // buffering in the stream, which is bounded by the scenario's own pace.
  const writer = new TsvWriter((s) => stream.write(s));
  const scale = opts.scenario === "scale";
  const logPath = join(opts.out, "calls.jsonl");
  const calls = scale ? null : createWriteStream(logPath);
  if (scale && existsSync(logPath)) rmSync(logPath);
  // Benchmarks skip cost tracking (half of simnet's time), the replay log (memory) and the call log.
  const chain = await Chain.open({
    manifestPath: opts.manifestPath,
    sink: (p, payload, t) => writer.add(p, payload, t),
    trackCosts: !scale,
    keepOps: !scale,
    onBlock: calls ? (entry) => calls.write(JSON.stringify(entry) + "\n") : null,
  });
  await chain.emitDeployments();
  let result;
  if (opts.scenario === "demo") result = await demoScenario(chain, { log });
  else if (opts.scenario === "scale") result = await scaleScenario(chain, { certificates: opts.certificates, log, writeIpfs: opts.ipfs });
  else {
    result = await fixtureScenario(chain);
    result = { forks: [], ipfs: new Map(), summary: {}, roles: {} };
  }
  await new Promise((r, j) => stream.end((e) => (e ? j(e) : r())));
  if (calls) await new Promise((r, j) => calls.end((e) => (e ? j(e) : r())));

  const ipfsDir = join(opts.out, "ipfs");
  if (existsSync(ipfsDir)) rmSync(ipfsDir, { recursive: true });
  if (result.ipfs.size) {
    mkdirSync(ipfsDir, { recursive: true });
    for (const cid of [...result.ipfs.keys()].sort()) writeFileSync(join(ipfsDir, cid), result.ipfs.get(cid));
  }

  // Request totals cover every branch as delivered, so a consumer can check its raw store.
  const totals = {
    requests: writer.id,
    by_path: writer.counts,
    blocks: writer.counts["/new_block"] ?? 0,
    transactions: writer.transactions ?? 0,
    events: writer.events ?? 0,
  };
  const manifest = {
    format: "stacks-blockchain-api event_observer_requests TSV (id, receive_timestamp, event_path, payload)",
    scenario: opts.scenario,
    network: { transaction_version: 128, chain_id: 2147483648 },
    deployer: chain.deployer,
    contracts: Object.fromEntries(chain.deployments.map((d) => [d.contract_id.split(".")[1], d.contract_id])),
    deployments: chain.deployments,
    accounts: chain.accounts.map((a) => ({ name: a.name, address: a.address, roles: result.roles[a.name] ?? [] })),
    canonical_tip: {
      height: chain.tip().block_height,
      index_block_hash: chain.tip().index_block_hash,
      block_hash: chain.tip().block_hash,
    },
    counts: {
      ...totals,
      canonical_blocks: chain.headers.length,
      canonical_transactions: chain.stats.txs,
      canonical_events: chain.stats.events,
      canonical_failed_transactions: chain.stats.failedTxs,
      burn_blocks: chain.stats.burnBlocks,
      ipfs_files: result.ipfs.size,
    },
    forks: result.forks,
    summary: jsonable(result.summary),
  };
  writeFileSync(join(opts.out, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  const secs = (Date.now() - started) / 1000;
  log(
    `${opts.scenario}: ${manifest.counts.blocks} blocks (${chain.headers.length} canonical, tip ${chain.tip().block_height}), ` +
      `${chain.stats.txs} canonical txs, ${chain.stats.events} canonical events, ${result.forks.length} forks, ` +
      `${result.ipfs.size} ipfs files -> ${opts.out} in ${secs.toFixed(1)} s`,
  );
  return manifest;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message}\nusage: node devnet/record.mjs --scenario demo|scale [--certificates N] [--ipfs] --out DIR`);
      process.exit(2);
    }
    throw e;
  }
  try {
    await record(opts);
  } catch (e) {
    console.error(`record failed: ${e.message}`);
    if (e.details) console.error(JSON.stringify(e.details));
    process.exit(1);
  }
}
