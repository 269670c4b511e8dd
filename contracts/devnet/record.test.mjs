// The recorder: deterministic output, and a committed demo chain whose every transaction, hash,
// fork and summary number can be re-derived from the raw rows alone.
import { describe, it, expect } from "vitest";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { addressToString, deserializeTransaction, deserializeCV, cvToValue } from "@stacks/transactions";
import { record, parseArgs, UsageError } from "./record.mjs";
import { rawCid } from "./lib/cid.mjs";
import { privateKeyFromMnemonic } from "./lib/keys.mjs";
import { copyEscape, readManifestContracts } from "./lib/chain.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const DEMO = resolve(HERE, "../../tests/fixtures/demo");

/** Parse PostgreSQL COPY text rows back into fields. */
function parseCopy(text) {
  return text
    .split("\n")
    .filter((l) => l.length)
    .map((line) =>
      line.split("\t").map((f) =>
        f.replace(/\\(.)/g, (_, c) => ({ n: "\n", t: "\t", r: "\r", "\\": "\\" })[c] ?? c),
      ),
    );
}

describe("building blocks", () => {
  it("derives the well-known devnet keys from their mnemonics", () => {
    expect(
      privateKeyFromMnemonic(
        "twice kind fence tip hidden tilt action fragile skin nothing glory cousin green tomorrow spring wrist shed math olympic multiply hip blue scout claw",
      ),
    ).toBe("753b7cc01a1a2e86221266a154af739463fce51219d97e4f856cd7200c3bd2a601");
    expect(() => privateKeyFromMnemonic("too short")).toThrow(/words/);
  });

  it("computes CIDs as ipfs add --cid-version=1 does", () => {
    expect(rawCid(Buffer.from("hello world\n"))).toBe("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4");
    expect(() => rawCid(Buffer.alloc(256 * 1024 + 1))).toThrow(RangeError);
  });

  it("escapes COPY text fields reversibly", () => {
    const s = 'a\\b\tc\nd"e';
    const [[back]] = parseCopy(copyEscape(s) + "\n");
    expect(back).toBe(s);
    expect(copyEscape(s)).not.toMatch(/[\t\n]/);
  });

  it("refuses bad arguments with a typed error", () => {
    expect(() => parseArgs(["--scenario", "nope", "--out", "x"])).toThrow(UsageError);
    expect(() => parseArgs(["--scenario", "scale", "--certificates", "-3", "--out", "x"])).toThrow(UsageError);
    expect(() => parseArgs(["--scenario", "demo"])).toThrow(/--out/);
  });
});

