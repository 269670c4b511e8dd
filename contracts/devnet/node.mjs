#!/usr/bin/env node
// A live devnet that answers the subset of the stacks-node RPC a transaction relay needs and
// pushes every block to an event observer, backed by clarinet-sdk simnet.
//
//   node devnet/node.mjs --port 20443 --observer http://127.0.0.1:3700 [--activity]
//        [--manifest Clarinet.toml] [--scenario demo|fixture|none] [--history push|silent]
//        [--activity-ms 4000] [--no-txindex]
//
// On start the chosen scenario is replayed (default: the demo chain, so a wallet can buy a live
// listing). `--history push` (default) delivers those blocks to the observer too: they are
// byte-identical to tests/fixtures/demo/chain.tsv, so an observer that already imported the
// recording sees duplicates it must treat as no-ops. `--history silent` replays without pushing,
// for an observer that imported the recording and should only see new blocks.
//
// Response shapes follow stacks-core's RPC (docs/rpc/openapi.yaml; stackslib/src/net/api/postblock,
// posttransaction, gettransaction_unconfirmed, gettransaction, getinfo, getaccount): a rejected
// transaction is HTTP 400 with `{error, reason, reason_data, txid}`, an accepted one (or one the
// mempool already holds) is HTTP 200 with the txid as a JSON string. A transaction is looked up by
// txid with `GET /v2/transactions/unconfirmed/{txid}` (the mempool) and `GET /v3/transaction/{txid}`
// (mined; 501 when started with `--no-txindex`, as a stacks-node without `txindex = true`).
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";
import {
  deserializeTransaction,
  addressFromVersionHash,
  addressToString,
  AddressHashMode,
  AddressVersion,
  PayloadType,
  AuthType,
  validateStacksAddress,
  txidFromBytes,
  deserializeCV,
  serializeCV,
} from "@stacks/transactions";
import { Chain, TESTNET_CHAIN_ID } from "./lib/chain.mjs";
import { ObserverPusher } from "./lib/observer.mjs";
import { SCENARIOS } from "./scenarios.mjs";
import { startActivity } from "./activity.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
export const DEFAULT_MANIFEST = resolve(HERE, "../Clarinet.toml");
/** stacks-node's default minimum relay fee is 1 uSTX per byte of the serialized transaction. */
const MIN_FEE_PER_BYTE = 1n;
const MAX_BODY = 2 * 1024 * 1024;
/** stacks-node's MAXIMUM_MEMPOOL_TX_CHAINING: how far ahead of an account a nonce may be. */
const MAX_CHAINING = 25n;

class Rejection extends Error {
  constructor(reason, reasonData, txid, message = "transaction rejected") {
    super(message);
    this.reason = reason;
    this.reasonData = reasonData;
    this.txid = txid;
  }
}

function senderAddress(cond) {
  const single = cond.hashMode === AddressHashMode.P2PKH || cond.hashMode === AddressHashMode.P2WPKH;
  const version = single ? AddressVersion.TestnetSingleSig : AddressVersion.TestnetMultiSig;
  return addressToString(addressFromVersionHash(version, cond.signer));
}

const u128hex = (n) => "0x" + BigInt(n).toString(16).padStart(32, "0");
const strip0x = (h) => h.replace(/^0x/, "");

