// Deterministic wire-format vectors produced by @stacks/transactions, the reference encoder the
// Python codec in stacks/ is checked against. Fixed keys and a seeded PRNG: re-running this
// script must produce byte-identical files (ECDSA signing in @stacks/transactions is RFC 6979).
//
//   npm run vectors            (writes ../tests/fixtures/vectors/*.json)
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { c32address } from 'c32check';
import {
  AddressHashMode,
  AuthType,
  Cl,
  PostConditionMode,
  StacksTransactionWire,
  TransactionSigner,
  createCoinbasePayload,
  createContractCallPayload,
  createSmartContractPayload,
  StacksWireType,
  createMultiSigSpendingCondition,
  createNakamotoCoinbasePayload,
  createSingleSigSpendingCondition,
  createSponsoredAuth,
  createStandardAuth,
  createTenureChangePayload,
  cvToHex,
  deserializeTransaction,
  makeContractCall,
  makeContractDeploy,
  makeSTXTokenTransfer,
  privateKeyToPublic,
  sponsorTransaction,
  txidFromBytes,
} from '@stacks/transactions';
import { hexToBytes, bytesToHex } from '@stacks/common';

const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'tests', 'fixtures', 'vectors');

// ---------------------------------------------------------------- deterministic helpers
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(0x5eca1);
const randInt = n => Math.floor(rand() * n);
const randBytes = n => Uint8Array.from({ length: n }, () => randInt(256));
const hex = b => bytesToHex(b);

// Fixed private keys (compressed, hence the 01 suffix); never used anywhere real.
const KEYS = Array.from({ length: 8 }, (_, i) => {
  const body = (i + 1).toString(16).padStart(2, '0').repeat(32);
  return `${body}01`;
});
const PUBS = KEYS.map(k => privateKeyToPublic(k));
const UNCOMPRESSED_KEY = '4242424242424242424242424242424242424242424242424242424242424242';

const VERSIONS = { SP: 22, SM: 20, ST: 26, SN: 21 };
const addr = (version, h) => c32address(version, typeof h === 'string' ? h : hex(h));

// ---------------------------------------------------------------- typed JSON (the Python contract)
function toTypedJson(cv) {
  switch (cv.type) {
    case 'int':
    case 'uint':
      return { type: cv.type, value: BigInt(cv.value).toString() };
    case 'buffer':
      return { type: 'buffer', value: `0x${cv.value}` };
    case 'true':
      return { type: 'bool', value: true };
    case 'false':
      return { type: 'bool', value: false };
    case 'address':
    case 'contract':
      return { type: 'principal', value: cv.value };
    case 'ok':
    case 'err':
    case 'some':
      return { type: cv.type, value: toTypedJson(cv.value) };
    case 'none':
      return { type: 'none' };
    case 'list':
      return { type: 'list', value: cv.value.map(toTypedJson) };
    case 'tuple': {
      const out = {};
      for (const k of Object.keys(cv.value).sort()) out[k] = toTypedJson(cv.value[k]);
      return { type: 'tuple', value: out };
    }
    case 'ascii':
      return { type: 'string-ascii', value: cv.value };
    case 'utf8':
      return { type: 'string-utf8', value: cv.value };
    default:
      throw new Error(`unknown clarity type ${cv.type}`);
  }
}

// ---------------------------------------------------------------- clarity.json
const I128_MIN = -(2n ** 127n);
const I128_MAX = 2n ** 127n - 1n;
const U128_MAX = 2n ** 128n - 1n;
const ASCII_CHARS =
  'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~';
const UNICODE_SAMPLES = ['é', 'ß', 'Ω', 'ж', '中', '文', '☀', '⚡', '🌞', '🔋', '🌍', '💚', '\u0000'];
const randAscii = n => Array.from({ length: n }, () => ASCII_CHARS[randInt(ASCII_CHARS.length)]).join('');
const randUtf8 = n =>
  Array.from({ length: n }, () =>
    rand() < 0.5 ? ASCII_CHARS[randInt(ASCII_CHARS.length)] : UNICODE_SAMPLES[randInt(12)]
  ).join('');
