// Signed transactions for the relay's tests and benchmark, built by @stacks/transactions (the
// reference encoder and signer) with the devnet account keys from settings/Devnet.toml.
//
//   node vectors/relay.mjs                         writes ../tests/fixtures/relay/vectors.json
//   node vectors/relay.mjs --bench N --out F       N distinct accepted calls (JSON list of hex)
//   node vectors/relay.mjs --call FN --args JSON --sender NAME --nonce N [--fee F] [--pcs JSON] --out F
//                                                  one signed marketplace/rec-nft/verification call
//
// Each vector names what the relay must answer: "accepted" or one of its rejection codes
// (writers/README.md). Tampered variants (flipped signature, payload or fee bytes, truncation)
// are derived from these in the Python tests, so the fixture stays small.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  Cl,
  Pc,
  PostConditionMode,
  makeContractCall,
  makeContractDeploy,
  makeSTXTokenTransfer,
  privateKeyToPublic,
  sponsorTransaction,
  txidFromBytes,
} from "@stacks/transactions";
import { STACKS_TESTNET } from "@stacks/network";
import { bytesToHex, hexToBytes } from "@stacks/common";
import { loadDevnetAccounts } from "../devnet/lib/keys.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const OUT = join(HERE, "..", "..", "tests", "fixtures", "relay", "vectors.json");
const accounts = Object.fromEntries(
  loadDevnetAccounts(join(HERE, "..", "settings", "Devnet.toml")).map((a) => [a.name, a]),
);
const deployer = accounts.deployer.address;
const SBTC = `${deployer}.sbtc-token`;
const network = "testnet";

const hexOf = (tx) => tx.serialize();
const txidOf = (tx) => txidFromBytes(hexToBytes(tx.serialize()));

function callArgs(fn, i = 0) {
  switch (fn) {
    case "buy":
      return [Cl.uint(1 + i), Cl.some(Cl.contractPrincipal(deployer, "sbtc-token"))];
    case "list-fixed":
      return [Cl.uint(1 + i), Cl.some(Cl.contractPrincipal(deployer, "sbtc-token")), Cl.uint(5000), Cl.uint(10_000)];
    case "update-price":
      return [Cl.uint(1 + i), Cl.uint(4000)];
    case "register-facility":
      return [Cl.stringUtf8(`Solar farm ${i}`), Cl.stringAscii("solar"), Cl.stringAscii("DE"), Cl.uint(5_000_000)];
    case "submit-report":
      return [Cl.uint(1), Cl.uint(100), Cl.uint(200), Cl.uint(1_000_000 + i), Cl.bufferFromHex("ab".repeat(32))];
    default:
      return [Cl.uint(1 + i)];
  }
}

async function call({
  contract = "marketplace", fn = "buy", sender = "wallet_1", nonce = 0, fee = 2000, mode = "deny",
  sponsored = false, pcs, net = network, i = 0, multisig,
}) {
  const base = {
    contractAddress: deployer,
    contractName: contract,
    functionName: fn,
    functionArgs: callArgs(fn, i),
    network: net,
    nonce,
    fee: sponsored ? 0 : fee,
    sponsored,
    postConditionMode: mode === "deny" ? PostConditionMode.Deny : PostConditionMode.Allow,
    postConditions: pcs ?? (fn === "buy" ? [Pc.principal(accounts[sender]?.address ?? deployer).willSendLte(10_000n).ft(SBTC, "sbtc")] : []),
  };
  if (multisig) {
    const keys = multisig.map((n) => accounts[n].privateKey);
    return makeContractCall({
      ...base,
      publicKeys: keys.map((k) => privateKeyToPublic(k)),
      numSignatures: 2,
      signerKeys: keys.slice(0, 2),
    });
  }
  return makeContractCall({ ...base, senderKey: accounts[sender].privateKey });
}

const sponsor = (tx, name = "wallet_3", fee = 3000, sponsorNonce = 0) =>
  sponsorTransaction({ transaction: tx, sponsorPrivateKey: accounts[name].privateKey, fee, sponsorNonce, network });