function readBody(req) {
  return new Promise((resolveBody, reject) => {
    const chunks = [];
    let size = 0;
    // Keep reading past the limit (discarding) so the client still gets its 400 answer.
    req.on("data", (c) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on("end", () => {
      if (size > MAX_BODY) reject(new Rejection("Deserialization", { message: "Invalid Http request: PostTransaction body is too big" }, null));
      else resolveBody(Buffer.concat(chunks));
    });
    req.on("error", reject);
  });
}

export class DevnetNode {
  constructor(chain, pusher, { log = () => {}, txindex = true } = {}) {
    this.chain = chain;
    this.pusher = pusher;
    this.log = log;
    this.lock = Promise.resolve();
    this.accepted = 0;
    this.rejected = 0;
    this.pending = new Map(); // sender -> Map(nonce -> accepted transaction waiting for its turn)
    this.statusByTxid = new Map(); // recent outcomes, for the activity loop and logs
    this.txindex = txindex;
    // txid (0x-less) -> where it was mined: what stacks-node's txindex answers. Mined transactions
    // leave this mempool at once, so a resend of one is judged on its nonce (BadNonce), as by a
    // stacks-node whose mempool has already forgotten it.
    this.minedTx = new Map();
  }

  /** The waiting mempool entry for a txid (0x-less), if any. */
  pendingEntry(txid) {
    for (const waiting of this.pending.values()) {
      for (const entry of waiting.values()) if (entry.txid === txid) return entry;
    }
    return null;
  }

  /** Serialize all chain mutations: one block at a time, like a single miner. */
  exclusive(fn) {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => {});
    return run;
  }

  /** Validate and mine a raw transaction; returns its txid (0x-less hex) or throws a Rejection. */
  async submit(bytes) {
    let t;
    let txid = null;
    try {
      txid = txidFromBytes(bytes);
      t = deserializeTransaction(bytes);
    } catch (e) {
      throw new Rejection("Deserialization", { message: `Failed to deserialize posted transaction: ${e.message ?? e}` }, txid);
    }
    if (t.transactionVersion !== 0x80 || t.chainId !== TESTNET_CHAIN_ID) {
      throw new Rejection("BadTransactionVersion", null, txid);
    }
    if (t.auth.authType !== AuthType.Standard) {
      throw new Rejection("ServerFailureOther", { message: "sponsored transactions are not supported by this devnet" }, txid);
    }
    try {
      t.verifyOrigin();
    } catch (e) {
      throw new Rejection("SignatureValidation", { message: String(e.message ?? e) }, txid);
    }
    if (t.payload.payloadType !== PayloadType.ContractCall) {
      throw new Rejection("ServerFailureOther", { message: "only contract calls are accepted by this devnet" }, txid);
    }
    const cond = t.auth.spendingCondition;
    const sender = senderAddress(cond);
    const contractId = `${addressToString(t.payload.contractAddress)}.${t.payload.contractName.content}`;
    const fn = t.payload.functionName.content;
    return this.exclusive(async () => {
      const chain = this.chain;
      // posttransaction.rs: a txid the mempool already holds is answered 200 and admitted once.
      if (this.pendingEntry(txid)) return txid;
      if (chain.simnet.getContractSource(contractId) === undefined) {
        throw new Rejection("NoSuchContract", null, txid);
      }
      const iface = chain.simnet.getContractsInterfaces().get(contractId);
      const def = iface?.functions.find((f) => f.name === fn && f.access === "public");
      if (!def) throw new Rejection("NoSuchPublicFunction", null, txid);
      if (def.args.length !== t.payload.functionArgs.length) {
        throw new Rejection(
          "BadFunctionArgument",
          { message: `${fn} takes ${def.args.length} arguments, got ${t.payload.functionArgs.length}` },
          txid,
        );
      }
      const expected = chain.nonces.get(sender) ?? 0n;
      const nonce = BigInt(cond.nonce);
      if (nonce < expected) {
        throw new Rejection("BadNonce", { expected: Number(expected), actual: Number(nonce), principal: sender, is_origin: true }, txid);
      }
      if (nonce > expected + MAX_CHAINING) {
        throw new Rejection(
          "TooMuchChaining",
          { message: "Nonce would exceed chaining limit in mempool", expected: Number(expected + MAX_CHAINING), actual: Number(nonce), principal: sender, is_origin: true },
          txid,
        );
      }
      const waiting = this.pending.get(sender) ?? new Map();
      if (waiting.has(nonce)) throw new Rejection("ConflictingNonceInMempool", null, txid);
      const fee = BigInt(cond.fee);
      const minFee = BigInt(bytes.length) * MIN_FEE_PER_BYTE;
      if (fee < minFee) throw new Rejection("FeeTooLow", { expected: Number(minFee), actual: Number(fee) }, txid);
      const balance = chain.stxBalance(sender);
      if (balance < fee) {
        throw new Rejection("NotEnoughFunds", { expected: u128hex(fee), actual: u128hex(balance) }, txid);
      }
      // Accepted into the mempool: announce it. A transaction whose nonce is ahead of the
      // account waits there (like stacks-node's mempool) until the gap is filled.
      this.pusher.push("/new_mempool_tx", ["0x" + Buffer.from(bytes).toString("hex")]);
      const entry = { t, sender, contractId, fn, fee, txid, hex: Buffer.from(bytes).toString("hex") };
      if (nonce > expected) {
        waiting.set(nonce, entry);
        this.pending.set(sender, waiting);
        this.log(`queued ${txid} (${fn}): nonce ${nonce} waits for ${expected}`);
        return txid;
      }
      await this.mineOne(entry);
      // Mine whatever was waiting on this account's next nonces.
      for (let next = chain.nonces.get(sender); waiting.has(next); next = chain.nonces.get(sender)) {
        const e = waiting.get(next);
        waiting.delete(next);
        await this.mineOne(e);
      }
      if (waiting.size === 0) this.pending.delete(sender);
      return txid;
    });
  }

  /** Mine one accepted transaction alone in a new block (nonce and fee are charged here). */
  async mineOne({ t, sender, contractId, fn, fee, txid, hex }) {
    const chain = this.chain;
    chain.nonces.set(sender, BigInt(t.auth.spendingCondition.nonce) + 1n);
    chain.addFee(sender, fee);
    const account = chain.byAddress.get(sender) ?? { name: sender, address: sender };
    if (chain.blocksInTenure >= chain.tenureBlocks) await chain.newTenure();
    const [rec] = await chain.mineSigned(
      [{ call: { sender, contract: contractId, fn, args: t.payload.functionArgs }, sender: account, t }],
      { strict: false },
    );
    this.accepted++;
    this.statusByTxid.set(rec.txid, rec.status);
    if (this.statusByTxid.size > 10000) this.statusByTxid.delete(this.statusByTxid.keys().next().value);
    const tip = chain.tip();
    this.minedTx.set(txid, {
      index_block_hash: strip0x(tip.index_block_hash),
      tx: hex,
      result: rec.rawResult,
      block_height: tip.block_height,
      is_canonical: true, // this devnet never forks
    });
    this.log(`mined ${rec.txid} (${fn}) at height ${chain.tip().block_height}: ${rec.status}`);
    return rec;
  }

  /** Read-only call, shaped like stacks-node's /v2/contracts/call-read answer. */
  callRead(contractId, fn, body) {
    const chain = this.chain;
    if (chain.simnet.getContractSource(contractId) === undefined) return [404, { error: "No contract found", contract: contractId }];
    const def = chain.simnet.getContractsInterfaces().get(contractId)?.functions.find((f) => f.name === fn);
    if (!def) return [404, { error: "No such function", function: fn }];
    if (def.access !== "read_only") return [200, { okay: false, cause: "NotReadOnly" }];
    if (!body || typeof body.sender !== "string" || !Array.isArray(body.arguments)) {
      return [400, { error: "body must be {sender, arguments: [hex]}" }];
    }
    let args;
    try {
      args = body.arguments.map((h) => deserializeCV(strip0x(String(h))));
    } catch (e) {
      return [400, { error: `bad argument: ${e.message}` }];
    }
    if (args.length !== def.args.length) {
      return [200, { okay: false, cause: `expected ${def.args.length} arguments, got ${args.length}` }];
    }
    try {
      const r = chain.simnet.callReadOnlyFn(contractId, fn, args, body.sender);
      return [200, { okay: true, result: "0x" + serializeCV(r.result) }];
    } catch (e) {
      return [200, { okay: false, cause: String(e.message ?? e) }];
    }
  }

  /** GET /v2/transactions/unconfirmed/{txid}: [status, body, contentType]. */
  unconfirmed(txid) {
    const entry = this.pendingEntry(txid);
    if (!entry) return [404, `Transaction ${txid} not found in mempool or unconfirmed microblock stream`, "text/plain"];
    return [200, { tx: entry.hex, status: "Mempool" }, "application/json"];
  }

  /** GET /v3/transaction/{txid}: [status, body, contentType]. */
  transaction(txid) {
    if (!this.txindex) return [501, "Transaction indexing is not enabled", "text/plain"];
    const mined = this.minedTx.get(txid);
    if (!mined) return [404, `No such transaction ${txid}`, "text/plain"];
    return [200, mined, "application/json"];
  }

  info() {
    const tip = this.chain.tip();
    const burn = this.chain.burn;
    return {
      peer_version: 4207599116,
      pox_consensus: strip0x(burn.consensus_hash),
      burn_block_height: burn.burn_block_height,
      stable_pox_consensus: strip0x(burn.consensus_hash),
      stable_burn_block_height: burn.burn_block_height,
      server_version: "stacks-node devnet (recchain simnet)",
      network_id: TESTNET_CHAIN_ID,
      parent_network_id: 3669344250,
      stacks_tip_height: tip.block_height,
      stacks_tip: strip0x(tip.block_hash),
      stacks_tip_consensus_hash: strip0x(burn.consensus_hash),
      index_block_hash: strip0x(tip.index_block_hash),
      genesis_chainstate_hash: "0".repeat(64),
      unanchored_tip: null,
      unanchored_seq: null,
      tenure_height: tip.tenure_height,
      exit_at_block_height: null,
      is_fully_synced: true,
    };
  }

  account(principal) {
    return {
      balance: u128hex(this.chain.stxBalance(principal)),
      locked: u128hex(0),
      unlock_height: 0,
      nonce: Number(this.chain.nonces.get(principal) ?? 0n),
      balance_proof: "",
      nonce_proof: "",
    };
  }

  async handle(req, res) {
    const url = new URL(req.url, "http://devnet");
    const send = (status, body, type = "application/json") => {
      const data = type === "application/json" ? JSON.stringify(body) : String(body);
      res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(data) });
      res.end(data);
    };
    let posted = null; // the txid of a POST /v2/transactions, for the broadcast log line
    try {
      if (req.method === "GET" && url.pathname === "/v2/info") return send(200, this.info());
      const unconfirmed = url.pathname.match(/^\/v2\/transactions\/unconfirmed\/([0-9a-f]{64})$/);
      if (req.method === "GET" && unconfirmed) return send(...this.unconfirmed(unconfirmed[1]));
      const mined = url.pathname.match(/^\/v3\/transaction\/([0-9a-f]{64})$/);
      if (req.method === "GET" && mined) return send(...this.transaction(mined[1]));
      const acct = url.pathname.match(/^\/v2\/accounts\/([^/]+)$/);
      if (req.method === "GET" && acct) {
        const principal = decodeURIComponent(acct[1]);
        const [addr, name] = principal.split(".");
        if (!validateStacksAddress(addr) || (name !== undefined && !/^[a-zA-Z][a-zA-Z0-9_-]{0,39}$/.test(name))) {
          return send(400, { error: "invalid principal", principal });
        }
        return send(200, this.account(principal));
      }
      const read = url.pathname.match(/^\/v2\/contracts\/call-read\/([^/]+)\/([^/]+)\/([^/]+)$/);
      if (req.method === "POST" && read) {
        let body;
        try {
          body = JSON.parse((await readBody(req)).toString("utf8"));
        } catch {
          return send(400, { error: "body must be JSON" });
        }
        const [status, answer] = await this.exclusive(() => this.callRead(`${read[1]}.${read[2]}`, decodeURIComponent(read[3]), body));
        return send(status, answer);
      }
      if (req.method === "GET" && url.pathname === "/v2/fees/transfer") return send(200, Number(MIN_FEE_PER_BYTE));
      if (req.method === "POST" && url.pathname === "/v2/transactions") {
        let body = await readBody(req);
        const type = (req.headers["content-type"] ?? "").split(";")[0].trim();
        if (type === "application/json") {
          // stacks-node takes {"tx": hex, "attachment"?: hex}; a bare JSON hex string is also
          // accepted here for clients that send one.
          let parsed;
          try {
            parsed = JSON.parse(body.toString("utf8"));
          } catch {
            parsed = null;
          }
          const hex = typeof parsed === "string" ? parsed : parsed?.tx;
          if (typeof hex !== "string" || !/^(0x)?([0-9a-fA-F]{2})+$/.test(hex)) {
            throw new Rejection("Deserialization", { message: "Failed to parse body" }, null);
          }
          body = Buffer.from(strip0x(hex), "hex");
        } else if (type !== "application/octet-stream") {
          throw new Rejection(
            "Deserialization",
            { message: "Wrong Content-Type for transaction; expected application/json or application/octet-stream" },
            null,
          );
        }
        const bytes = new Uint8Array(body);
        try {
          posted = txidFromBytes(bytes);
        } catch {
          posted = null;
        }
        const txid = await this.submit(bytes);
        // One line per broadcast received, with its answer: tests count deliveries by txid.
        this.log(`broadcast ${txid}: 200`);
        return send(200, txid);
      }
      return send(404, { error: "not found", path: url.pathname });
    } catch (e) {
      if (e instanceof Rejection) {
        this.rejected++;
        if (posted) this.log(`broadcast ${posted}: 400 ${e.reason}`);
        this.log(`rejected transaction: ${e.reason} ${JSON.stringify(e.reasonData)}`);
        const body = { txid: e.txid, error: e.message, reason: e.reason };
        if (e.reasonData) body.reason_data = e.reasonData;
        return send(400, body);
      }
      this.log(`internal error: ${e.stack ?? e}`);
      return send(500, { error: "internal error", reason: "ServerFailureOther", reason_data: { message: String(e.message ?? e) } });
    }
  }
}