const contractNameOf = n => {
  const tail = 'abcdefghijklmnopqrstuvwxyz0123456789-_';
  let s = 'r';
  while (s.length < n) s += tail[randInt(tail.length)];
  return s;
};
const randStdPrincipal = () => {
  const v = Object.values(VERSIONS)[randInt(4)];
  return Cl.standardPrincipal(addr(v, randBytes(20)));
};

function randomValue(depth) {
  const leafKinds = 9;
  const kinds = depth >= 4 ? leafKinds : leafKinds + 6;
  switch (randInt(kinds)) {
    case 0:
      return Cl.int(BigInt.asIntN(128, BigInt(`0x${hex(randBytes(1 + randInt(16)))}`)));
    case 1:
      return Cl.uint(BigInt(`0x${hex(randBytes(1 + randInt(16)))}`));
    case 2:
      return Cl.buffer(randBytes(randInt(40)));
    case 3:
      return Cl.bool(rand() < 0.5);
    case 4:
      return randStdPrincipal();
    case 5:
      return Cl.contractPrincipal(addr(VERSIONS.SP, randBytes(20)), contractNameOf(1 + randInt(40)));
    case 6:
      return Cl.stringAscii(randAscii(randInt(30)));
    case 7:
      return Cl.stringUtf8(randUtf8(randInt(20)));
    case 8:
      return Cl.none();
    case 9:
      return Cl.some(randomValue(depth + 1));
    case 10:
      return Cl.ok(randomValue(depth + 1));
    case 11:
      return Cl.error(randomValue(depth + 1));
    case 12: {
      // Clarity lists are homogeneous: repeat one generator shape.
      const n = randInt(5);
      const base = randInt(3);
      return Cl.list(
        Array.from({ length: n }, () =>
          base === 0 ? Cl.uint(randInt(1e9)) : base === 1 ? randStdPrincipal() : Cl.bool(rand() < 0.5)
        )
      );
    }
    default: {
      const n = randInt(5);
      const fields = {};
      for (let i = 0; i < n; i++) fields[`${contractNameOf(1 + randInt(10))}`] = randomValue(depth + 1);
      return Cl.tuple(fields);
    }
  }
}