describe("recorder determinism", () => {
  it("produces byte-identical output for the same scenario", async () => {
    const manifestPath = resolve(HERE, "test-fixture/Clarinet.toml");
    const dirs = [mkdtempSync(join(tmpdir(), "rec-a-")), mkdtempSync(join(tmpdir(), "rec-b-"))];
    try {
      for (const out of dirs) await record({ scenario: "fixture", out, manifestPath, quiet: true, certificates: 1 });
      const [a, b] = dirs.map((d) => readFileSync(join(d, "chain.tsv")));
      expect(a.length).toBeGreaterThan(1000);
      expect(a.equals(b)).toBe(true);
      expect(readFileSync(join(dirs[0], "manifest.json")).equals(readFileSync(join(dirs[1], "manifest.json")))).toBe(true);
      expect(readFileSync(join(dirs[0], "calls.jsonl")).equals(readFileSync(join(dirs[1], "calls.jsonl")))).toBe(true);
    } finally {
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!existsSync(join(DEMO, "chain.tsv")))("committed demo chain", () => {
  const rows = existsSync(join(DEMO, "chain.tsv")) ? parseCopy(readFileSync(join(DEMO, "chain.tsv"), "utf8")) : [];
  const manifest = existsSync(join(DEMO, "manifest.json")) ? JSON.parse(readFileSync(join(DEMO, "manifest.json"), "utf8")) : {};
  const blocks = rows.filter((r) => r[2] === "/new_block").map((r) => JSON.parse(r[3]));

  it("has four columns, increasing ids and timestamps, and the manifest's counts", () => {
    expect(rows.length).toBe(manifest.counts.requests);
    rows.forEach((r, i) => {
      expect(r).toHaveLength(4);
      expect(Number(r[0])).toBe(i + 1);
      expect(r[1]).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00$/);
      if (i) expect(r[1] > rows[i - 1][1]).toBe(true);
    });
    expect(blocks.length).toBe(manifest.counts.blocks);
    expect(blocks.reduce((n, b) => n + b.transactions.length, 0)).toBe(manifest.counts.transactions);
    expect(blocks.reduce((n, b) => n + b.events.length, 0)).toBe(manifest.counts.events);
  });

  it("deploys exactly the project's current contract sources (re-record when they change)", () => {
    const contracts = readManifestContracts(resolve(HERE, "../Clarinet.toml"));
    const deploys = blocks[0].transactions.map((t) => deserializeTransaction(t.raw_tx.slice(2)));
    expect(deploys.map((d) => d.payload.contractName.content)).toEqual(contracts.map((c) => c.name));
    deploys.forEach((d, i) => {
      const source = readFileSync(resolve(HERE, "..", contracts[i].path), "utf8");
      expect(d.payload.codeBody.content, `${contracts[i].name} changed since the demo was recorded: npm run record:demo`).toBe(source);
    });
  });

  it("every raw_tx deserializes and hashes to its txid", () => {
    let n = 0;
    for (const b of blocks) {
      for (const t of b.transactions) {
        const raw = Buffer.from(t.raw_tx.slice(2), "hex");
        expect("0x" + createHash("sha512-256").update(raw).digest("hex")).toBe(t.txid);
        const tx = deserializeTransaction(raw);
        expect("0x" + tx.txid()).toBe(t.txid);
        expect(tx.chainId).toBe(0x80000000);
        tx.verifyOrigin(); // throws on a bad signature
        n++;
      }
    }
    expect(n).toBeGreaterThan(500);
  });

  it("links every block to a parent delivered before it, with the forks the manifest names", () => {
    const seen = new Map();
    for (const b of blocks) {
      // event_index numbers the block's events 0..n-1, each joined to one of its transactions.
      expect(b.events.map((e) => e.event_index)).toEqual(b.events.map((_, i) => i));
      const txids = new Set(b.transactions.map((t) => t.txid));
      for (const e of b.events) expect(txids.has(e.txid)).toBe(true);
      if (seen.size) expect(seen.has(b.parent_index_block_hash)).toBe(true);
      if (seen.size) expect(seen.get(b.parent_index_block_hash).block_height).toBe(b.block_height - 1);
      expect(seen.has(b.index_block_hash)).toBe(false);
      seen.set(b.index_block_hash, b);
    }
    // Walk back from the tip: the canonical chain.
    const canonical = new Set();
    for (let h = manifest.canonical_tip.index_block_hash; seen.has(h); h = seen.get(h).parent_index_block_hash) canonical.add(h);
    expect(canonical.size).toBe(manifest.counts.canonical_blocks);
    expect(manifest.forks.map((f) => f.depth)).toEqual([1, 3]);
    for (const f of manifest.forks) {
      expect(f.orphaned).toHaveLength(f.depth);
      expect(f.canonical.length).toBeGreaterThan(f.depth);
      for (const h of f.orphaned) expect(canonical.has(h)).toBe(false);
      for (const h of f.canonical) expect(canonical.has(h)).toBe(true);
      expect(seen.get(f.orphaned[0]).block_height).toBe(f.height);
      // Orphans arrive before the competing canonical block at the same height.
      const idx = (h) => blocks.findIndex((b) => b.index_block_hash === h);
      expect(idx(f.orphaned[0])).toBeLessThan(idx(f.canonical[0]));
      const orphanEvents = f.orphaned.flatMap((h) => seen.get(h).events);
      expect(orphanEvents.length).toBeGreaterThan(0);
    }
    // Failed calls are mined with their result and no events.
    const failed = blocks.flatMap((b) => b.transactions.filter((t) => t.status === "abort_by_response").map((t) => [b, t]));
    expect(failed.length).toBeGreaterThan(2);
    for (const [b, t] of failed) {
      expect(b.events.some((e) => e.txid === t.txid)).toBe(false);
      expect(deserializeCV(t.raw_result.slice(2)).type).toBe("err");
    }
  });

  it("re-derives the manifest summary from the canonical events alone", () => {
    const byHash = new Map(blocks.map((b) => [b.index_block_hash, b]));
    const chain = [];
    for (let h = manifest.canonical_tip.index_block_hash; byHash.has(h); h = byHash.get(h).parent_index_block_hash) chain.unshift(byHash.get(h));
    const prints = chain.flatMap((b) =>
      b.events.filter((e) => e.type === "contract_event").map((e) => cvToValue(deserializeCV(e.contract_event.raw_value.slice(2)))),
    );
    const ev = (k) => prints.filter((p) => p.event.value === k);
    const s = manifest.summary;
    expect(ev("certificate-minted").length).toBe(s.certificates_minted);
    expect(ev("certificate-minted").length).toBeGreaterThanOrEqual(100);
    expect(ev("certificate-retired").length).toBe(s.retirements);
    const retired = {};
    for (const r of ev("certificate-retired")) {
      const k = `${r["beneficiary-name"].value}|${r["reporting-year"].value}`;
      retired[k] = (retired[k] ?? 0n) + BigInt(r.wh.value);
    }
    const expected = {};
    for (const [name, years] of Object.entries(s.retired_wh_by_beneficiary_year)) {
      for (const [y, wh] of Object.entries(years)) expected[`${name}|${y}`] = BigInt(wh);
    }
    expect(retired).toEqual(expected);
    expect(Object.keys(s.retired_wh_by_beneficiary_year).length).toBeGreaterThanOrEqual(3);
    const sales = {};
    for (const x of ev("sale")) {
      const cur = x.currency.value ? x.currency.value.value : "STX";
      sales[cur] ??= { count: 0, volume: 0n };
      sales[cur].count++;
      sales[cur].volume += BigInt(x.price.value);
    }
    for (const [cur, v] of Object.entries(s.sales)) {
      expect(sales[cur].count).toBe(v.count);
      expect(sales[cur].volume).toBe(BigInt(v.volume));
    }
    expect(ev("certificate-revoked").length).toBe(s.revoked_tokens.length);
    expect(ev("listing-expired").length).toBeGreaterThanOrEqual(1);
    // Final owners follow the last canonical NFT event of each token.
    const owner = {};
    for (const b of chain) {
      for (const e of b.events) {
        const body = e.nft_mint_event ?? e.nft_transfer_event ?? e.nft_burn_event;
        if (!body) continue;
        const id = String(cvToValue(deserializeCV(body.raw_value.slice(2))));
        owner[id] = e.type === "nft_burn_event" ? null : body.recipient;
      }
    }
    for (const [id, who] of Object.entries(s.final_owners)) expect(owner[id] ?? null).toBe(who);
    const countries = new Set(ev("facility-registered").map((f) => f.country.value));
    const sources = new Set(ev("facility-registered").map((f) => f["energy-source"].value));
    expect(countries.size).toBeGreaterThanOrEqual(4);
    expect(sources.size).toBeGreaterThanOrEqual(3);
    expect(new Set(ev("verifier-added").map((v) => v.verifier.value)).size).toBe(3);
  });

  it("prints every contract height as the height of the block that holds the event", () => {
    // A node runs a block's transactions at that block's height; `*-at` fields and a listing's
    // start are that height, never the parent's.
    const fields = {
      "facility-registered": ["registered-at"],
      "report-submitted": ["submitted-at", "updated-at"],
      "report-attested": ["updated-at"],
      "report-rejected": ["updated-at"],
      "report-withdrawn": ["updated-at"],
      "report-revoked": ["updated-at"],
      "report-minted": ["updated-at"],
      "certificate-minted": ["issued-at"],
      "certificate-retired": ["retired-at"],
      "listing-created": ["start-height"],
    };
    const seen = {};
    for (const b of blocks) {
      for (const e of b.events) {
        if (e.type !== "contract_event") continue;
        const v = cvToValue(deserializeCV(e.contract_event.raw_value.slice(2)));
        for (const f of fields[v.event?.value] ?? []) {
          expect(Number(v[f].value), `${v.event.value}.${f} in block ${b.block_height}`).toBe(b.block_height);
          seen[v.event.value] = (seen[v.event.value] ?? 0) + 1;
        }
      }
    }
    for (const kind of Object.keys(fields).filter((k) => k !== "report-withdrawn" && k !== "report-rejected")) {
      expect(seen[kind] ?? 0, kind).toBeGreaterThan(0);
    }
  });

  it("keeps a call log that names every delivered block and transaction, with its result", () => {
    const log = readFileSync(join(DEMO, "calls.jsonl"), "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
    expect(log.map((e) => e.index_block_hash)).toEqual(blocks.map((b) => b.index_block_hash));
    log.forEach((e, i) => {
      const b = blocks[i];
      expect([e.height, e.parent_index_block_hash, e.block_time]).toEqual([b.block_height, b.parent_index_block_hash, b.block_time]);
      expect(e.txs.map((t) => [t.txid, t.status])).toEqual(b.transactions.map((t) => [t.txid, t.status]));
      e.txs.forEach((t, k) => {
        if (t.deploy) return;
        const raw = b.transactions[k];
        const tx = deserializeTransaction(raw.raw_tx.slice(2));
        expect(tx.payload.functionName.content).toBe(t.fn);
        expect(`${addressToString(tx.payload.contractAddress)}.${tx.payload.contractName.content}`).toBe(t.contract);
        const result = deserializeCV(raw.raw_result.slice(2));
        expect(Object.keys(t.result)[0]).toBe(result.type === "ok" ? "ok" : "err");
        expect(tx.payload.functionArgs).toHaveLength(t.args.length);
      });
    });
    const branches = new Set(log.map((e) => e.branch));
    expect(branches).toEqual(new Set(["main", ...manifest.forks.map((_, i) => `orphan-${i + 1}`)]));
  });

  it("serves every token URI as SIP-016 metadata whose bytes match its CID", () => {
    const files = readdirSync(join(DEMO, "ipfs"));
    expect(files.length).toBe(manifest.counts.ipfs_files);
    for (const cid of files) {
      const bytes = readFileSync(join(DEMO, "ipfs", cid));
      expect(rawCid(bytes)).toBe(cid);
      const meta = JSON.parse(bytes.toString("utf8"));
      expect(meta.sip).toBe(16);
      expect(typeof meta.name).toBe("string");
    }
    const uris = blocks.flatMap((b) =>
      b.events
        .filter((e) => e.type === "contract_event")
        .map((e) => cvToValue(deserializeCV(e.contract_event.raw_value.slice(2))))
        .filter((p) => p.event.value === "certificate-minted")
        .map((p) => p["token-uri"].value),
    );
    for (const uri of uris) expect(files).toContain(uri.replace("ipfs://", ""));
  });
});