/**
 * Start a devnet node. Returns `{url, port, node, chain, pusher, close}`. `port: 0` picks a free
 * port (tests).
 */
export async function startNode({
  port = 20443,
  host = "127.0.0.1",
  observer = null,
  manifestPath = DEFAULT_MANIFEST,
  scenario = "demo",
  history = "push",
  activity = false,
  activityMs = 4000,
  txindex = true,
  log = () => {},
} = {}) {
  if (!["push", "silent"].includes(history)) throw new TypeError(`--history must be push or silent, not ${history}`);
  const pusher = new ObserverPusher(observer, { log });
  const chain = await Chain.open({
    manifestPath,
    sink: history === "push" ? (path, payload) => pusher.push(path, payload) : null,
  });
  await chain.emitDeployments();
  let state = null;
  if (scenario !== "none") {
    const run = SCENARIOS[scenario];
    if (!run) throw new TypeError(`unknown scenario ${scenario}; one of ${Object.keys(SCENARIOS).join(", ")}, none`);
    state = await run(chain, { log });
  }
  chain.sink = (path, payload) => pusher.push(path, payload);
  const node = new DevnetNode(chain, pusher, { log, txindex });
  const server = createServer((req, res) => node.handle(req, res));
  await new Promise((r, j) => server.once("error", j).listen(port, host, r));
  const actualPort = server.address().port;
  const stopActivity = activity ? startActivity(node, state, { intervalMs: activityMs, log }) : () => {};
  return {
    url: `http://${host}:${actualPort}`,
    port: actualPort,
    node,
    chain,
    pusher,
    state,
    async close() {
      stopActivity();
      pusher.close();
      await new Promise((r) => server.close(r));
      server.closeAllConnections?.();
    },
  };
}

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new TypeError(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--port") opts.port = Number(next());
    else if (a === "--host") opts.host = next();
    else if (a === "--observer") opts.observer = next();
    else if (a === "--manifest") opts.manifestPath = resolve(next());
    else if (a === "--scenario") opts.scenario = next();
    else if (a === "--history") opts.history = next();
    else if (a === "--activity") opts.activity = true;
    else if (a === "--activity-ms") opts.activityMs = Number(next());
    else if (a === "--no-txindex") opts.txindex = false;
    else throw new TypeError(`unknown option ${a}`);
  }
  if (opts.port !== undefined && !(Number.isInteger(opts.port) && opts.port >= 0 && opts.port < 65536)) {
    throw new TypeError("--port must be an integer 0..65535");
  }
  return opts;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`error: ${e.message}`);
    process.exit(2);
  }
  const log = (m) => console.log(`[devnet] ${m}`);
  const started = Date.now();
  const n = await startNode({ ...opts, log });
  const info = n.node.info();
  log(
    `listening on ${n.url}; tip ${info.stacks_tip_height}, scenario ${opts.scenario ?? "demo"} replayed in ${Date.now() - started} ms` +
      (opts.observer ? `; pushing to ${opts.observer} (history ${opts.history ?? "push"})` : "; no observer"),
  );
  const stop = async () => {
    await n.close();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