function clarityVectors() {
  const out = [];
  const add = (name, cv) => out.push({ name, hex: cvToHex(cv), json: toTypedJson(cv) });

  for (const v of [0n, 1n, -1n, 127n, -128n, 255n, 2n ** 64n, -(2n ** 64n), I128_MIN, I128_MAX])
    add(`int ${v}`, Cl.int(v));
  for (const v of [0n, 1n, 255n, 256n, 2n ** 64n - 1n, 2n ** 64n, U128_MAX - 1n, U128_MAX])
    add(`uint ${v}`, Cl.uint(v));
  add('buffer empty', Cl.buffer(new Uint8Array()));
  add('buffer one zero', Cl.buffer(new Uint8Array([0])));
  add('buffer 32', Cl.buffer(randBytes(32)));
  add('buffer 1024', Cl.buffer(randBytes(1024)));
  add('true', Cl.bool(true));
  add('false', Cl.bool(false));
  add('string-ascii empty', Cl.stringAscii(''));
  add('string-ascii printable', Cl.stringAscii(ASCII_CHARS));
  add('string-ascii whitespace', Cl.stringAscii('line one\nline\ttwo\r\n'));
  add('string-utf8 empty', Cl.stringUtf8(''));
  add('string-utf8 accents', Cl.stringUtf8('énergie renouvelable'));
  add('string-utf8 cjk', Cl.stringUtf8('可再生能源证书'));
  add('string-utf8 emoji 4-byte', Cl.stringUtf8('solar 🌞 wind 🌬️ battery 🔋'));
  add('string-utf8 nul', Cl.stringUtf8('a\u0000b'));
  for (const [prefix, v] of Object.entries(VERSIONS)) {
    add(`principal ${prefix} zero hash`, Cl.standardPrincipal(addr(v, new Uint8Array(20))));
    add(`principal ${prefix} ff hash`, Cl.standardPrincipal(addr(v, new Uint8Array(20).fill(255))));
    add(`principal ${prefix} leading zeros`, Cl.standardPrincipal(addr(v, Uint8Array.from([0, 0, ...randBytes(18)]))));
    add(`principal ${prefix} random`, Cl.standardPrincipal(addr(v, randBytes(20))));
    add(`contract ${prefix} name 1`, Cl.contractPrincipal(addr(v, randBytes(20)), 'a'));
    add(`contract ${prefix} name 40`, Cl.contractPrincipal(addr(v, randBytes(20)), contractNameOf(40)));
    add(`contract ${prefix} name 127`, Cl.contractPrincipal(addr(v, randBytes(20)), contractNameOf(127)));
  }
  add('none', Cl.none());
  add('some uint', Cl.some(Cl.uint(7)));
  add('some none', Cl.some(Cl.none()));
  add('ok true', Cl.ok(Cl.bool(true)));
  add('err uint', Cl.error(Cl.uint(404)));
  add('ok ok err none', Cl.ok(Cl.ok(Cl.error(Cl.none()))));
  add('list empty', Cl.list([]));
  add('list uints', Cl.list([1, 2, 3, 4, 5].map(n => Cl.uint(n))));
  add('list of lists', Cl.list([Cl.list([Cl.int(-1)]), Cl.list([]), Cl.list([Cl.int(2), Cl.int(3)])]));
  add('list 300 bools', Cl.list(Array.from({ length: 300 }, (_, i) => Cl.bool(i % 3 === 0))));
  add('tuple empty', Cl.tuple({}));
  add('tuple unsorted input', Cl.tuple({ zeta: Cl.uint(1), alpha: Cl.uint(2), mid: Cl.bool(false) }));
  add('tuple name-prefixes', Cl.tuple({ a: Cl.uint(1), 'a-b': Cl.uint(2), ab: Cl.uint(3), 'a-': Cl.uint(4) }));
  add(
    'tuple REC mint event',
    Cl.tuple({
      topic: Cl.stringAscii('rec-minted'),
      'token-id': Cl.uint(42),
      recipient: Cl.standardPrincipal(addr(VERSIONS.ST, randBytes(20))),
      mwh: Cl.uint(1500),
      facility: Cl.stringUtf8('Parc éolien du Nord 🌬'),
      vintage: Cl.tuple({ year: Cl.uint(2024), quarter: Cl.uint(3) }),
      certificate: Cl.buffer(randBytes(32)),
      registry: Cl.some(Cl.contractPrincipal(addr(VERSIONS.ST, randBytes(20)), 'rec-registry')),
    })
  );
  // Maximal nesting: Clarity's type depth limit is 32, counting the innermost value.
  let deepSome = Cl.uint(1);
  for (let i = 0; i < 31; i++) deepSome = Cl.some(deepSome);
  add('depth 32 some chain', deepSome);
  let deepMix = Cl.bool(true);
  for (let i = 0; i < 31; i++) {
    const k = i % 4;
    deepMix = k === 0 ? Cl.list([deepMix]) : k === 1 ? Cl.tuple({ x: deepMix }) : k === 2 ? Cl.ok(deepMix) : Cl.error(deepMix);
  }
  add('depth 32 mixed', deepMix);
  let d10 = Cl.int(-5);
  for (let i = 0; i < 9; i++) d10 = Cl.tuple({ inner: d10, n: Cl.uint(i) });
  add('depth 10 tuples', d10);

  let i = 0;
  while (out.length < 260) add(`random ${i++}`, randomValue(0));
  return out;
}

// ---------------------------------------------------------------- addresses.json
function addressVectors() {
  const out = [];
  for (const [prefix, version] of Object.entries(VERSIONS)) {
    const hashes = [
      new Uint8Array(20),
      new Uint8Array(20).fill(255),
      Uint8Array.from([0, ...randBytes(19)]),
      Uint8Array.from([0, 0, 0, ...randBytes(17)]),
      Uint8Array.from([1, ...new Uint8Array(19)]),
    ];
    while (hashes.length < 15) hashes.push(randBytes(20));
    for (const h of hashes) {
      out.push({ prefix, version, hash160: hex(h), address: addr(version, h) });
    }
  }
  return out;
}

