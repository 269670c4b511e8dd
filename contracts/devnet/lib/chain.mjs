// A Stacks chain driven by clarinet-sdk simnet: every call is a real signed transaction and every
// mined block is described exactly as a stacks-node event observer would receive it.
//
// Payload shapes follow stacks-core's event dispatcher (docs/event-dispatcher.md and
// event_dispatcher/payloads.rs) as consumed by stacks-blockchain-api's event server.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { getSDK, tx as simTx } from "@stacks/clarinet-sdk";
import {
  makeUnsignedContractCall,
  TransactionSigner,
  privateKeyToPublic,
  makeContractDeploy,
  serializeCV,
  serializeTransaction,
  ClarityVersion,
  PostConditionMode,
  wireToPostCondition,
  Cl,
} from "@stacks/transactions";
import { loadDevnetAccounts } from "./keys.mjs";

export const TESTNET_CHAIN_ID = 0x80000000;
/**
 * 2026-01-05 21:00:00 UTC: every recording starts here, so output never depends on the clock
 * (late in a UTC day, so that the demo's trading reaches three calendar days in few blocks).
 */
export const BASE_TIME = 1767646800;
export const DEFAULT_FEE = 2000n;

export class RecorderError extends Error {
  constructor(message, details) {
    super(message);
    this.name = "RecorderError";
    this.details = details;
  }
}

/** Deterministic hex hash of a label: block hashes are derived from height and branch. */
export function hashHex(label, bytes = 32) {
  return "0x" + createHash("sha256").update(label).digest("hex").slice(0, bytes * 2);
}

// Simnet echoes every Clarity `print` to stdout; a recorder that prints progress must mute it.
function quiet(fn) {
  const log = console.log;
  console.log = () => {};
  try {
    return fn();
  } finally {
    console.log = log;
  }
}

/** `[contracts.NAME]` entries of a Clarinet.toml: name, path, clarity_version, in file order. */
export function readManifestContracts(manifestPath) {
  const out = [];
  let cur = null;
  for (const raw of readFileSync(manifestPath, "utf8").split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    const t = line.match(/^\[contracts\.([^\]]+)\]$/);
    if (t) {
      cur = { name: t[1].replace(/^"|"$/g, ""), clarityVersion: 2 };
      out.push(cur);
      continue;
    }
    if (line.startsWith("[")) {
      cur = null;
      continue;
    }
    const kv = cur && line.match(/^([a-z_]+)\s*=\s*(.+)$/);
    if (!kv) continue;
    if (kv[1] === "path") cur.path = kv[2].replace(/^"|"$/g, "");
    if (kv[1] === "clarity_version") cur.clarityVersion = Number(kv[2]);
  }
  return out;
}

/** Open a fresh, independent simnet session for a Clarinet project. */
export async function openSimnet(manifestPath, { trackCosts = true } = {}) {
  const abs = resolve(manifestPath);
  const simnet = await getSDK({ trackCosts, trackCoverage: false });
  await quiet(() => simnet.initSession(dirname(abs), "./" + abs.split("/").pop(), null));
  return simnet;
}

const COST_KEYS = [
  ["read_count", "readCount"],
  ["read_length", "readLength"],
  ["runtime", "runtime"],
  ["write_count", "writeCount"],
  ["write_length", "writeLength"],
];
const zeroCost = () => Object.fromEntries(COST_KEYS.map(([k]) => [k, 0]));

function costOf(costs) {
  const c = zeroCost();
  if (costs && costs.total) for (const [k, j] of COST_KEYS) c[k] = Number(costs.total[j] ?? 0);
  return c;
}

const EVENT_KEY = {
  print_event: "contract_event",
  stx_transfer_event: "stx_transfer_event",
  stx_mint_event: "stx_mint_event",
  stx_burn_event: "stx_burn_event",
  stx_lock_event: "stx_lock_event",
  nft_transfer_event: "nft_transfer_event",
  nft_mint_event: "nft_mint_event",
  nft_burn_event: "nft_burn_event",
  ft_transfer_event: "ft_transfer_event",
  ft_mint_event: "ft_mint_event",
  ft_burn_event: "ft_burn_event",
};

