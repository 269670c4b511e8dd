// The live devnet node against a real HTTP observer on loopback: a wallet-signed purchase is
// accepted, mined and pushed; bad transactions are refused with stacks-node's error shape and
// change nothing; a failing observer is retried in order without losing a block.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createServer } from "node:http";
import { createHash } from "node:crypto";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  makeContractCall,
  serializeTransaction,
  deserializeTransaction,
  deserializeCV,
  serializeCV,
  Cl,
  Pc,
  PostConditionMode,
} from "@stacks/transactions";
import { startNode } from "./node.mjs";
import { startActivity } from "./activity.mjs";
import { ObserverPusher } from "./lib/observer.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const MANIFEST = resolve(HERE, "../Clarinet.toml");
// Well-known Clarinet devnet keys (settings/Devnet.toml): written out here so the test does not
// depend on the node's own mnemonic derivation.
const DEPLOYER = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM";
const WALLET_2_KEY = "530d9f61984c888536871c6573073bdfc0058896dc1adfe9a6a10dfacadc209101";
const WALLET_2 = "ST2CY5V39NHDPWSXMW9QDT3HC3GD6Q6XX4CFRK9AG";
const WALLET_4 = "ST2NEB84ASENDXKYGJPQW86YXQCEFEX2ZQPG87ND";

/** A minimal event observer: records every POST, answers with `status(path, n)` (default 200). */
async function startObserver(status = () => 200) {
  const received = [];
  const waiters = [];
  let n = 0;
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const code = status(req.url, n++);
      if (code === 200) {
        received.push({ path: req.url, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
        for (const w of [...waiters]) w();
      }
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify({ result: code === 200 ? "ok" : "try again" }));
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    received,
    /** Resolve once `pred(received)` holds; fail after a generous deadline instead of hanging. */
    until(pred, what) {
      return new Promise((resolveWait, reject) => {
        const check = () => {
          const v = pred(received);
          if (v) {
            waiters.splice(waiters.indexOf(check), 1);
            clearTimeout(timer);
            resolveWait(v);
          }
        };
        const timer = setTimeout(() => reject(new Error(`observer never received ${what}`)), 60000);
        waiters.push(check);
        check();
      });
    },
    close: () => new Promise((r) => server.close(r)),
  };
}

async function post(url, body, contentType = "application/octet-stream") {
  const res = await fetch(`${url}/v2/transactions`, { method: "POST", headers: { "content-type": contentType }, body });
  return { status: res.status, body: await res.json() };
}