// ---------------------------------------------------------------- transactions.json
const HASH_MODE_NAMES = { 0: 'p2pkh', 1: 'p2sh', 2: 'p2wpkh', 3: 'p2wsh', 5: 'p2sh-non-sequential', 7: 'p2wsh-non-sequential' };
const FT_CODES = { 1: 'eq', 2: 'gt', 3: 'gte', 4: 'lt', 5: 'lte' };
const NFT_CODES = { 0x10: 'sent', 0x11: 'not-sent', 0x12: 'maybe-sent' };
const PC_TYPES = { 0: 'stx', 1: 'ft', 2: 'nft' };
const PAYLOAD_KINDS = {
  0: 'token-transfer', 1: 'smart-contract', 2: 'contract-call', 3: 'poison-microblock', 4: 'coinbase',
  5: 'coinbase-to-alt-recipient', 6: 'versioned-smart-contract', 7: 'tenure-change', 8: 'nakamoto-coinbase',
};

function conditionJson(sc, mainnet) {
  const multi = !('signature' in sc);
  const version = sc.hashMode === AddressHashMode.P2PKH ? (mainnet ? 22 : 26) : mainnet ? 20 : 21;
  const out = {
    hash_mode: sc.hashMode,
    hash_mode_name: HASH_MODE_NAMES[sc.hashMode],
    signer: sc.signer,
    signer_address: addr(version, sc.signer),
    nonce: sc.nonce.toString(),
    fee: sc.fee.toString(),
  };
  if (multi) {
    out.signatures_required = sc.signaturesRequired;
    out.fields = sc.fields.map(f => ({
      kind: f.contents.type === StacksWireType.PublicKey ? 'public-key' : 'signature',
      compressed: f.pubKeyEncoding === 0,
    }));
  } else {
    out.key_encoding = sc.keyEncoding;
    out.signature = sc.signature.data;
  }
  return out;
}

function pcPrincipal(p) {
  if (p.prefix === 1) return 'origin';
  const a = addr(p.address.version, p.address.hash160);
  return p.prefix === 3 ? `${a}.${p.contractName.content}` : a;
}

function postConditionJson(pc) {
  const out = { type: PC_TYPES[pc.conditionType], principal: pcPrincipal(pc.principal) };
  out.condition = pc.conditionType === 2 ? NFT_CODES[pc.conditionCode] : FT_CODES[pc.conditionCode];
  if (pc.conditionType !== 2) out.amount = pc.amount.toString();
  if (pc.conditionType !== 0)
    out.asset = `${addr(pc.asset.address.version, pc.asset.address.hash160)}.${pc.asset.contractName.content}::${pc.asset.assetName.content}`;
  if (pc.conditionType === 2) out.asset_id = toTypedJson(pc.assetName);
  return out;
}

function payloadJson(p) {
  const out = { kind: PAYLOAD_KINDS[p.payloadType] };
  switch (p.payloadType) {
    case 0:
      out.recipient = p.recipient.value;
      out.amount = p.amount.toString();
      out.memo_text = p.memo.content;
      break;
    case 1:
    case 6:
      out.contract_name = p.contractName.content;
      out.code_body = p.codeBody.content;
      if (p.payloadType === 6) out.clarity_version = p.clarityVersion;
      break;
    case 2:
      out.contract = `${addr(p.contractAddress.version, p.contractAddress.hash160)}.${p.contractName.content}`;
      out.function_name = p.functionName.content;
      out.args = p.functionArgs.map(toTypedJson);
      break;
    case 4:
    case 5:
    case 8:
      out.coinbase = `0x${hex(p.coinbaseBytes)}`;
      if (p.payloadType === 5) out.alt_recipient = p.recipient.value;
      if (p.payloadType === 8) {
        out.alt_recipient = p.recipient ? p.recipient.value : null;
        out.vrf_proof = `0x${hex(p.vrfProof)}`;
      }
      break;
    case 7:
      out.tenure_consensus_hash = `0x${p.tenureHash}`;
      out.prev_tenure_consensus_hash = `0x${p.previousTenureHash}`;
      out.burn_view_consensus_hash = `0x${p.burnViewHash}`;
      out.previous_tenure_end = `0x${p.previousTenureEnd}`;
      out.previous_tenure_blocks = p.previousTenureBlocks;
      out.cause = p.cause;
      out.pubkey_hash = `0x${p.publicKeyHash}`;
      break;
  }
  return out;
}