/** Map one simnet event to the observer's `{type, <type>: {...}}` shape. */
function observerEvent(ev, txid, eventIndex) {
  const type = EVENT_KEY[ev.event];
  if (!type) throw new RecorderError(`unknown simnet event type ${ev.event}`);
  const d = ev.data;
  let body;
  if (type === "contract_event") {
    body = { contract_identifier: d.contract_identifier, topic: d.topic, raw_value: d.raw_value };
  } else if (type.startsWith("nft_")) {
    body = { asset_identifier: d.asset_identifier };
    if (d.sender !== undefined) body.sender = d.sender;
    if (d.recipient !== undefined) body.recipient = d.recipient;
    body.raw_value = d.raw_value;
  } else if (type.startsWith("ft_")) {
    body = { asset_identifier: d.asset_identifier };
    if (d.sender !== undefined) body.sender = d.sender;
    if (d.recipient !== undefined) body.recipient = d.recipient;
    body.amount = String(d.amount);
  } else {
    body = {};
    for (const k of ["sender", "recipient", "locked_address", "unlock_height"]) {
      if (d[k] !== undefined) body[k] = d[k];
    }
    body.amount = String(d.amount ?? d.locked_amount ?? "0");
    if (type === "stx_transfer_event") body.memo = d.memo ? d.memo : "";
  }
  return { txid, event_index: eventIndex, committed: true, type, [type]: body };
}

/**
 * Check a successful call's asset movements against its post-conditions, the way a node does in
 * deny mode: every outflow (sender, asset) must be covered and every condition must hold.
 * Simnet does not enforce post-conditions, so a recording whose transactions a node would abort
 * is refused here instead of being written with a false `success`.
 */
export function checkPostConditions(postConditions, events, mode = "deny") {
  const fungible = new Map(); // "principal|asset" -> bigint sent
  const nfts = new Map(); // "principal|asset|rawValue" -> true
  for (const ev of events) {
    const d = ev.data;
    if (ev.event === "stx_transfer_event" || ev.event === "stx_burn_event") {
      const k = `${d.sender}|stx`;
      fungible.set(k, (fungible.get(k) ?? 0n) + BigInt(d.amount));
    } else if (ev.event === "ft_transfer_event" || ev.event === "ft_burn_event") {
      const k = `${d.sender}|${d.asset_identifier}`;
      fungible.set(k, (fungible.get(k) ?? 0n) + BigInt(d.amount));
    } else if (ev.event === "nft_transfer_event" || ev.event === "nft_burn_event") {
      nfts.set(`${d.sender}|${d.asset_identifier}|${d.raw_value}`, true);
    }
  }
  const covered = new Set();
  const problems = [];
  for (const pc of postConditions) {
    if (pc.type === "stx-postcondition" || pc.type === "ft-postcondition") {
      const asset = pc.type === "stx-postcondition" ? "stx" : pc.asset.split("::")[0] + "::" + pc.asset.split("::")[1];
      const k = `${pc.address}|${asset}`;
      covered.add(k);
      const sent = fungible.get(k) ?? 0n;
      const want = BigInt(pc.amount);
      const ok = { eq: sent === want, gt: sent > want, gte: sent >= want, lt: sent < want, lte: sent <= want }[pc.condition];
      if (!ok) problems.push(`${k} sent ${sent}, condition ${pc.condition} ${want}`);
    } else if (pc.type === "nft-postcondition") {
      const raw = "0x" + serializeCV(pc.assetId);
      const k = `${pc.address}|${pc.asset}|${raw}`;
      covered.add(k);
      const sent = nfts.has(k);
      if ((pc.condition === "sent") !== sent) problems.push(`${k} ${pc.condition} but sent=${sent}`);
    }
  }
  for (const k of [...fungible.keys(), ...nfts.keys()]) {
    if (mode === "deny" && !covered.has(k)) problems.push(`outflow ${k} not covered by a post-condition`);
  }
  return problems;
}

/** Post-condition problems of a signed transaction, read from its own wire form. */
export function postConditionProblems(t, events) {
  const pcs = (t.postConditions.values ?? []).map(wireToPostCondition);
  const mode = t.postConditionMode === PostConditionMode.Allow ? "allow" : "deny";
  return checkPostConditions(pcs, events, mode);
}