async function vectors() {
  const out = [];
  const push = (name, tx, expect, extra = {}) =>
    out.push({ name, hex: hexOf(tx), txid: txidOf(tx), expect, ...extra });

  // Accepted kinds.
  push("single-sig buy, deny mode", await call({ nonce: 0 }), "accepted",
    { sender: accounts.wallet_1.address, contract_id: `${deployer}.marketplace`, function_name: "buy", fee: 2000, nonce: 0 });
  push("single-sig register-facility", await call({ contract: "verification", fn: "register-facility", sender: "wallet_2", nonce: 3 }), "accepted");
  push("single-sig submit-report, allow mode (moves no asset)",
    await call({ contract: "verification", fn: "submit-report", sender: "wallet_2", nonce: 4, mode: "allow" }), "accepted");
  push("single-sig list-fixed", await call({ fn: "list-fixed", sender: "wallet_4", nonce: 1, pcs: [] }), "accepted");
  push("sponsored single-sig buy",
    await sponsor(await call({ sender: "wallet_2", nonce: 5, sponsored: true })), "accepted",
    { sponsor: accounts.wallet_3.address, fee: 3000 });
  push("multisig 2-of-3 update-price",
    await call({ fn: "update-price", nonce: 0, multisig: ["wallet_4", "wallet_5", "wallet_6"] }), "accepted");

  // Refused by policy.
  push("stx token transfer", await makeSTXTokenTransfer({
    recipient: accounts.wallet_2.address, amount: 1000n, senderKey: accounts.wallet_1.privateKey, network, nonce: 1, fee: 2000,
  }), "payload_not_allowed");
  push("contract deploy", await makeContractDeploy({
    contractName: "intruder", codeBody: "(define-public (hello) (ok u1))", senderKey: accounts.wallet_1.privateKey,
    network, nonce: 2, fee: 2000,
  }), "payload_not_allowed");
  push("call to an unwatched contract", await call({ contract: "not-ours", fn: "buy", nonce: 3 }), "contract_not_allowed");
  push("function not whitelisted", await call({ contract: "verification", fn: "set-paused", nonce: 4, pcs: [] }), "function_not_allowed");
  push("allow mode on an asset-moving call", await call({ nonce: 5, mode: "allow" }), "post_condition_mode");
  push("fee below the minimum", await call({ nonce: 6, fee: 1 }), "fee_too_low");
  push("fee above the maximum", await call({ nonce: 7, fee: 50_000_000 }), "fee_too_high");
  push("sponsor fee above the maximum",
    await sponsor(await call({ sender: "wallet_2", nonce: 8, sponsored: true }), "wallet_3", 50_000_000), "fee_too_high");
  push("mainnet transaction", await call({ nonce: 9, net: "mainnet" }), "wrong_network");
  // Testnet version byte, but signed for another chain id: the signature is valid, the chain not.
  push("wrong chain id", await call({ nonce: 10, net: { ...STACKS_TESTNET, chainId: 0x80000001 } }), "wrong_chain_id");
  return out;
}

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, "");
    if (i + 1 >= argv.length) throw new TypeError(`--${key} needs a value`);
    opts[key] = argv[++i];
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
if (opts.bench) {
  // Distinct txids from distinct (sender, nonce) pairs; all pass every relay check.
  const n = Number(opts.bench);
  const names = Object.keys(accounts);
  const txs = [];
  for (let i = 0; i < n; i++) {
    const tx = await call({ sender: names[i % names.length], nonce: 1000 + Math.floor(i / names.length), i });
    txs.push(hexOf(tx));
  }
  writeFileSync(resolve(opts.out), JSON.stringify(txs));
} else if (opts.call) {
  const [contract, fn] = opts.call.split(".");
  const tx = await makeContractCall({
    contractAddress: deployer, contractName: contract, functionName: fn,
    functionArgs: JSON.parse(opts.args ?? "[]").map((a) => Cl.deserialize(a)),
    senderKey: accounts[opts.sender ?? "wallet_1"].privateKey, network, nonce: BigInt(opts.nonce ?? 0),
    fee: BigInt(opts.fee ?? 2000), postConditionMode: PostConditionMode.Deny,
    // Post-conditions as @stacks/transactions' JSON shapes; an NFT's `assetId` is given as
    // serialized Clarity hex, since a Clarity value holding a bigint has no JSON form.
    postConditions: JSON.parse(opts.pcs ?? "[]").map((pc) =>
      typeof pc.assetId === "string" ? { ...pc, assetId: Cl.deserialize(pc.assetId) } : pc,
    ),
  });
  writeFileSync(resolve(opts.out), JSON.stringify({ hex: hexOf(tx), txid: txidOf(tx) }));
} else {
  mkdirSync(dirname(OUT), { recursive: true });
  const doc = {
    generator: "@stacks/transactions 7.6.0, contracts/vectors/relay.mjs",
    deployer,
    chain_id: 0x80000000,
    vectors: await vectors(),
  };
  writeFileSync(OUT, JSON.stringify(doc, null, 1) + "\n");
  console.log(`wrote ${doc.vectors.length} vectors to ${OUT}`);
}