function describe(name, txHex, signatureValid) {
  // Expected fields come from @stacks/transactions' own decoder, not from the builder inputs,
  // so the vectors check the Python decoder against an independent reading of the bytes.
  const tx = deserializeTransaction(txHex);
  const mainnet = tx.transactionVersion === 0;
  return {
    name,
    hex: txHex,
    txid: txidFromBytes(hexToBytes(txHex)),
    signature_valid: signatureValid,
    version: tx.transactionVersion,
    network: mainnet ? 'mainnet' : 'testnet',
    chain_id: tx.chainId,
    auth_type: tx.auth.authType === AuthType.Standard ? 'standard' : 'sponsored',
    origin: conditionJson(tx.auth.spendingCondition, mainnet),
    sponsor: tx.auth.authType === AuthType.Sponsored ? conditionJson(tx.auth.sponsorSpendingCondition, mainnet) : null,
    anchor_mode: tx.anchorMode,
    post_condition_mode: tx.postConditionMode,
    post_conditions: tx.postConditions.values.map(postConditionJson),
    payload: payloadJson(tx.payload),
  };
}

async function transactionVectors() {
  const out = [];
  const push = (name, tx) => out.push(describe(name, tx.serialize(), true));
  const sender = (i, mainnet) => addr(mainnet ? 22 : 26, hex(new Uint8Array(20).fill(i)));
  const deployer = addr(26, '0f'.repeat(20));
  const nftAsset = `${deployer}.rec-token::rec`;
  const ftAsset = `${deployer}.green-coin::green`;

  // Token transfers with memos, both networks, including a contract recipient.
  for (const [i, network] of ['mainnet', 'testnet', 'mainnet', 'testnet'].entries()) {
    push(
      `stx transfer ${network} #${i}`,
      await makeSTXTokenTransfer({
        recipient: i === 3 ? `${deployer}.rec-market` : sender(i + 1, network === 'mainnet'),
        amount: 1000n * BigInt(i + 1) + (i === 2 ? 2n ** 63n : 0n),
        memo: ['', 'invoice 42', 'x'.repeat(34), 'énergie ⚡'][i],
        senderKey: KEYS[i],
        network,
        fee: 180 + i,
        nonce: i * 7,
      })
    );
  }

  // Contract calls: every FT condition code on STX and FT conditions, all NFT codes, all
  // principal kinds (origin / standard / contract), both post-condition modes.
  const codes = ['eq', 'gt', 'gte', 'lt', 'lte'];
  for (const [i, code] of codes.entries()) {
    const principalKinds = ['origin', sender(9, false), `${deployer}.rec-vault`];
    const who = principalKinds[i % 3];
    push(
      `contract call stx+ft ${code}`,
      await makeContractCall({
        contractAddress: deployer,
        contractName: 'rec-market',
        functionName: 'buy',
        functionArgs: [Cl.uint(i + 1), Cl.standardPrincipal(sender(3, false)), Cl.some(Cl.stringUtf8('note ✓'))],
        postConditions: [
          { type: 'stx-postcondition', address: who, condition: code, amount: 1_000_000 + i },
          { type: 'ft-postcondition', address: principalKinds[(i + 1) % 3], condition: code, asset: ftAsset, amount: 2n ** 64n - 1n - BigInt(i) },
        ],
        postConditionMode: i % 2 ? 'allow' : 'deny',
        senderKey: KEYS[i % KEYS.length],
        network: 'testnet',
        fee: 2000,
        nonce: 100 + i,
      })
    );
  }
  for (const [i, code] of ['sent', 'not-sent', 'maybe-sent'].entries()) {
    push(
      `contract call nft ${code}`,
      await makeContractCall({
        contractAddress: deployer,
        contractName: 'rec-token',
        functionName: 'transfer',
        functionArgs: [Cl.uint(77 + i), Cl.standardPrincipal(sender(1, false)), Cl.standardPrincipal(sender(2, false))],
        postConditions: [
          { type: 'nft-postcondition', address: ['origin', sender(1, false), `${deployer}.rec-vault`][i], condition: code, asset: nftAsset, assetId: Cl.uint(77 + i) },
          { type: 'nft-postcondition', address: sender(4, false), condition: code, asset: nftAsset, assetId: Cl.tuple({ serial: Cl.buffer(randBytes(8)), batch: Cl.uint(i) }) },
        ],
        senderKey: KEYS[(i + 3) % KEYS.length],
        network: 'testnet',
        fee: 3000,
        nonce: i,
      })
    );
  }
  push(
    'contract call mainnet rich args',
    await makeContractCall({
      contractAddress: addr(22, '1a'.repeat(20)),
      contractName: 'rec-registry-v2',
      functionName: 'register-facility',
      functionArgs: [
        Cl.tuple({ name: Cl.stringUtf8('Solar Farm ☀️'), capacity: Cl.uint(5_000_000), country: Cl.stringAscii('DE') }),
        Cl.list([Cl.buffer(randBytes(4)), Cl.buffer(randBytes(4))]),
        Cl.int(-42),
        Cl.none(),
        Cl.ok(Cl.bool(true)),
        Cl.contractPrincipal(addr(22, '1a'.repeat(20)), 'oracle'),
      ],
      senderKey: KEYS[5],
      network: 'mainnet',
      fee: 5000,
      nonce: 12345678901n,
    })
  );
  push(
    'contract call no args max nonce',
    await makeContractCall({
      contractAddress: deployer,
      contractName: 'rec-market',
      functionName: 'get-last-token-id',
      functionArgs: [],
      senderKey: KEYS[6],
      network: 'testnet',
      fee: 2n ** 64n - 1n,
      nonce: 2n ** 64n - 1n,
    })
  );

  // Sponsored: origin signs with the sponsor cleared, sponsor signs over the origin's sighash.
  for (const [i, network] of ['testnet', 'mainnet', 'testnet'].entries()) {
    const unsponsored = await makeContractCall({
      contractAddress: deployer,
      contractName: 'rec-market',
      functionName: 'list-certificate',
      functionArgs: [Cl.uint(10 + i), Cl.uint(2500)],
      senderKey: KEYS[i],
      network,
      fee: 0,
      nonce: i,
      sponsored: true,
      postConditions: [{ type: 'nft-postcondition', address: 'origin', condition: 'sent', asset: nftAsset, assetId: Cl.uint(10 + i) }],
    });
    push(
      `sponsored contract call ${network} #${i}`,
      await sponsorTransaction({ transaction: unsponsored, sponsorPrivateKey: KEYS[7 - i], fee: 4000 + i, sponsorNonce: 50 + i, network })
    );
  }
  const unsponsoredTransfer = await makeSTXTokenTransfer({
    recipient: sender(5, false), amount: 1n, memo: 'sponsored', senderKey: KEYS[2], network: 'testnet', fee: 0, nonce: 9, sponsored: true,
  });
  push('sponsored stx transfer', await sponsorTransaction({ transaction: unsponsoredTransfer, sponsorPrivateKey: KEYS[4], fee: 300, sponsorNonce: 3, network: 'testnet' }));

  // Multisig through the builders (P2SH, sequential and non-sequential).
  const multisigs = [
    { label: '2-of-3', pubs: PUBS.slice(0, 3), signers: [KEYS[0], KEYS[2]], m: 2 },
    { label: '1-of-2', pubs: PUBS.slice(3, 5), signers: [KEYS[4]], m: 1 },
    { label: '3-of-5', pubs: PUBS.slice(0, 5), signers: [KEYS[1], KEYS[2], KEYS[4]], m: 3 },
    { label: '2-of-3 non-sequential', pubs: PUBS.slice(2, 5), signers: [KEYS[2], KEYS[3]], m: 2, nonSeq: true },
    { label: '2-of-3 non-sequential all sign', pubs: PUBS.slice(1, 4), signers: [KEYS[1], KEYS[2], KEYS[3]], m: 2, nonSeq: true },
  ];
  for (const [i, ms] of multisigs.entries()) {
    const network = i % 2 ? 'mainnet' : 'testnet';
    const common = { publicKeys: ms.pubs, numSignatures: ms.m, signerKeys: ms.signers, useNonSequentialMultiSig: !!ms.nonSeq, network, fee: 900 + i, nonce: i };
    const tx =
      i % 2
        ? await makeSTXTokenTransfer({ ...common, recipient: sender(6, true), amount: 77n, memo: ms.label })
        : await makeContractCall({ ...common, contractAddress: deployer, contractName: 'rec-market', functionName: 'retire', functionArgs: [Cl.uint(i)] });
    push(`multisig p2sh ${ms.label}`, tx);
  }

  // Hash modes the builders do not expose: P2WPKH single-sig, P2WSH multisig, uncompressed key.
  const signWith = (tx, keys) => {
    const signer = new TransactionSigner(tx);
    for (const k of keys) {
      if (k.startsWith('pub:')) signer.appendOrigin(k.slice(4));
      else signer.signOrigin(k);
    }
    return signer.transaction;
  };
  const callPayload = (fn, args) => createContractCallPayload(deployer, 'rec-market', fn, args);
  {
    const sc = createSingleSigSpendingCondition(AddressHashMode.P2WPKH, PUBS[6], 4, 650);
    push('p2wpkh single-sig', signWith(new StacksTransactionWire({ auth: createStandardAuth(sc), payload: callPayload('claim', [Cl.uint(1)]), network: 'testnet' }), [KEYS[6]]));
  }
  {
    const pubs = PUBS.slice(4, 7);
    const sc = createMultiSigSpendingCondition(AddressHashMode.P2WSH, 2, pubs, 8, 1200);
    push('multisig p2wsh 2-of-3', signWith(new StacksTransactionWire({ auth: createStandardAuth(sc), payload: callPayload('claim', [Cl.uint(2)]), network: 'mainnet' }), [KEYS[4], `pub:${pubs[1]}`, KEYS[6]]));
  }
  {
    const pubs = PUBS.slice(0, 3);
    const sc = createMultiSigSpendingCondition(AddressHashMode.P2WSHNonSequential, 2, pubs, 2, 1300);
    push('multisig p2wsh non-sequential 2-of-3', signWith(new StacksTransactionWire({ auth: createStandardAuth(sc), payload: callPayload('claim', [Cl.uint(3)]), network: 'testnet' }), [`pub:${pubs[0]}`, KEYS[1], KEYS[2]]));
  }
  {
    const uncompressedPub = privateKeyToPublic(UNCOMPRESSED_KEY);
    const sc = createSingleSigSpendingCondition(AddressHashMode.P2PKH, uncompressedPub, 1, 500);
    push('p2pkh uncompressed key', signWith(new StacksTransactionWire({ auth: createStandardAuth(sc), payload: callPayload('ping', []), network: 'testnet' }), [UNCOMPRESSED_KEY]));
  }

  // Deployments.
  push('smart contract versioned clarity 2', await makeContractDeploy({ contractName: 'rec-token', codeBody: '(define-non-fungible-token rec uint)\n;; ☀ ok\n', clarityVersion: 2, senderKey: KEYS[1], network: 'testnet', fee: 10000, nonce: 0 }));
  push('smart contract versioned clarity 3', await makeContractDeploy({ contractName: 'rec-market', codeBody: '(define-data-var n uint u0)', clarityVersion: 3, senderKey: KEYS[2], network: 'mainnet', fee: 12000, nonce: 3, postConditionMode: 'allow' }));
  {
    const payload = createSmartContractPayload('legacy', '(define-constant x 1)');
    const sc = createSingleSigSpendingCondition(AddressHashMode.P2PKH, PUBS[3], 0, 700);
    push('smart contract unversioned', signWith(new StacksTransactionWire({ auth: createStandardAuth(sc), payload, network: 'testnet' }), [KEYS[3]]));
  }

  // Miner-only payloads, signed like any other transaction.
  const minerTx = (payload, network, key, nonce) => {
    const sc = createSingleSigSpendingCondition(AddressHashMode.P2PKH, privateKeyToPublic(key), nonce, 0);
    return signWith(new StacksTransactionWire({ auth: createStandardAuth(sc), payload, network }), [key]);
  };
  push('coinbase', minerTx(createCoinbasePayload(randBytes(32)), 'mainnet', KEYS[0], 1));
  push('coinbase to alt recipient', minerTx(createCoinbasePayload(randBytes(32), Cl.contractPrincipal(deployer, 'rec-pool')), 'testnet', KEYS[1], 2));
  push('nakamoto coinbase with recipient', minerTx(createNakamotoCoinbasePayload(randBytes(32), Cl.some(Cl.standardPrincipal(sender(8, true))), randBytes(80)), 'mainnet', KEYS[2], 3));
  push('nakamoto coinbase without recipient', minerTx(createNakamotoCoinbasePayload(randBytes(32), Cl.none(), randBytes(80)), 'testnet', KEYS[3], 4));
  push('tenure change block found', minerTx(createTenureChangePayload(hex(randBytes(20)), hex(randBytes(20)), hex(randBytes(20)), hex(randBytes(32)), 17, 0, hex(randBytes(20))), 'testnet', KEYS[4], 5));
  push('tenure change extended', minerTx(createTenureChangePayload(hex(randBytes(20)), hex(randBytes(20)), hex(randBytes(20)), hex(randBytes(32)), 0, 1, hex(randBytes(20))), 'mainnet', KEYS[5], 6));
  // No poison-microblock vector: @stacks/transactions writes an empty body there, while
  // stacks-core requires two microblock headers; the Python tests build that case themselves.

  // Tampered copies: still well-formed, but a signature no longer matches its signer.
  const tamper = (name, source, mutate) => {
    const bytes = hexToBytes(out.find(v => v.name === source).hex);
    mutate(bytes);
    out.push(describe(name, hex(bytes), false));
  };
  const FEE_OFFSET = 1 + 4 + 1 + 1 + 20 + 8; // version, chain id, auth type, hash mode, signer, nonce
  tamper('tampered fee', 'stx transfer testnet #1', b => { b[FEE_OFFSET + 7] ^= 0x01; });
  tamper('tampered signature s', 'contract call stx+ft eq', b => { b[FEE_OFFSET + 8 + 1 + 64] ^= 0x01; });
  tamper('tampered recipient amount', 'stx transfer mainnet #0', b => { b[b.length - 34 - 1] ^= 0x10; });
  tamper('tampered signer hash', 'contract call nft sent', b => { b[1 + 4 + 1 + 1] ^= 0xff; });
  tamper('tampered sponsor fee', 'sponsored contract call testnet #0', b => {
    const sponsorFee = 1 + 4 + 1 + (1 + 20 + 8 + 8 + 1 + 65) + 1 + 20 + 8 + 7;
    b[sponsorFee] ^= 0x02;
  });
  tamper('tampered multisig arg', 'multisig p2sh 2-of-3', b => { b[b.length - 1] ^= 0x01; });
  return out;
}

mkdirSync(OUT, { recursive: true });
const write = (file, data) => writeFileSync(join(OUT, file), `${JSON.stringify(data, null, 1)}\n`);
write('clarity.json', { generator: '@stacks/transactions 7.6.0', vectors: clarityVectors() });
write('addresses.json', { generator: 'c32check (via @stacks/transactions 7.6.0)', vectors: addressVectors() });
write('transactions.json', { generator: '@stacks/transactions 7.6.0', vectors: await transactionVectors() });
console.log('vectors written to', OUT);