/**
 * A Clarity value as plain JSON for the recorder's call log: integers as decimal strings (u128
 * does not fit a JSON number), strings and principals as strings, buffers as 0x-hex, `none` as
 * null, `(some v)` as v, lists as arrays, tuples as objects, responses as {ok} / {err}.
 */
export function plainCV(cv) {
  switch (cv.type) {
    case "int":
    case "uint":
      return String(cv.value);
    case "true":
      return true;
    case "false":
      return false;
    case "address":
    case "contract":
    case "ascii":
    case "utf8":
      return cv.value;
    case "buffer":
      return "0x" + cv.value;
    case "none":
      return null;
    case "some":
      return plainCV(cv.value);
    case "ok":
      return { ok: plainCV(cv.value) };
    case "err":
      return { err: plainCV(cv.value) };
    case "list":
      return cv.value.map(plainCV);
    case "tuple":
      return Object.fromEntries(Object.keys(cv.value).sort().map((k) => [k, plainCV(cv.value[k])]));
    default:
      throw new RecorderError(`unknown Clarity type ${cv.type}`);
  }
}

/** Format unix seconds + microseconds like PostgreSQL's timestamptz text output in UTC. */
export function pgTimestamp(micros) {
  const secs = Math.floor(micros / 1e6);
  const frac = String(micros % 1e6).padStart(6, "0");
  const iso = new Date(secs * 1000).toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}.${frac}+00`;
}

/** Escape a field for PostgreSQL COPY text format. */
export function copyEscape(s) {
  return s.replace(/\\/g, "\\\\").replace(/\t/g, "\\t").replace(/\n/g, "\\n").replace(/\r/g, "\\r");
}

/**
 * The chain: one simnet session plus the block headers mined on it. `sink(path, payload, time)`
 * receives every observer request in delivery order.
 */
export class Chain {
  constructor({ simnet, manifestPath, accounts, sink, branch = "main", tenureBlocks = 8, onBlock = null }) {
    this.simnet = simnet;
    this.manifestPath = resolve(manifestPath);
    this.accounts = accounts;
    this.byName = new Map(accounts.map((a) => [a.name, a]));
    this.byAddress = new Map(accounts.map((a) => [a.address, a]));
    this.sink = sink;
    // Receives the recorder's own account of every block it built (`callLogEntry`).
    this.onBlock = onBlock;
    this.branch = branch;
    this.tenureBlocks = tenureBlocks;
    this.nonces = new Map(accounts.map((a) => [a.address, 0n]));
    this.feesPaid = new Map();
    this.ops = []; // replayable log of what was done to the simnet
    this.keepOps = true;
    this.headers = []; // mined stacks block headers, in order
    this.txidsByBlock = new Map();
    this.burn = null; // current burn block header
    this.t0 = Number(simnet.getBlockTime());
    this.blocksInTenure = 0;
    this.stats = { blocks: 0, txs: 0, events: 0, burnBlocks: 0, failedTxs: 0 };
    this.deployer = simnet.deployer;
  }

  static async open({ manifestPath, sink, tenureBlocks, trackCosts = true, keepOps = true, onBlock = null }) {
    const simnet = await openSimnet(manifestPath, { trackCosts });
    const accounts = loadDevnetAccounts(resolve(dirname(resolve(manifestPath)), "settings/Devnet.toml"));
    const funded = simnet.getAccounts();
    for (const [name, addr] of funded) {
      const a = accounts.find((x) => x.name === name);
      if (a && a.address !== addr) {
        throw new RecorderError(`account ${name}: derived ${a.address} but simnet funds ${addr}`);
      }
    }
    const chain = new Chain({ simnet, manifestPath, accounts, sink, tenureBlocks, onBlock });
    // Without the log no fork or rebuild is possible, but a long benchmark chain stays small.
    chain.keepOps = keepOps;
    return chain;
  }

  account(who) {
    const a = this.byName.get(who) ?? this.byAddress.get(who);
    if (!a) throw new RecorderError(`unknown account ${who}`);
    return a;
  }

  contractId(name) {
    return name.includes(".") ? name : `${this.deployer}.${name}`;
  }

  blockTime() {
    return BASE_TIME + (Number(this.simnet.getBlockTime()) - this.t0);
  }

  tip() {
    return this.headers[this.headers.length - 1] ?? null;
  }

  emit(path, payload, time) {
    if (this.sink) this.sink(path, payload, time);
  }

  newBurnBlock(time = this.blockTime()) {
    const height = this.simnet.burnBlockHeight;
    const parent = this.burn;
    // Burn blocks are never forked here: Stacks forks below are all within one burnchain.
    this.burn = {
      burn_block_hash: hashHex(`burn|${height}`),
      burn_block_height: height,
      burn_block_time: time,
      consensus_hash: hashHex(`consensus|${height}`, 20),
      parent_burn_block_hash: parent ? parent.burn_block_hash : hashHex(`burn|${height - 1}`),
      parent_burn_block_height: parent ? parent.burn_block_height : height - 1,
      parent_burn_block_timestamp: parent ? parent.burn_block_time : time - 600,
    };
    this.stats.burnBlocks++;
    this.emit(
      "/new_burn_block",
      {
        burn_block_hash: this.burn.burn_block_hash,
        burn_block_height: height,
        reward_recipients: [],
        reward_slot_holders: [],
        burn_amount: 0,
        consensus_hash: this.burn.consensus_hash,
        parent_burn_block_hash: this.burn.parent_burn_block_hash,
        pox_transactions: [],
      },
      this.burn.burn_block_time,
    );
  }

  /** Build, sign and describe one block; `txs` are prepared transaction records. */
  emitBlock(height, txRecords, time) {
    if (!this.burn) this.newBurnBlock();
    const parent = this.tip();
    const label = `${this.branch}|${height}`;
    const block_hash = hashHex(`block|${label}`);
    const index_block_hash = hashHex(`index|${label}`);
    const events = [];
    // event_index counts across the whole block, as stacks-node's dispatcher numbers them.
    const transactions = txRecords.map((r, i) => {
      r.events.forEach((e) => events.push(observerEvent(e, r.txid, events.length)));
      return {
        txid: r.txid,
        tx_index: i,
        status: r.status,
        raw_result: r.rawResult,
        raw_tx: r.rawTx,
        execution_cost: r.cost,
        microblock_sequence: null,
        microblock_hash: null,
        microblock_parent_hash: null,
        burnchain_op: null,
        contract_interface: r.contractInterface ?? null,
        vm_error: r.vmError ?? null,
      };
    });
    const anchored = zeroCost();
    for (const t of transactions) for (const [k] of COST_KEYS) anchored[k] += t.execution_cost[k];
    const header = {
      block_hash,
      block_height: height,
      block_time: time,
      burn_block_hash: this.burn.burn_block_hash,
      burn_block_height: this.burn.burn_block_height,
      burn_block_time: this.burn.burn_block_time,
      miner_txid: hashHex(`miner|${label}`),
      index_block_hash,
      parent_block_hash: parent ? parent.block_hash : hashHex("block|genesis"),
      parent_index_block_hash: parent ? parent.index_block_hash : hashHex("index|genesis"),
      parent_microblock: "0x" + "00".repeat(32),
      parent_microblock_sequence: 0,
      parent_burn_block_hash: this.burn.parent_burn_block_hash,
      parent_burn_block_height: this.burn.parent_burn_block_height,
      parent_burn_block_timestamp: this.burn.parent_burn_block_timestamp,
      consensus_hash: this.burn.consensus_hash,
      tenure_height: this.burn.burn_block_height,
    };
    this.headers.push(header);
    this.txidsByBlock.set(index_block_hash, transactions.map((t) => t.txid));
    if (this.onBlock) this.onBlock(callLogEntry(this, header, txRecords));
    this.stats.blocks++;
    this.stats.txs += transactions.length;
    this.stats.events += events.length;
    this.emit(
      "/new_block",
      {
        ...header,
        matured_miner_rewards: [],
        events,
        transactions,
        anchored_cost: anchored,
        confirmed_microblocks_cost: zeroCost(),
        pox_v1_unlock_height: 0,
        pox_v2_unlock_height: 0,
        pox_v3_unlock_height: 0,
        signer_bitvec: null,
        reward_set: null,
        cycle_number: null,
      },
      time,
    );
    return header;
  }

  /**
   * Emit the project's contract deployments as smart-contract transactions from the deployer in
   * the blocks before the first scripted block. Simnet deployed them at session start; only
   * contracts owned by the deployer are ours to sign (requirements keep their mainnet origin).
   */
  async emitDeployments() {
    const contracts = readManifestContracts(this.manifestPath);
    const ifaces = this.simnet.getContractsInterfaces();
    const deployer = this.account(this.deployer);
    const records = [];
    for (const c of contracts) {
      const id = `${this.deployer}.${c.name}`;
      const source = this.simnet.getContractSource(id);
      if (source === undefined) throw new RecorderError(`contract ${id} not deployed by simnet`);
      const nonce = this.nonces.get(deployer.address);
      const t = await makeContractDeploy({
        contractName: c.name,
        codeBody: source,
        senderKey: deployer.privateKey,
        network: "testnet",
        nonce,
        fee: DEFAULT_FEE * 10n,
        clarityVersion: c.clarityVersion >= 3 ? ClarityVersion.Clarity3 : ClarityVersion.Clarity2,
        postConditionMode: PostConditionMode.Deny,
      });
      this.nonces.set(deployer.address, nonce + 1n);
      this.addFee(deployer.address, DEFAULT_FEE * 10n);
      records.push({
        txid: "0x" + t.txid(),
        rawTx: "0x" + serializeTransaction(t),
        status: "success",
        rawResult: "0x03",
        cost: zeroCost(),
        events: [],
        contractInterface: ifaces.get(id) ?? null,
        contractId: id,
      });
    }
    // Simnet opens its session with its tip at `blockHeight` (the deployments done); the
    // recording holds them in block 1 and delivers every block up to that tip, in a tenure whose
    // burn block comes first, so no Stacks block is older than its burn block and the first
    // scripted block is the tip's child.
    const heights = Math.max(1, this.simnet.blockHeight);
    if (!this.burn) this.newBurnBlock(BASE_TIME - 10 * (heights + 1));
    for (let h = 1; h <= heights; h++) {
      this.emitBlock(h, h === 1 ? records : [], BASE_TIME - 10 * (heights - h + 1));
    }
    this.deployments = records.map((r) => ({ contract_id: r.contractId, txid: r.txid }));
    return records;
  }

  addFee(address, fee) {
    this.feesPaid.set(address, (this.feesPaid.get(address) ?? 0n) + fee);
  }

  /**
   * Sign a contract call with the sender's devnet key at its next nonce. The public key is
   * derived once per account: deriving it per call (as makeContractCall does) costs more than
   * the signature itself.
   */
  async sign(call, nonce) {
    const sender = this.account(call.sender);
    sender.publicKey ??= privateKeyToPublic(sender.privateKey);
    const [contractAddress, contractName] = this.contractId(call.contract).split(".");
    const t = await makeUnsignedContractCall({
      contractAddress,
      contractName,
      functionName: call.fn,
      functionArgs: call.args,
      publicKey: sender.publicKey,
      network: "testnet",
      nonce: nonce ?? this.nonces.get(sender.address),
      fee: call.fee ?? DEFAULT_FEE,
      postConditionMode: PostConditionMode.Deny,
      postConditions: call.postConditions ?? [],
    });
    new TransactionSigner(t).signOrigin(sender.privateKey);
    return t;
  }

  /**
   * Mine one block holding the given calls: `{sender, contract, fn, args, postConditions,
   * expect?: "ok"|"err"}`. Returns per-call `{txid, result, events, status}`.
   */
  async mine(calls) {
    if (this.blocksInTenure >= this.tenureBlocks) await this.newTenure();
    const signed = [];
    for (const c of calls) {
      const sender = this.account(c.sender);
      const t = await this.sign(c);
      this.nonces.set(sender.address, this.nonces.get(sender.address) + 1n);
      this.addFee(sender.address, BigInt(t.auth.spendingCondition.fee));
      signed.push({ call: c, sender, t });
    }
    return this.mineSigned(signed, { strict: true });
  }

  /**
   * Execute already-signed transactions (nonces and fees already accounted) as one block.
   * `strict` (the recorder): a transaction a node would abort for its post-conditions is a
   * scenario bug and throws. Otherwise (the live node): the block is re-executed on a rebuilt
   * simnet without it, and it is mined as `abort_by_post_condition` with no effects.
   */
  async mineSigned(signed, { strict = true } = {}) {
    // Simnet's `blockHeight` is its tip; the block being built is the next one, and that is the
    // `stacks-block-height` its transactions see (a node prints the same).
    const height = this.simnet.blockHeight + 1;
    const simTxs = signed.map(({ call, sender }) =>
      simTx.callPublicFn(this.contractId(call.contract), call.fn, call.args, sender.address),
    );
    if (this.keepOps) this.ops.push({ kind: "block", txs: simTxs });
    let results = quiet(() => this.simnet.mineBlock(simTxs));
    const failedPc = new Map();
    results.forEach((res, i) => {
      if (res.result.type !== "ok") return;
      const problems = postConditionProblems(signed[i].t, res.events);
      if (problems.length) failedPc.set(i, problems);
    });
    if (failedPc.size) {
      if (strict) {
        const [i, problems] = [...failedPc][0];
        throw new RecorderError(`${signed[i].call.fn}: post-conditions would abort: ${problems.join("; ")}`);
      }
      // Simnet cannot undo a block; replaying the log without the aborted calls can.
      const kept = simTxs.filter((_, i) => !failedPc.has(i));
      // The state before this block, then the block again without the aborted calls.
      this.ops.pop();
      await this.rebuild();
      this.ops.push({ kind: "block", txs: kept });
      const rerun = quiet(() => this.simnet.mineBlock(kept));
      let k = 0;
      results = results.map((r, i) => (failedPc.has(i) ? r : rerun[k++]));
    }
    if (this.simnet.blockHeight !== height) {
      throw new RecorderError(`simnet mined height ${this.simnet.blockHeight}, expected ${height}`);
    }
    const time = this.blockTime();
    const records = results.map((res, i) => {
      const { call, t } = signed[i];
      const ok = res.result.type === "ok" && !failedPc.has(i);
      if (call.expect && (call.expect === "ok") !== (res.result.type === "ok")) {
        throw new RecorderError(
          `${call.fn} by ${call.sender} expected ${call.expect}, got ${Cl.prettyPrint(res.result)}`,
          { height, call: call.fn },
        );
      }
      if (!ok) this.stats.failedTxs++;
      return {
        txid: "0x" + t.txid(),
        rawTx: "0x" + serializeTransaction(t),
        status: failedPc.has(i) ? "abort_by_post_condition" : ok ? "success" : "abort_by_response",
        rawResult: "0x" + serializeCV(res.result),
        cost: costOf(res.costs),
        events: ok ? res.events : [],
        vmError: failedPc.has(i) ? `Post-condition check failure: ${failedPc.get(i).join("; ")}` : null,
        result: res.result,
        call,
        sender: signed[i].sender,
      };
    });
    this.emitBlock(height, records, time);
    this.blocksInTenure++;
    return records;
  }

  /** A fresh simnet session brought to this chain's state by replaying the operation log. */
  async rebuild() {
    if (!this.keepOps) throw new RecorderError("this chain keeps no operation log; it cannot be rebuilt");
    const simnet = await openSimnet(this.manifestPath);
    const t0 = Number(simnet.getBlockTime());
    for (const op of this.ops) {
      quiet(() => (op.kind === "block" ? simnet.mineBlock(op.txs) : simnet.mineEmptyBurnBlock()));
    }
    this.simnet = simnet;
    // Simnet clocks start at session creation; only their deltas are deterministic.
    this.t0 = t0;
  }

  /** Start a new tenure: a new burn block and the (empty) Stacks block simnet mines with it. */
  async newTenure() {
    if (this.keepOps) this.ops.push({ kind: "burn" });
    quiet(() => this.simnet.mineEmptyBurnBlock());
    this.newBurnBlock();
    this.emitBlock(this.simnet.blockHeight, [], this.blockTime());
    this.blocksInTenure = 0;
  }

  /**
   * Quiet time: empty tenures (a burn block and its empty Stacks block each, ten minutes apart
   * on simnet's clock) until the chain's clock reaches `until` (unix seconds).
   */
  async idleUntil(until) {
    while (this.blockTime() < until) await this.newTenure();
  }

  /**
   * A competing branch: a fresh simnet replays everything done so far (simnet is deterministic),
   * so the fork starts from exactly this chain's tip. Its blocks get their own hashes; headers
   * below the fork point are shared.
   */
  async fork(branch) {
    if (!this.keepOps) throw new RecorderError("this chain keeps no operation log; it cannot fork");
    const simnet = await openSimnet(this.manifestPath);
    const t0 = Number(simnet.getBlockTime());
    for (const op of this.ops) {
      quiet(() => (op.kind === "block" ? simnet.mineBlock(op.txs) : simnet.mineEmptyBurnBlock()));
    }
    if (simnet.blockHeight !== this.simnet.blockHeight) {
      throw new RecorderError(`fork replay diverged: ${simnet.blockHeight} != ${this.simnet.blockHeight}`);
    }
    const f = new Chain({
      simnet,
      manifestPath: this.manifestPath,
      accounts: this.accounts,
      sink: this.sink,
      branch,
      tenureBlocks: Infinity,
      onBlock: this.onBlock,
    });
    // Simnet clocks start at session creation; only their deltas are deterministic.
    f.t0 = t0;
    f.nonces = new Map(this.nonces);
    f.feesPaid = new Map(this.feesPaid);
    f.headers = [...this.headers];
    f.burn = this.burn;
    f.deployer = this.deployer;
    f.stats = { blocks: 0, txs: 0, events: 0, burnBlocks: 0, failedTxs: 0 };
    return f;
  }

  /** uSTX a node would report: simnet's balance less the fees this chain charged. */
  stxBalance(address) {
    const stx = this.simnet.getAssetsMap().get("STX");
    return (stx?.get(address) ?? 0n) - (this.feesPaid.get(address) ?? 0n);
  }
}

/**
 * One line of the call log: the block as the recorder built it and, per transaction, what was
 * called (sender, contract, function, arguments) and what the contract answered. The log is
 * written from the calls themselves, not from the events, so a consumer can rebuild the chain's
 * state from it without decoding a single event.
 */
export function callLogEntry(chain, header, records) {
  return {
    branch: chain.branch,
    height: header.block_height,
    index_block_hash: header.index_block_hash,
    parent_index_block_hash: header.parent_index_block_hash,
    block_time: header.block_time,
    burn_block_height: header.burn_block_height,
    txs: records.map((r, i) => {
      const base = { txid: r.txid, tx_index: i, status: r.status };
      if (r.contractId && !r.call) return { ...base, sender: chain.deployer, deploy: r.contractId };
      return {
        ...base,
        sender: r.sender.address,
        contract: chain.contractId(r.call.contract),
        fn: r.call.fn,
        args: r.call.args.map(plainCV),
        result: plainCV(r.result),
      };
    }),
  };
}

/** Collect observer requests as 4-column PostgreSQL COPY text rows (stacks-blockchain-api export). */
export class TsvWriter {
  constructor(write) {
    this.write = write;
    this.id = 0;
    this.lastMicros = 0;
    this.counts = {};
  }

  add(path, payload, time) {
    this.id++;
    // Receive time follows the block's own time but stays strictly increasing across rows.
    const micros = Math.max(time * 1e6 + 250000, this.lastMicros + 1000);
    this.lastMicros = micros;
    this.counts[path] = (this.counts[path] ?? 0) + 1;
    if (path === "/new_block") {
      this.transactions = (this.transactions ?? 0) + payload.transactions.length;
      this.events = (this.events ?? 0) + payload.events.length;
    }
    const json = JSON.stringify(payload);
    this.write(`${this.id}\t${pgTimestamp(micros)}\t${copyEscape(path)}\t${copyEscape(json)}\n`);
  }
}