describe("devnet node", () => {
  let observer;
  let node;
  let listingId;
  let tokenId;
  const price = 7_500_000n;

  beforeAll(async () => {
    observer = await startObserver();
    node = await startNode({ port: 0, observer: observer.url, manifestPath: MANIFEST, scenario: "none" });
    // Seed a listing through the node's chain (signed calls, pushed like any block).
    const c = node.chain;
    await c.mine([{ sender: "deployer", contract: "verification", fn: "add-verifier", args: [Cl.principal(c.account("wallet_1").address), Cl.stringUtf8("Verifier One")], expect: "ok" }]);
    await c.mine([{
      sender: "wallet_4", contract: "verification", fn: "register-facility", expect: "ok",
      args: [Cl.stringUtf8("Test Solar"), Cl.stringAscii("DE"), Cl.stringAscii("DE-BY"), Cl.stringAscii("EU-AIB"), Cl.stringAscii("DE-LU"),
        Cl.int(48_000_000), Cl.int(11_000_000), Cl.stringAscii("ES100"), Cl.stringAscii("TC110"), Cl.uint(10_000_000), Cl.uint(1_600_000_000),
        Cl.none(), Cl.bool(false), Cl.stringAscii(""), Cl.stringAscii(""), Cl.stringAscii("ipfs://bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")],
    }]);
    await c.mine([{ sender: "wallet_1", contract: "verification", fn: "approve-facility", args: [Cl.uint(1)], expect: "ok" }]);
    await c.mine([{ sender: "wallet_4", contract: "verification", fn: "submit-report", args: [Cl.uint(1), Cl.uint(1_735_689_600), Cl.uint(1_735_776_000), Cl.uint(50_000_000), Cl.buffer(Buffer.alloc(32, 7))], expect: "ok" }]);
    await c.mine([{ sender: "wallet_1", contract: "verification", fn: "attest-report", args: [Cl.uint(1)], expect: "ok" }]);
    const [minted] = await c.mine([{ sender: "wallet_4", contract: "rec-nft", fn: "mint", args: [Cl.uint(1), Cl.stringAscii("ipfs://bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")], expect: "ok" }]);
    tokenId = Number(minted.result.value.value);
    const [listed] = await c.mine([{
      sender: "wallet_4", contract: "marketplace", fn: "list-fixed", expect: "ok",
      args: [Cl.uint(tokenId), Cl.none(), Cl.uint(price), Cl.uint(c.simnet.blockHeight + 500)],
      postConditions: [Pc.principal(WALLET_4).willSendAsset().nft(`${DEPLOYER}.rec-nft::rec`, Cl.uint(tokenId))],
    }]);
    listingId = Number(listed.result.value.value);
    await node.pusher.idle();
  });

  afterAll(async () => {
    await node?.close();
    await observer?.close();
  });

  async function signedBuy({ nonce, fee = 5000n, underpay = false } = {}) {
    const acct = await (await fetch(`${node.url}/v2/accounts/${WALLET_2}`)).json();
    return makeContractCall({
      contractAddress: DEPLOYER,
      contractName: "marketplace",
      functionName: "buy",
      functionArgs: [Cl.uint(listingId), Cl.none()],
      senderKey: WALLET_2_KEY,
      network: "testnet",
      nonce: nonce ?? BigInt(acct.nonce),
      fee,
      postConditionMode: PostConditionMode.Deny,
      postConditions: [
        Pc.principal(WALLET_2).willSendEq(underpay ? price - 1n : price).ustx(),
        Pc.principal(`${DEPLOYER}.marketplace`).willSendAsset().nft(`${DEPLOYER}.rec-nft::rec`, Cl.uint(tokenId)),
      ],
    });
  }

  it("delivered the seeded history to the observer in chain order", () => {
    const blocks = observer.received.filter((r) => r.path === "/new_block").map((r) => r.body);
    expect(blocks.length).toBeGreaterThanOrEqual(8);
    for (let i = 1; i < blocks.length; i++) {
      expect(blocks[i].parent_index_block_hash).toBe(blocks[i - 1].index_block_hash);
      expect(blocks[i].block_height).toBe(blocks[i - 1].block_height + 1);
    }
  });

  it("rejects a transaction with a bad signature and changes nothing", async () => {
    const before = await (await fetch(`${node.url}/v2/info`)).json();
    const t = await signedBuy();
    const raw = Buffer.from(serializeTransaction(t), "hex");
    // The 65-byte signature ends the single-sig spending condition; corrupt a byte of `r`.
    const sigAt = raw.indexOf(Buffer.from(t.auth.spendingCondition.signature.data, "hex"));
    expect(sigAt).toBeGreaterThan(0);
    raw[sigAt + 5] ^= 0xff;
    const res = await post(node.url, raw);
    expect(res.status).toBe(400);
    expect(res.body.reason).toBe("SignatureValidation");
    expect(res.body.error).toBe("transaction rejected");
    // stacks-node names the rejected bytes by their own txid, without a 0x prefix.
    expect(res.body.txid).toBe(createHash("sha512-256").update(raw).digest("hex"));
    expect(res.body.txid).not.toBe(t.txid());
    const after = await (await fetch(`${node.url}/v2/info`)).json();
    expect(after.stacks_tip_height).toBe(before.stacks_tip_height);
    const acct = await (await fetch(`${node.url}/v2/accounts/${WALLET_2}`)).json();
    expect(acct.nonce).toBe(0);
  });

  it("rejects a fee below the relay minimum and garbage with typed reasons", async () => {
    const lowFee = await post(node.url, Buffer.from(serializeTransaction(await signedBuy({ fee: 1n })), "hex"));
    expect(lowFee.body.reason).toBe("FeeTooLow");
    const garbage = await post(node.url, JSON.stringify("0x00ff00ff"), "application/json");
    expect(garbage.status).toBe(400);
    expect(garbage.body.reason).toBe("Deserialization");
    const notHex = await post(node.url, JSON.stringify({ tx: "nope" }), "application/json");
    expect(notHex.body.reason).toBe("Deserialization");
    const wrongType = await post(node.url, "00", "text/plain");
    expect(wrongType.status).toBe(400);
    const tooBig = await post(node.url, Buffer.alloc(3 * 1024 * 1024));
    expect(tooBig.status).toBe(400);
    expect(tooBig.body.reason).toBe("Deserialization");
    const info = await (await fetch(`${node.url}/v2/info`)).json();
    const acct = await (await fetch(`${node.url}/v2/accounts/${WALLET_2}`)).json();
    expect(acct.nonce).toBe(0);
    expect(info.stacks_tip_height).toBe(node.chain.tip().block_height);
  });

  it("mines a purchase whose post-conditions fail as abort_by_post_condition, without effects", async () => {
    // The wallet promises to pay one micro-STX less than the price: a node must abort it.
    const t = await signedBuy({ underpay: true });
    const res = await post(node.url, Buffer.from(serializeTransaction(t), "hex"));
    expect(res.status).toBe(200);
    const txid = "0x" + t.txid();
    const block = await observer.until(
      (rs) => rs.find((r) => r.path === "/new_block" && r.body.transactions.some((x) => x.txid === txid))?.body,
      `a block with ${txid}`,
    );
    const tx = block.transactions.find((x) => x.txid === txid);
    expect(tx.status).toBe("abort_by_post_condition");
    expect(tx.vm_error).toMatch(/post-condition/i);
    expect(block.events.filter((e) => e.txid === txid)).toEqual([]);
    // The listing is untouched, the nonce and fee are spent.
    const listing = node.chain.simnet.callReadOnlyFn("marketplace", "get-listing", [Cl.uint(listingId)], DEPLOYER);
    expect(JSON.stringify(listing.result, (_, v) => (typeof v === "bigint" ? v.toString() : v))).toContain('"active"');
    const owner = node.chain.simnet.callReadOnlyFn("rec-nft", "get-owner", [Cl.uint(tokenId)], DEPLOYER);
    expect(owner.result).toEqual(Cl.ok(Cl.some(Cl.principal(`${DEPLOYER}.marketplace`))));
    const acct = await (await fetch(`${node.url}/v2/accounts/${WALLET_2}`)).json();
    expect(acct.nonce).toBe(1);
  });

  it("mines a wallet-signed purchase and pushes its block with the txid and events", async () => {
    const t = await signedBuy();
    const hex = serializeTransaction(t);
    // stacks-node's JSON body shape: {"tx": hex}.
    const res = await post(node.url, JSON.stringify({ tx: hex }), "application/json");
    expect(res.status).toBe(200);
    expect(res.body).toBe(t.txid());
    const txid = "0x" + t.txid();
    const block = await observer.until(
      (rs) => rs.find((r) => r.path === "/new_block" && r.body.transactions.some((x) => x.txid === txid))?.body,
      `a block with ${txid}`,
    );
    const mempoolIdx = observer.received.findIndex((r) => r.path === "/new_mempool_tx" && r.body.includes("0x" + hex));
    const blockIdx = observer.received.findIndex((r) => r.body === block);
    expect(mempoolIdx).toBeGreaterThanOrEqual(0);
    expect(mempoolIdx).toBeLessThan(blockIdx);
    const tx = block.transactions.find((x) => x.txid === txid);
    expect(tx.status).toBe("success");
    expect(tx.raw_tx).toBe("0x" + hex);
    // buy answers (ok listing-id)
    expect(deserializeCV(tx.raw_result.slice(2))).toEqual(Cl.ok(Cl.uint(listingId)));
    const events = block.events.filter((e) => e.txid === txid);
    const stx = events.filter((e) => e.type === "stx_transfer_event").map((e) => e.stx_transfer_event);
    expect(stx.every((e) => e.sender === WALLET_2)).toBe(true);
    expect(stx.reduce((s, e) => s + BigInt(e.amount), 0n)).toBe(price);
    const nft = events.find((e) => e.type === "nft_transfer_event").nft_transfer_event;
    expect(nft).toMatchObject({ asset_identifier: `${DEPLOYER}.rec-nft::rec`, sender: `${DEPLOYER}.marketplace`, recipient: WALLET_2 });
    expect(deserializeCV(nft.raw_value.slice(2))).toEqual(Cl.uint(tokenId));
    const sale = events
      .filter((e) => e.type === "contract_event")
      .map((e) => deserializeCV(e.contract_event.raw_value.slice(2)))
      .find((v) => v.value.event?.value === "sale");
    expect(sale.value["listing-id"]).toEqual(Cl.uint(listingId));
    expect(sale.value.buyer).toEqual(Cl.principal(WALLET_2));
    // The node's own view moved with the block.
    const info = await (await fetch(`${node.url}/v2/info`)).json();
    expect(info.stacks_tip_height).toBe(block.block_height);
    expect("0x" + info.stacks_tip).toBe(block.block_hash);
    const acct = await (await fetch(`${node.url}/v2/accounts/${WALLET_2}`)).json();
    expect(acct.nonce).toBe(2);
    // Both transactions paid their fee; only the second paid the price.
    expect(BigInt(acct.balance)).toBe(100_000_000_000_000n - price - 2n * 5000n);
  });

  it("answers read-only calls like stacks-node, without moving the chain", async () => {
    const before = node.chain.tip().block_height;
    const res = await fetch(`${node.url}/v2/contracts/call-read/${DEPLOYER}/rec-nft/get-owner`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ sender: WALLET_2, arguments: ["0x" + serializeCV(Cl.uint(tokenId))] }),
    });
    const body = await res.json();
    expect(body.okay).toBe(true);
    expect(deserializeCV(body.result.slice(2))).toEqual(Cl.ok(Cl.some(Cl.principal(WALLET_2))));
    const notRo = await (await fetch(`${node.url}/v2/contracts/call-read/${DEPLOYER}/marketplace/buy`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ sender: WALLET_2, arguments: [] }),
    })).json();
    expect(notRo).toEqual({ okay: false, cause: "NotReadOnly" });
    expect(node.chain.tip().block_height).toBe(before);
  });

  it("holds a transaction whose nonce is ahead until the gap is filled, then mines both in order", async () => {
    // add-verifier by a non-owner answers (err u100): mined, nonce spent, no events.
    const call = (nonce, name) =>
      makeContractCall({
        contractAddress: DEPLOYER, contractName: "verification", functionName: "add-verifier",
        functionArgs: [Cl.principal(WALLET_4), Cl.stringUtf8(name)], senderKey: WALLET_2_KEY,
        network: "testnet", nonce, fee: 5000n, postConditionMode: PostConditionMode.Deny,
      });
    const acct = await (await fetch(`${node.url}/v2/accounts/${WALLET_2}`)).json();
    const n = BigInt(acct.nonce);
    const later = await call(n + 1n, "later");
    const first = await call(n, "first");
    const tip = node.chain.tip().block_height;
    const queued = await post(node.url, Buffer.from(serializeTransaction(later), "hex"));
    expect(queued.status).toBe(200);
    expect(queued.body).toBe(later.txid());
    expect(node.chain.tip().block_height).toBe(tip);
    const conflict = await post(node.url, Buffer.from(serializeTransaction(await call(n + 1n, "other")), "hex"));
    expect(conflict.body.reason).toBe("ConflictingNonceInMempool");
    const chained = await post(node.url, Buffer.from(serializeTransaction(await call(n + 30n, "far")), "hex"));
    expect(chained.body.reason).toBe("TooMuchChaining");
    const res = await post(node.url, Buffer.from(serializeTransaction(first), "hex"));
    expect(res.status).toBe(200);
    const wanted = ["0x" + first.txid(), "0x" + later.txid()];
    const blocks = await observer.until((rs) => {
      const bs = rs.filter((r) => r.path === "/new_block" && r.body.transactions.some((x) => wanted.includes(x.txid)));
      return bs.length === 2 ? bs.map((r) => r.body) : null;
    }, "both queued transactions");
    expect(blocks.map((b) => b.transactions[0].txid)).toEqual(wanted);
    expect(blocks[1].block_height).toBeGreaterThan(blocks[0].block_height);
    for (const b of blocks) {
      expect(b.transactions[0].status).toBe("abort_by_response");
      expect(deserializeCV(b.transactions[0].raw_result.slice(2))).toEqual(Cl.error(Cl.uint(100)));
    }
    const after = await (await fetch(`${node.url}/v2/accounts/${WALLET_2}`)).json();
    expect(after.nonce).toBe(acct.nonce + 2);
    // A nonce already spent is refused outright.
    const stale = await post(node.url, Buffer.from(serializeTransaction(await call(n, "stale")), "hex"));
    expect(stale.status).toBe(400);
    expect(stale.body.reason).toBe("BadNonce");
    expect(stale.body.reason_data).toEqual({ expected: Number(n) + 2, actual: Number(n), principal: WALLET_2, is_origin: true });
  });

  it("runs activity steps through the wallet path and undoes the model when a step fails", async () => {
    const model = { steps: 0, restored: 0 };
    const state = {
      // Step 0: a call the contract refuses (not the owner); step 1: nothing left to do.
      activity: (step) => {
        model.steps++;
        return step === 0
          ? { sender: "wallet_1", contract: "verification", fn: "add-verifier", args: [Cl.principal(WALLET_4), Cl.stringUtf8("x")] }
          : null;
      },
      snapshot: () => ({ steps: model.steps }),
      restore: () => {
        model.restored++;
      },
    };
    const lines = [];
    const stop = startActivity(node.node, state, { intervalMs: 20, log: (m) => lines.push(m) });
    try {
      const txid = await new Promise((resolveTxid, reject) => {
        const poll = setInterval(() => {
          const m = lines.map((l) => l.match(/-> ([0-9a-f]{64})/)).find(Boolean);
          if (m) {
            clearInterval(poll);
            resolveTxid("0x" + m[1]);
          }
        }, 20);
        setTimeout(() => reject(new Error(`no activity step ran: ${lines.join(" | ")}`)), 60000);
      });
      const block = await observer.until(
        (rs) => rs.find((r) => r.path === "/new_block" && r.body.transactions.some((t) => t.txid === txid))?.body,
        "the activity transaction",
      );
      const tx = block.transactions.find((t) => t.txid === txid);
      expect(tx.status).toBe("abort_by_response");
      expect(deserializeCV(tx.raw_result.slice(2))).toEqual(Cl.error(Cl.uint(100)));
      expect(deserializeTransaction(tx.raw_tx.slice(2)).payload.functionName.content).toBe("add-verifier");
      expect(model.restored).toBe(1);
    } finally {
      stop();
    }
  });

  it("answers lookups by txid like stacks-node: the mempool, then the txindex", async () => {
    const call = (nonce, name) =>
      makeContractCall({
        contractAddress: DEPLOYER, contractName: "verification", functionName: "add-verifier",
        functionArgs: [Cl.principal(WALLET_4), Cl.stringUtf8(name)], senderKey: WALLET_2_KEY,
        network: "testnet", nonce, fee: 5000n, postConditionMode: PostConditionMode.Deny,
      });
    const get = async (path) => {
      const res = await fetch(`${node.url}${path}`);
      const type = res.headers.get("content-type");
      return { status: res.status, type, body: type === "application/json" ? await res.json() : await res.text() };
    };
    const n = BigInt((await (await fetch(`${node.url}/v2/accounts/${WALLET_2}`)).json()).nonce);
    const waiting = await call(n + 1n, "waits");
    const waitingHex = serializeTransaction(waiting);
    expect((await post(node.url, Buffer.from(waitingHex, "hex"))).status).toBe(200);
    // In the mempool: the unconfirmed route has it, the txindex does not (yet).
    expect(await get(`/v2/transactions/unconfirmed/${waiting.txid()}`)).toEqual({
      status: 200, type: "application/json", body: { tx: waitingHex, status: "Mempool" },
    });
    expect((await get(`/v3/transaction/${waiting.txid()}`)).status).toBe(404);
    // The same bytes again: the mempool has the txid, so 200 with no second admission.
    const again = await post(node.url, Buffer.from(waitingHex, "hex"));
    expect(again).toEqual({ status: 200, body: waiting.txid() });
    const first = await call(n, "fills the gap");
    expect((await post(node.url, Buffer.from(serializeTransaction(first), "hex"))).status).toBe(200);
    const blocks = await observer.until((rs) => {
      const b = rs.find((r) => r.path === "/new_block" && r.body.transactions.some((x) => x.txid === "0x" + waiting.txid()));
      return b ? b.body : null;
    }, "the waiting transaction mined");
    // Mined: gone from the mempool, found in the txindex with the block that holds it.
    expect((await get(`/v2/transactions/unconfirmed/${waiting.txid()}`)).status).toBe(404);
    const found = await get(`/v3/transaction/${waiting.txid()}`);
    expect(found.status).toBe(200);
    expect(found.body).toEqual({
      index_block_hash: blocks.index_block_hash.replace(/^0x/, ""),
      tx: waitingHex,
      result: blocks.transactions[0].raw_result,
      block_height: blocks.block_height,
      is_canonical: true,
    });
    // A resend after mining is judged on its nonce, as by a node whose mempool forgot it.
    const resent = await post(node.url, Buffer.from(waitingHex, "hex"));
    expect(resent.body.reason).toBe("BadNonce");
    expect(node.node.accepted).toBeGreaterThan(0);
    const unknown = "ab".repeat(32);
    expect(await get(`/v2/transactions/unconfirmed/${unknown}`)).toMatchObject({ status: 404, type: "text/plain" });
    expect(await get(`/v3/transaction/${unknown}`)).toMatchObject({ status: 404, type: "text/plain" });
    node.node.txindex = false;
    try {
      expect(await get(`/v3/transaction/${waiting.txid()}`)).toEqual({
        status: 501, type: "text/plain", body: "Transaction indexing is not enabled",
      });
    } finally {
      node.node.txindex = true;
    }
  });

  it("answers a malformed account principal with 400", async () => {
    const res = await fetch(`${node.url}/v2/accounts/not-a-principal`);
    expect(res.status).toBe(400);
  });
});

describe("observer delivery", () => {
  it("retries a failing observer with backoff and delivers every payload once, in order", async () => {
    // The observer refuses its first five requests, as one restarting or overloaded would.
    const obs = await startObserver((_, n) => (n < 5 ? 503 : 200));
    const pusher = new ObserverPusher(obs.url, { minDelayMs: 5, maxDelayMs: 40 });
    for (let i = 1; i <= 4; i++) pusher.push("/new_block", { block_height: i });
    await pusher.idle();
    expect(obs.received.map((r) => r.body.block_height)).toEqual([1, 2, 3, 4]);
    expect(pusher.retries).toBe(5);
    expect(pusher.delivered).toBe(4);
    await obs.close();
  });
});
