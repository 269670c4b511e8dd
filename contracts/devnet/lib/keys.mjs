// Devnet account keys, derived from the mnemonics in settings/Devnet.toml the way Stacks wallets
// do it (BIP-39 seed, BIP-32 path m/44'/5757'/0'/0/0), so the recorder signs with exactly the
// keys whose addresses clarinet funds, without a wallet SDK dependency.
import { createHmac, pbkdf2Sync } from "node:crypto";
import { readFileSync } from "node:fs";
import { privateKeyToPublic, getAddressFromPrivateKey } from "@stacks/transactions";

const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const HARDENED = 0x80000000;

export class DevnetAccountError extends Error {
  constructor(message) {
    super(message);
    this.name = "DevnetAccountError";
  }
}

const toBig = (buf) => BigInt("0x" + buf.toString("hex"));
const to32 = (n) => Buffer.from(n.toString(16).padStart(64, "0"), "hex");

function ckd(key, chain, index) {
  const data = Buffer.alloc(37);
  if (index >= HARDENED) {
    key.copy(data, 1);
  } else {
    // The "01" suffix asks for the compressed public key, which BIP-32 serializes.
    Buffer.from(privateKeyToPublic(key.toString("hex") + "01"), "hex").copy(data, 0);
  }
  data.writeUInt32BE(index >>> 0, 33);
  const I = createHmac("sha512", chain).update(data).digest();
  const il = toBig(I.subarray(0, 32));
  // BIP-32: an IL outside the curve order or a zero child is vanishingly rare; refuse it loudly
  // rather than silently skipping to the next index as a wallet would.
  if (il >= N) throw new DevnetAccountError("derived key out of range");
  const child = (il + toBig(key)) % N;
  if (child === 0n) throw new DevnetAccountError("derived zero key");
  return [to32(child), I.subarray(32)];
}

/** Private key (hex, compressed-suffix 01) for a BIP-39 mnemonic on the Stacks path. */
export function privateKeyFromMnemonic(mnemonic, accountIndex = 0) {
  const words = mnemonic.trim().split(/\s+/);
  if (![12, 15, 18, 21, 24].includes(words.length)) {
    throw new DevnetAccountError(`mnemonic has ${words.length} words; expected 12..24`);
  }
  const seed = pbkdf2Sync(Buffer.from(words.join(" ").normalize("NFKD")), "mnemonic", 2048, 64, "sha512");
  const I = createHmac("sha512", "Bitcoin seed").update(seed).digest();
  let key = I.subarray(0, 32);
  let chain = I.subarray(32);
  for (const idx of [44 + HARDENED, 5757 + HARDENED, HARDENED, 0, accountIndex]) {
    [key, chain] = ckd(key, chain, idx);
  }
  return key.toString("hex") + "01";
}

/**
 * Accounts of a Clarinet Devnet.toml: [{name, mnemonic, balance, privateKey, address}].
 * Only the `[accounts.*]` tables with `mnemonic` and `balance` are read; a tiny parser keeps the
 * recorder free of a TOML dependency for this fixed, simple shape.
 */
export function loadDevnetAccounts(devnetTomlPath) {
  const text = readFileSync(devnetTomlPath, "utf8");
  const accounts = [];
  let current = null;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    if (!line) continue;
    const table = line.match(/^\[([^\]]+)\]$/);
    if (table) {
      const m = table[1].match(/^accounts\.([A-Za-z0-9_-]+)$/);
      current = m ? { name: m[1] } : null;
      if (current) accounts.push(current);
      continue;
    }
    if (!current) continue;
    const kv = line.match(/^([A-Za-z_]+)\s*=\s*(.+)$/);
    if (!kv) continue;
    if (kv[1] === "mnemonic") current.mnemonic = kv[2].replace(/^"|"$/g, "");
    if (kv[1] === "balance") current.balance = BigInt(kv[2].replace(/_/g, ""));
    if (kv[1] === "derivation") current.derivation = kv[2].replace(/^"|"$/g, "");
  }
  for (const a of accounts) {
    if (!a.mnemonic) throw new DevnetAccountError(`account ${a.name} has no mnemonic`);
    if (a.derivation && a.derivation !== "m/44'/5757'/0'/0/0") {
      throw new DevnetAccountError(`account ${a.name}: unsupported derivation ${a.derivation}`);
    }
    a.privateKey = privateKeyFromMnemonic(a.mnemonic);
    a.address = getAddressFromPrivateKey(a.privateKey, "testnet");
  }
  return accounts;
}
