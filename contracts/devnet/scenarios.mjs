// Scripted chains. Each scenario drives a `Chain` with real signed calls and keeps a small model
// of what it expects (owners, listings, retirements); the model becomes the manifest's summary,
// and the recorder checks it against the contracts' own read-only answers at the end.
import { createHash } from "node:crypto";
import { Cl, Pc, cvToValue } from "@stacks/transactions";
import { rawCid } from "./lib/cid.mjs";
import { RecorderError } from "./lib/chain.mjs";

/** Small deterministic PRNG (mulberry32): same seed, same chain. */
export function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (arr) => arr[Math.floor(next() * arr.length)],
  };
}

const DAY = 86400;
const utc = (y, m, d = 1) => Date.UTC(y, m - 1, d) / 1000;
const sha256 = (s) => createHash("sha256").update(s).digest();

// ---------------------------------------------------------------------------------------------
// fixture: the tiny project in devnet/test-fixture, for machinery tests only.

export async function fixtureScenario(chain) {
  const cert = chain.contractId("fixture-cert");
  const asset = `${cert}::fixture-cert`;
  const w1 = chain.account("wallet_1").address;
  const calls = [];
  for (let i = 1; i <= 3; i++) {
    calls.push({ sender: "deployer", contract: "fixture-cert", fn: "mint", args: [Cl.principal(w1), Cl.uint(1000 * i), Cl.stringAscii(`ipfs://fixture-${i}`)], expect: "ok" });
  }
  await chain.mine(calls);
  await chain.mine([1, 2].map((id) => ({
    sender: "wallet_1", contract: "fixture-cert", fn: "list-fixed", args: [Cl.uint(id), Cl.uint(5000000)],
    postConditions: [Pc.principal(w1).willSendAsset().nft(asset, Cl.uint(id))], expect: "ok",
  })));
  return {
    listings: [
      { id: 1, token: 1, price: 5000000n, seller: w1 },
      { id: 2, token: 2, price: 5000000n, seller: w1 },
    ],
    buyCall(buyer, listing) {
      return {
        sender: buyer, contract: "fixture-cert", fn: "buy", args: [Cl.uint(listing.token)],
        postConditions: [
          Pc.principal(chain.account(buyer).address).willSendEq(listing.price).ustx(),
          Pc.principal(cert).willSendAsset().nft(asset, Cl.uint(listing.token)),
        ],
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The REC-Chain project scenarios.

const FACILITIES = [
  { owner: "wallet_4", name: "Sonnenfeld Solarpark", country: "DE", subdivision: "DE-BY", boundary: "EU-AIB", zone: "10Y1001A1001A82H", lat: 48_137_154, lon: 11_576_124, es: "ES100", tc: "TC110", capacity: 40_000_000, commissioned: utc(2019, 6, 1), repowered: null, support: true, irec: "DE-SONNEN-01", gsrn: "643002406112345678" },
  { owner: "wallet_4", name: "Nordsee Ost Windpark", country: "DE", subdivision: "DE-SH", boundary: "EU-AIB", zone: "10Y1001A1001A82H", lat: 54_433_000, lon: 7_683_000, es: "ES200", tc: "TC220", capacity: 295_000_000, commissioned: utc(2015, 5, 1), repowered: null, support: true, irec: "DE-NSOST-01", gsrn: "643002406198765432" },
  { owner: "wallet_5", name: "Permian Sun Ranch", country: "US", subdivision: "US-TX", boundary: "US-ERCOT", zone: "ERCOT-WEST", lat: 31_845_000, lon: -102_367_000, es: "ES100", tc: "TC110", capacity: 150_000_000, commissioned: utc(2021, 3, 15), repowered: null, support: false, irec: "US-PERMSUN-01", gsrn: "" },
  { owner: "wallet_5", name: "Panhandle Wind Farm", country: "US", subdivision: "US-TX", boundary: "US-ERCOT", zone: "ERCOT-PANHANDLE", lat: 35_221_000, lon: -101_831_000, es: "ES200", tc: "TC210", capacity: 200_000_000, commissioned: utc(2008, 9, 1), repowered: utc(2020, 4, 1), support: false, irec: "US-PANWIND-01", gsrn: "" },
  { owner: "wallet_6", name: "Glomma Kraftverk", country: "NO", subdivision: "NO-34", boundary: "EU-AIB", zone: "10YNO-1--------2", lat: 60_190_000, lon: 11_560_000, es: "ES300", tc: "TC310", capacity: 60_000_000, commissioned: utc(1985, 1, 1), repowered: utc(2016, 10, 1), support: false, irec: "NO-GLOMMA-01", gsrn: "" },
  { owner: "wallet_4", name: "Parque Eolico Ventos do Sul", country: "BR", subdivision: "BR-RS", boundary: "BR-SIN", zone: "BR-S", lat: -30_030_000, lon: -51_230_000, es: "ES200", tc: "TC210", capacity: 150_000_000, commissioned: utc(2012, 7, 1), repowered: null, support: true, irec: "BR-VENTSUL-01", gsrn: "" },
  { owner: "wallet_5", name: "Columbia Gorge Hydro", country: "US", subdivision: "US-OR", boundary: "US-WECC", zone: "BPA", lat: 45_700_000, lon: -121_500_000, es: "ES300", tc: "TC310", capacity: 90_000_000, commissioned: utc(1975, 5, 1), repowered: utc(2013, 3, 1), support: false, irec: "US-COLGORGE-01", gsrn: "" },
  { owner: "wallet_6", name: "Huerta Solar Andalucia", country: "ES", subdivision: "ES-AN", boundary: "EU-AIB", zone: "10YES-REE------0", lat: 37_389_000, lon: -5_984_000, es: "ES100", tc: "TC110", capacity: 80_000_000, commissioned: utc(2022, 2, 1), repowered: null, support: false, irec: "ES-HUERTA-01", gsrn: "" },
  // Commissioned long ago and never repowered: fails the RE100 15-year test.
  { owner: "wallet_6", name: "Alta Kraftverk", country: "NO", subdivision: "NO-54", boundary: "EU-AIB", zone: "10YNO-4--------9", lat: 69_968_000, lon: 23_271_000, es: "ES300", tc: "TC310", capacity: 150_000_000, commissioned: utc(1987, 9, 1), repowered: null, support: false, irec: "NO-ALTA-01", gsrn: "" },
  // Metered hourly (no monthly reports): the demo's 24/7 certificates, DE-LU bidding zone.
  { owner: "wallet_4", name: "Elbe Wind Hamburg", country: "DE", subdivision: "DE-HH", boundary: "EU-AIB", zone: "10Y1001A1001A82H", lat: 53_551_000, lon: 9_994_000, es: "ES200", tc: "TC210", capacity: 20_000_000, commissioned: utc(2021, 10, 1), repowered: null, support: false, irec: "DE-ELBEWIND-01", gsrn: "643002406155501234", hourly: true },
];
/** Monthly capacity factors by energy source, so energy figures look like real plants. */
const CF = { ES100: 0.18, ES200: 0.38, ES300: 0.55 };
const BENEFICIARIES = [
  { name: "Acme Manufacturing GmbH", account: "wallet_7", country: "DE", subdivision: "DE-BY", boundary: "EU-AIB", purpose: "re100" },
  { name: "Globex Data Centers Inc", account: "wallet_8", country: "US", subdivision: "US-TX", boundary: "US-ERCOT", purpose: "voluntary-scope2" },
  { name: "City of Oslo", account: null, country: "NO", subdivision: "NO-03", boundary: "EU-AIB", purpose: "cdp" },
  { name: "Initech Retail SA", account: null, country: "ES", subdivision: "ES-MD", boundary: "EU-AIB", purpose: "voluntary-scope2" },
];

/** SIP-016 metadata as canonical bytes (fixed key order, newline-terminated). */
function metadataBytes(obj) {
  return Buffer.from(JSON.stringify(obj, null, 2) + "\n");
}

class Project {
  constructor(chain, { writeIpfs = true } = {}) {
    this.chain = chain;
    this.ipfs = new Map(); // cid -> bytes
    this.writeIpfs = writeIpfs;
    this.nft = chain.contractId("rec-nft");
    this.market = chain.contractId("marketplace");
    this.sbtc = chain.contractId("sbtc-token");
    this.asset = `${this.nft}::rec`;
    this.tokens = new Map();
    this.listings = new Map();
    this.facilities = [];
    this.reports = new Map();
    this.lastTokenId = 0;
    this.lastListingId = 0;
    this.lastReportId = 0;
    this.serial = 0n;
    this.feeBps = 250n;
    this.sales = [];
    this.retirements = [];
    this.revoked = [];
  }

  addr(name) {
    return this.chain.account(name).address;
  }

  store(obj) {
    const bytes = metadataBytes(obj);
    const cid = rawCid(bytes);
    if (this.writeIpfs) this.ipfs.set(cid, bytes);
    return `ipfs://${cid}`;
  }

  currencyCV(currency) {
    return currency === "STX" ? Cl.none() : Cl.some(Cl.contractPrincipal(...this.sbtc.split(".")));
  }

  pay(principal, currency, amount) {
    const p = Pc.principal(principal).willSendEq(amount);
    return currency === "STX" ? p.ustx() : p.ft(this.sbtc, "sbtc");
  }

  nftOut(principal, tokenId) {
    return Pc.principal(principal).willSendAsset().nft(this.asset, Cl.uint(tokenId));
  }

  height() {
    return this.chain.simnet.blockHeight;
  }

  // -- calls -----------------------------------------------------------------------------------

  registerFacility(f) {
    const id = this.facilities.length + 1;
    const uri = this.store({
      sip: 16,
      name: f.name,
      description: `${f.name}, a ${f.capacity / 1e6} MW generation facility registered for renewable energy certificates.`,
      attributes: [
        { trait_type: "country", value: f.country },
        { trait_type: "subdivision", value: f.subdivision },
        { trait_type: "market_boundary", value: f.boundary },
        { trait_type: "grid_zone", value: f.zone },
        { trait_type: "energy_source", value: f.es },
        { trait_type: "technology", value: f.tc },
        { trait_type: "capacity_w", value: f.capacity, display_type: "number" },
        { trait_type: "commissioning_date", value: f.commissioned, display_type: "date" },
      ],
      properties: { latitude: f.lat / 1e6, longitude: f.lon / 1e6, irec_code: f.irec, meter_gsrn: f.gsrn },
    });
    this.facilities.push({ ...f, id, uri, lastEnd: 0 });
    return {
      sender: f.owner, contract: "verification", fn: "register-facility", expect: "ok",
      args: [
        Cl.stringUtf8(f.name), Cl.stringAscii(f.country), Cl.stringAscii(f.subdivision), Cl.stringAscii(f.boundary),
        Cl.stringAscii(f.zone), Cl.int(f.lat), Cl.int(f.lon), Cl.stringAscii(f.es), Cl.stringAscii(f.tc),
        Cl.uint(f.capacity), Cl.uint(f.commissioned), f.repowered ? Cl.some(Cl.uint(f.repowered)) : Cl.none(),
        Cl.bool(f.support), Cl.stringAscii(f.irec), Cl.stringAscii(f.gsrn), Cl.stringAscii(uri),
      ],
    };
  }

  submitReport(facility, start, end, wh) {
    const id = ++this.lastReportId;
    this.reports.set(id, { id, facility, start, end, wh, status: "submitted" });
    const evidence = sha256(`meter-data|${facility.id}|${start}|${end}|${wh}`);
    return {
      sender: facility.owner, contract: "verification", fn: "submit-report", expect: "ok",
      args: [Cl.uint(facility.id), Cl.uint(start), Cl.uint(end), Cl.uint(wh), Cl.buffer(evidence)],
      report: id,
    };
  }

  attest(reportId, verifier) {
    this.reports.get(reportId).status = "attested";
    return { sender: verifier, contract: "verification", fn: "attest-report", args: [Cl.uint(reportId)], expect: "ok" };
  }

  mint(reportId, caller) {
    const r = this.reports.get(reportId);
    const f = r.facility;
    const id = ++this.lastTokenId;
    const serialStart = this.serial;
    this.serial += BigInt(r.wh);
    const vintage = new Date(r.start * 1000).getUTCFullYear();
    const month = new Date(r.start * 1000).toISOString().slice(0, 7);
    const uri = this.store({
      sip: 16,
      name: `REC ${f.name} ${month}`,
      description: `Renewable energy certificate for ${(r.wh / 1e6).toFixed(3)} MWh generated by ${f.name} (${f.country}) in ${month}.`,
      attributes: [
        { trait_type: "facility", value: f.name },
        { trait_type: "facility_id", value: f.id, display_type: "number" },
        { trait_type: "country", value: f.country },
        { trait_type: "market_boundary", value: f.boundary },
        { trait_type: "energy_source", value: f.es },
        { trait_type: "technology", value: f.tc },
        { trait_type: "period_start", value: r.start, display_type: "date" },
        { trait_type: "period_end", value: r.end, display_type: "date" },
        { trait_type: "vintage", value: vintage, display_type: "number" },
        { trait_type: "wh", value: r.wh, display_type: "number" },
        { trait_type: "serial_start", value: serialStart.toString() },
        { trait_type: "serial_end", value: this.serial.toString() },
      ],
      properties: { report_id: reportId, issuer: "REC-Chain devnet" },
    });
    r.status = "minted";
    this.tokens.set(id, {
      id, owner: this.addr(f.owner), wh: BigInt(r.wh), status: "active", facility: f, vintage,
      serialStart, serialEnd: this.serial, uri, parent: null, report: reportId,
    });
    return { sender: caller, contract: "rec-nft", fn: "mint", args: [Cl.uint(reportId), Cl.stringAscii(uri)], expect: "ok", token: id };
  }

  split(tokenId, parts) {
    const t = this.tokens.get(tokenId);
    const total = t.wh;
    const amounts = [];
    let left = total;
    for (let i = 0; i < parts - 1; i++) {
      const a = total / BigInt(parts);
      amounts.push(a);
      left -= a;
    }
    amounts.push(left);
    const children = [];
    let s = t.serialStart;
    for (const a of amounts) {
      const id = ++this.lastTokenId;
      this.tokens.set(id, { ...t, id, wh: a, serialStart: s, serialEnd: s + a, parent: tokenId, status: "active" });
      s += a;
      children.push(id);
    }
    t.status = "split";
    const owner = this.nameOf(t.owner);
    return {
      sender: owner, contract: "rec-nft", fn: "split", expect: "ok", children,
      args: [Cl.uint(tokenId), Cl.list(amounts.map((a) => Cl.uint(a)))],
      postConditions: [this.nftOut(t.owner, tokenId)],
    };
  }

  nameOf(address) {
    return this.chain.account(address).name;
  }

  transfer(tokenId, to) {
    const t = this.tokens.get(tokenId);
    const from = t.owner;
    t.owner = this.addr(to);
    return {
      sender: this.nameOf(from), contract: "rec-nft", fn: "transfer", expect: "ok",
      args: [Cl.uint(tokenId), Cl.principal(from), Cl.principal(this.addr(to))],
      postConditions: [this.nftOut(from, tokenId)],
    };
  }

  listFixed(tokenId, currency, price, endHeight) {
    const t = this.tokens.get(tokenId);
    const id = ++this.lastListingId;
    this.listings.set(id, { id, kind: "fixed-price", token: tokenId, seller: t.owner, currency, price: BigInt(price), end: endHeight, status: "active" });
    t.status = "listed";
    return {
      sender: this.nameOf(t.owner), contract: "marketplace", fn: "list-fixed", expect: "ok", listing: id,
      args: [Cl.uint(tokenId), this.currencyCV(currency), Cl.uint(price), Cl.uint(endHeight)],
      postConditions: [this.nftOut(t.owner, tokenId)],
    };
  }

  createAuction(tokenId, currency, start, reserve, increment, endHeight) {
    const t = this.tokens.get(tokenId);
    const id = ++this.lastListingId;
    this.listings.set(id, {
      id, kind: "auction", token: tokenId, seller: t.owner, currency, price: BigInt(start), reserve: BigInt(reserve),
      increment: BigInt(increment), end: endHeight, status: "active", bidder: null, bid: 0n,
    });
    t.status = "listed";
    return {
      sender: this.nameOf(t.owner), contract: "marketplace", fn: "create-auction", expect: "ok", listing: id,
      args: [Cl.uint(tokenId), this.currencyCV(currency), Cl.uint(start), Cl.uint(reserve), Cl.uint(increment), Cl.uint(endHeight)],
      postConditions: [this.nftOut(t.owner, tokenId)],
    };
  }

  ftArg(currency) {
    return currency === "STX" ? Cl.none() : Cl.some(Cl.contractPrincipal(...this.sbtc.split(".")));
  }

  recordSale(l, buyer, retired = false) {
    const fee = (l.price * this.feeBps) / 10000n;
    this.sales.push({ listing: l.id, token: l.token, currency: l.currency, price: l.price, fee, buyer, seller: l.seller, kind: l.kind, retired });
    l.status = "sold";
    const t = this.tokens.get(l.token);
    t.owner = buyer;
    t.status = "active";
  }

  /** A purchase of listing `l` by `buyer`, leaving the model alone (for an orphaned branch). */
  buyCall(l, buyer) {
    const b = this.addr(buyer);
    return {
      sender: buyer, contract: "marketplace", fn: "buy", expect: "ok",
      args: [Cl.uint(l.id), this.ftArg(l.currency)],
      postConditions: [this.pay(b, l.currency, l.price), this.nftOut(this.market, l.token)],
    };
  }

  buy(listingId, buyer) {
    const l = this.listings.get(listingId);
    const call = this.buyCall(l, buyer);
    this.recordSale(l, this.addr(buyer));
    return call;
  }

  /** A claim for `year` (its whole calendar year unless `period` [start, end) is given). */
  claimArgs(beneficiary, year, period = null) {
    const [start, end] = period ?? [utc(year, 1, 1), utc(year + 1, 1, 1)];
    return [
      Cl.stringUtf8(beneficiary.name),
      beneficiary.account ? Cl.some(Cl.principal(this.addr(beneficiary.account))) : Cl.none(),
      Cl.stringAscii(beneficiary.country), Cl.stringAscii(beneficiary.subdivision), Cl.stringAscii(beneficiary.boundary),
      Cl.uint(start), Cl.uint(end), Cl.uint(year), Cl.stringAscii(beneficiary.purpose),
    ];
  }

  noteRetirement(tokenId, beneficiary, year) {
    const t = this.tokens.get(tokenId);
    t.status = "retired";
    this.retirements.push({ token: tokenId, wh: t.wh, beneficiary: beneficiary.name, year, owner: t.owner });
  }

  buyAndRetire(listingId, buyer, beneficiary, year) {
    const l = this.listings.get(listingId);
    const b = this.addr(buyer);
    this.recordSale(l, b, true);
    this.noteRetirement(l.token, beneficiary, year);
    return {
      sender: buyer, contract: "marketplace", fn: "buy-and-retire", expect: "ok",
      args: [Cl.uint(listingId), this.ftArg(l.currency), ...this.claimArgs(beneficiary, year)],
      postConditions: [this.pay(b, l.currency, l.price), this.nftOut(this.market, l.token)],
    };
  }

  retire(tokenId, beneficiary, year, period = null) {
    const t = this.tokens.get(tokenId);
    const owner = this.nameOf(t.owner);
    this.noteRetirement(tokenId, beneficiary, year);
    return {
      sender: owner, contract: "rec-nft", fn: "retire", expect: "ok",
      args: [Cl.uint(tokenId), ...this.claimArgs(beneficiary, year, period)],
    };
  }

  bid(listingId, bidder, amount) {
    const l = this.listings.get(listingId);
    const b = this.addr(bidder);
    const pcs = [this.pay(b, l.currency, amount)];
    if (l.bidder) pcs.push(this.pay(this.market, l.currency, l.bid));
    l.bidder = b;
    l.bid = BigInt(amount);
    return {
      sender: bidder, contract: "marketplace", fn: "place-bid", expect: "ok",
      args: [Cl.uint(listingId), Cl.uint(amount), this.ftArg(l.currency)],
      postConditions: pcs,
    };
  }

  settle(listingId, caller) {
    const l = this.listings.get(listingId);
    const pcs = [this.nftOut(this.market, l.token)];
    if (l.bidder) pcs.push(this.pay(this.market, l.currency, l.bid));
    if (l.bidder && l.bid >= l.reserve) {
      const bid = l.bid;
      l.price = bid;
      this.recordSale(l, l.bidder);
    } else {
      l.status = "expired";
      this.tokens.get(l.token).status = "active";
    }
    return { sender: caller, contract: "marketplace", fn: "settle-auction", expect: "ok", args: [Cl.uint(listingId), this.ftArg(l.currency)], postConditions: pcs };
  }

  expire(listingId, caller) {
    const l = this.listings.get(listingId);
    l.status = "expired";
    this.tokens.get(l.token).status = "active";
    return { sender: caller, contract: "marketplace", fn: "expire-listing", expect: "ok", args: [Cl.uint(listingId)], postConditions: [this.nftOut(this.market, l.token)] };
  }

  cancel(listingId) {
    const l = this.listings.get(listingId);
    l.status = "cancelled";
    const t = this.tokens.get(l.token);
    if (t.status === "listed") t.status = "active";
    return { sender: this.nameOf(l.seller), contract: "marketplace", fn: "cancel-listing", expect: "ok", args: [Cl.uint(listingId)], postConditions: [this.nftOut(this.market, l.token)] };
  }

  revokeReport(reportId, verifier, reason) {
    this.reports.get(reportId).status = "revoked";
    return { sender: verifier, contract: "verification", fn: "revoke-report", expect: "ok", args: [Cl.uint(reportId), Cl.stringUtf8(reason)] };
  }

  updatePrice(listingId, price) {
    const l = this.listings.get(listingId);
    l.price = BigInt(price);
    return { sender: this.nameOf(l.seller), contract: "marketplace", fn: "update-price", expect: "ok", args: [Cl.uint(listingId), Cl.uint(price)] };
  }

  revokeToken(tokenId, verifier, reason) {
    const t = this.tokens.get(tokenId);
    t.status = "revoked";
    this.revoked.push(tokenId);
    return { sender: verifier, contract: "rec-nft", fn: "revoke", expect: "ok", args: [Cl.uint(tokenId), Cl.stringUtf8(reason)] };
  }

  /** The mutable model, for undoing a live step whose transaction did not succeed. */
  snapshot() {
    const keys = ["tokens", "listings", "lastTokenId", "lastListingId", "serial", "sales", "retirements", "revoked"];
    return structuredClone(Object.fromEntries(keys.map((k) => [k, this[k]])));
  }

  restore(snap) {
    Object.assign(this, structuredClone(snap));
  }

  /** Tokens in a given status held by `owner`, lowest id first (deterministic). */
  held(owner, status = "active") {
    const a = this.addr(owner);
    return [...this.tokens.values()].filter((t) => t.owner === a && t.status === status).map((t) => t.id);
  }

  summary() {
    const live = [...this.tokens.values()].filter((t) => t.status === "active" || t.status === "listed");
    const retired = {};
    for (const r of this.retirements) {
      retired[r.beneficiary] ??= {};
      retired[r.beneficiary][r.year] = (BigInt(retired[r.beneficiary][r.year] ?? 0) + r.wh).toString();
    }
    const sales = {};
    for (const s of this.sales) {
      const k = s.currency === "STX" ? "STX" : this.sbtc;
      sales[k] ??= { count: 0, volume: "0", fees: "0" };
      sales[k].count++;
      sales[k].volume = (BigInt(sales[k].volume) + s.price).toString();
      sales[k].fees = (BigInt(sales[k].fees) + s.fee).toString();
    }
    const byStatus = {};
    for (const t of this.tokens.values()) byStatus[t.status] = (byStatus[t.status] ?? 0) + 1;
    const listingStatus = {};
    for (const l of this.listings.values()) listingStatus[l.status] = (listingStatus[l.status] ?? 0) + 1;
    return {
      facilities: this.facilities.length,
      reports: this.lastReportId,
      certificates_minted: [...this.tokens.values()].filter((t) => t.parent === null).length,
      tokens_total: this.tokens.size,
      live_certificates: live.length,
      live_wh: live.reduce((s, t) => s + t.wh, 0n).toString(),
      issued_wh: this.serial.toString(),
      tokens_by_status: byStatus,
      listings: this.listings.size,
      listings_by_status: listingStatus,
      retired_wh_by_beneficiary_year: retired,
      retirements: this.retirements.length,
      sales,
      revoked_tokens: this.revoked,
    };
  }
}

/**
 * Check the model against the contracts themselves (read-only calls), so the manifest's numbers
 * are not just the script agreeing with itself.
 */
function crossCheck(chain, p, tokenIds) {
  const owners = {};
  for (const id of tokenIds) {
    const r = chain.simnet.callReadOnlyFn("rec-nft", "get-owner", [Cl.uint(id)], chain.deployer);
    // (ok (some principal)) from SIP-009 get-owner
    const opt = r.result.type === "ok" ? r.result.value : null;
    const owner = opt && opt.type === "some" ? opt.value.value : null;
    // A split parent is burned, so SIP-009 reports no owner.
    const want = p.tokens.get(id).status === "split" ? null : p.tokens.get(id).owner;
    if (owner !== want) throw new RecorderError(`token ${id}: chain owner ${owner}, model ${want}`);
    owners[id] = owner;
  }
  const lastSerial = chain.simnet.getDataVar("rec-nft", "last-serial");
  if (cvToValue(lastSerial) !== p.serial) {
    throw new RecorderError(`last-serial on chain ${cvToValue(lastSerial)} != model ${p.serial}`);
  }
  return owners;
}

/** Register, approve, report, attest and mint: the issuance half of the demo. */
async function issue(chain, p, rnd, { months, verifiers }) {
  await chain.mine(verifiers.map((v, i) => ({
    sender: "deployer", contract: "verification", fn: "add-verifier", expect: "ok",
    args: [Cl.principal(p.addr(v)), Cl.stringUtf8(["Nordic Verification AS", "TÜV Energieprüfung GmbH", "Green-e Assurance LLC"][i] ?? `Verifier ${i + 1}`)],
  })));
  await chain.mine(["wallet_7", "wallet_8", "wallet_1"].map((w) => ({
    sender: "deployer", contract: "sbtc-token", fn: "mint", expect: "ok", args: [Cl.uint(50_000_000_000n), Cl.principal(p.addr(w))],
  })));
  await chain.mine(FACILITIES.map((f) => p.registerFacility(f)));
  await chain.mine(p.facilities.map((f, i) => ({
    sender: verifiers[i % verifiers.length], contract: "verification", fn: "approve-facility", args: [Cl.uint(f.id)], expect: "ok",
  })));
  // One report per facility and month; a few are rejected or withdrawn (they never mint).
  for (const [y, m] of months) {
    const start = utc(y, m, 1);
    const end = m === 12 ? utc(y + 1, 1, 1) : utc(y, m + 1, 1);
    const subs = [];
    for (const f of p.facilities.filter((x) => !x.hourly)) {
      const maxWh = Math.floor((f.capacity * (end - start)) / 3600);
      const wh = Math.floor(maxWh * CF[f.es] * (0.8 + rnd.next() * 0.4));
      subs.push(p.submitReport(f, start, end, Math.min(wh, maxWh)));
    }
    await chain.mine(subs);
    const decisions = [];
    for (const s of subs) {
      const v = verifiers[s.report % verifiers.length];
      if (s.report % 29 === 7) {
        p.reports.get(s.report).status = "rejected";
        decisions.push({ sender: v, contract: "verification", fn: "reject-report", expect: "ok", args: [Cl.uint(s.report), Cl.stringUtf8("meter data does not reconcile with grid operator statement")] });
      } else if (s.report % 31 === 11) {
        p.reports.get(s.report).status = "withdrawn";
        decisions.push({ sender: p.reports.get(s.report).facility.owner, contract: "verification", fn: "withdraw-report", expect: "ok", args: [Cl.uint(s.report)] });
      } else {
        decisions.push(p.attest(s.report, v));
      }
    }
    await chain.mine(decisions);
    const mints = [];
    for (const s of subs) {
      if (p.reports.get(s.report).status !== "attested") continue;
      // Facility owners usually mint; verifiers may mint on their behalf.
      const caller = s.report % 5 === 0 ? verifiers[s.report % verifiers.length] : p.reports.get(s.report).facility.owner;
      mints.push(p.mint(s.report, caller));
    }
    const res = await chain.mine(mints);
    res.forEach((r, i) => {
      const got = cvToValue(r.result).value;
      if (BigInt(got) !== BigInt(mints[i].token)) throw new RecorderError(`mint returned ${got}, model ${mints[i].token}`);
    });
  }
}

/** Unix seconds of the next UTC midnight after `t`, plus `hours`. */
const nextDay = (t, hours = 0) => (Math.floor(t / DAY) + 1) * DAY + hours * 3600;

/**
 * The demo chain: two years of monthly issuance over the facilities, then three trading days
 * (quiet nights of empty tenures between them, so daily candles differ) with fixed-price and
 * auction sales in STX and sBTC, splits, bilateral transfers, retirements over two reporting
 * years for several beneficiaries and boundaries, one day of hourly certificates in one bidding
 * zone retired for 24/7 matching, revocations (of a report with its certificate, of a listed
 * certificate, and of a certificate already retired), failed calls, and two forks (1 and 3
 * blocks) whose orphaned branches carry their own purchases, split and retirement.
 */
export async function demoScenario(chain, { log = () => {} } = {}) {
  const p = new Project(chain);
  const rnd = prng(20260105);
  const verifiers = ["wallet_1", "wallet_2", "wallet_3"];
  const producers = ["wallet_4", "wallet_5", "wallet_6"];
  const buyers = ["wallet_7", "wallet_8"];
  const months = [];
  for (let m = 1; m <= 12; m++) months.push([2024, m]);
  for (let m = 1; m <= 12; m++) months.push([2025, m]);
  await issue(chain, p, rnd, { months, verifiers });
  log(`issued ${p.tokens.size} certificates over ${p.facilities.length} facilities`);
  const h = () => p.height();
  // A call mined in the next block executes at this height.
  const next = () => h() + 1;
  const monthly = (owner) => p.held(owner).filter((id) => !p.tokens.get(id).facility.hourly);
  const otherVerifier = (reportId) => verifiers.find((v) => v !== verifiers[reportId % verifiers.length]);

  // A verifier other than the attesting one finds a misreported month: the report and its
  // certificate are revoked.
  const revokedToken = monthly("wallet_5")[3];
  const revokedReport = p.tokens.get(revokedToken).report;
  await chain.mine([
    p.revokeReport(revokedReport, otherVerifier(revokedReport), "meter recalibration found double-counted generation"),
    p.revokeToken(revokedToken, otherVerifier(revokedReport), "issued from a report revoked after audit"),
  ]);
  // The holder then tries to move the revoked certificate: the chain refuses it.
  await chain.mine([{ sender: "wallet_5", contract: "rec-nft", fn: "transfer", expect: "err", args: [Cl.uint(revokedToken), Cl.principal(p.addr("wallet_5")), Cl.principal(p.addr("wallet_7"))], postConditions: [p.nftOut(p.addr("wallet_5"), revokedToken)] }]);

  // Producers split some batches so buyers can take part of an issuance.
  for (const prod of producers) {
    const ids = monthly(prod).slice(0, 8);
    await chain.mine(ids.map((id, i) => p.split(id, 2 + (i % 3))));
  }
  // A few direct owner-to-owner transfers (bilateral deals settled off-market).
  await chain.mine([p.transfer(monthly("wallet_4")[0], "wallet_7"), p.transfer(monthly("wallet_6")[0], "wallet_8")]);

  // Trading day 1. Fixed-price listings in STX and sBTC; most sell, one expires, one is
  // cancelled, one re-priced. Long-lived listings outlast the quiet nights.
  const stillOpen = () => [...p.listings.values()].filter((l) => l.status === "active" && l.kind === "fixed-price" && next() < l.end).map((l) => l.id);
  const listings = [];
  for (const prod of producers) {
    const ids = monthly(prod).slice(0, 12);
    const calls = ids.map((id, i) => {
      const t = p.tokens.get(id);
      const mwh = t.wh / 1_000_000n;
      const stx = i % 3 !== 2;
      const price = stx ? (mwh * (2_000_000n + BigInt(rnd.int(0, 3_000_000)))) || 1_000_000n : (mwh * BigInt(2_000 + rnd.int(0, 3_000))) || 10_000n;
      return p.listFixed(id, stx ? "STX" : "sBTC", price, h() + 2000);
    });
    listings.push(...calls.map((c) => c.listing));
    await chain.mine(calls);
  }
  const expiring = monthly("wallet_6").slice(-1)[0];
  const expiringListing = (await chain.mine([p.listFixed(expiring, "STX", 9_000_000, h() + 3)]), p.lastListingId);
  const cancelled = listings[1];
  await chain.mine([p.cancel(cancelled)]);
  await chain.mine([p.updatePrice(listings[2], p.listings.get(listings[2]).price / 2n)]);

  // Buyers work through the order book, a few purchases per block, over two days.
  const open = listings.filter((id) => p.listings.get(id).status === "active");
  const toBuy = open.filter((_, i) => i % 4 !== 3);
  const half = Math.floor(toBuy.length / 2 / 4) * 4;
  for (let i = 0; i < half; i += 4) {
    await chain.mine(toBuy.slice(i, i + 4).map((id, j) => p.buy(id, buyers[(i + j) % 2])));
  }
  // A buy after expiry fails (abort_by_response), then anyone expires the listing.
  while (next() <= p.listings.get(expiringListing).end) await chain.mine([]);
  await chain.mine([{ sender: "wallet_7", contract: "marketplace", fn: "buy", expect: "err", args: [Cl.uint(expiringListing), Cl.none()], postConditions: [p.pay(p.addr("wallet_7"), "STX", 9_000_000n), p.nftOut(p.market, expiring)] }]);
  await chain.mine([p.expire(expiringListing, "wallet_8")]);

  // Trading day 2.
  await chain.idleUntil(nextDay(chain.blockTime(), 0.25));
  for (let i = half; i < toBuy.length; i += 4) {
    await chain.mine(toBuy.slice(i, i + 4).map((id, j) => p.buy(id, buyers[(i + j) % 2])));
  }
  // A listed certificate gets revoked: buying fails, the seller takes it back.
  const revokedListing = open.find((id, i) => i % 4 === 3 && p.listings.get(id).status === "active");
  const rl = p.listings.get(revokedListing);
  await chain.mine([p.revokeToken(rl.token, "wallet_3", "facility meter seal found broken during inspection")]);
  await chain.mine([{ sender: "wallet_8", contract: "marketplace", fn: "buy", expect: "err", args: [Cl.uint(revokedListing), p.ftArg(rl.currency)], postConditions: [p.pay(p.addr("wallet_8"), rl.currency, rl.price), p.nftOut(p.market, rl.token)] }]);
  await chain.mine([p.cancel(revokedListing)]);

  // English auctions: STX and sBTC, outbid refunds, one below reserve.
  const auctionTokens = [monthly("wallet_4")[0], monthly("wallet_5")[0], monthly("wallet_6")[0]];
  const auctionCalls = [
    p.createAuction(auctionTokens[0], "STX", 5_000_000, 8_000_000, 500_000, h() + 10),
    p.createAuction(auctionTokens[1], "sBTC", 20_000, 30_000, 1_000, h() + 10),
    p.createAuction(auctionTokens[2], "STX", 4_000_000, 50_000_000, 500_000, h() + 10),
  ];
  await chain.mine(auctionCalls);
  const [a1, a2, a3] = auctionCalls.map((c) => c.listing);
  await chain.mine([p.bid(a1, "wallet_7", 5_000_000), p.bid(a2, "wallet_8", 20_000), p.bid(a3, "wallet_7", 4_000_000)]);
  // Too low a raise is refused.
  await chain.mine([{ sender: "wallet_8", contract: "marketplace", fn: "place-bid", expect: "err", args: [Cl.uint(a1), Cl.uint(5_100_000), Cl.none()], postConditions: [p.pay(p.addr("wallet_8"), "STX", 5_100_000n)] }]);
  await chain.mine([p.bid(a1, "wallet_8", 6_000_000), p.bid(a2, "wallet_7", 25_000)]);
  await chain.mine([p.bid(a1, "wallet_7", 9_000_000), p.bid(a2, "wallet_8", 31_000)]);

  // Fork 1: a 1-block reorg. On the orphaned branch wallet_8 buys a listing; on the canonical
  // branch wallet_7 buys it instead, and the chain moves on.
  const forks = [];
  {
    const forkHeight = next();
    const target = stillOpen()[0];
    const f = await chain.fork("orphan-1");
    const l = p.listings.get(target);
    await f.mine([p.buyCall(l, "wallet_8")]);
    const orphaned = f.headers.slice(-1).map((x) => x.index_block_hash);
    await chain.mine([p.buy(target, "wallet_7")]);
    await chain.mine([]);
    forks.push({ height: forkHeight, depth: 1, orphaned, canonical: chain.headers.slice(-2).map((x) => x.index_block_hash), orphaned_txids: orphaned.flatMap((x) => f.txidsByBlock.get(x)) });
  }
  while (next() <= p.listings.get(a1).end) await chain.mine([]);
  await chain.mine([p.settle(a1, "wallet_4"), p.settle(a2, "wallet_1"), p.settle(a3, "wallet_6")]);

  // Retirements: buyers retire for themselves and on behalf of named beneficiaries, across two
  // reporting years; certificates from every boundary they hold go to each beneficiary.
  const retireBatch = [];
  for (const [i, b] of buyers.entries()) {
    for (const [k, id] of monthly(b).entries()) {
      if (k % 3 === 2) continue; // keep some certificates in the portfolio
      const beneficiary = BENEFICIARIES[(i + k) % BENEFICIARIES.length];
      const year = p.tokens.get(id).vintage === 2025 || k % 2 ? 2026 : 2025;
      retireBatch.push(p.retire(id, beneficiary, year));
    }
  }
  for (let i = 0; i < retireBatch.length; i += 6) await chain.mine(retireBatch.slice(i, i + 6));
  // Partial retirement of a certificate bought on the market: split, then retire one child.
  const bought = p.sales.map((s) => s.token).find((id) => p.tokens.get(id).owner === p.addr("wallet_7") && p.tokens.get(id).status === "active");
  const s = p.split(bought, 2);
  await chain.mine([s]);
  await chain.mine([p.retire(s.children[0], BENEFICIARIES[0], 2026)]);
  // Retiring someone else's certificate fails.
  await chain.mine([{ sender: "wallet_8", contract: "rec-nft", fn: "retire", expect: "err", args: [Cl.uint(monthly("wallet_4")[0]), ...p.claimArgs(BENEFICIARIES[1], 2026)] }]);

  // Trading day 3.
  await chain.idleUntil(nextDay(chain.blockTime(), 0.25));
  // Buy-and-retire in one transaction, in both currencies.
  const bar = stillOpen().slice(0, 2);
  await chain.mine(bar.map((id, i) => p.buyAndRetire(id, buyers[i % 2], BENEFICIARIES[2 + (i % 2)], 2025 + i)));

  // 24/7: one day of hourly certificates from one facility of the DE-LU bidding zone. Half go
  // to a buyer bilaterally, half are sold on the market; the buyer retires most hours for its
  // beneficiary, one hour only in part (a split), and keeps a few (unmatched hours).
  const hourly = p.facilities.find((f) => f.hourly);
  const day = utc(2025, 11, 12);
  const subs = [];
  for (let hr = 0; hr < 24; hr++) {
    const maxWh = Math.floor(hourly.capacity);
    subs.push(p.submitReport(hourly, day + hr * 3600, day + (hr + 1) * 3600, Math.floor(maxWh * (0.2 + 0.6 * rnd.next()))));
  }
  await chain.mine(subs);
  await chain.mine(subs.map((x) => p.attest(x.report, verifiers[x.report % verifiers.length])));
  const hourMints = subs.map((x) => p.mint(x.report, hourly.owner));
  await chain.mine(hourMints);
  const hourTokens = hourMints.map((m) => m.token);
  await chain.mine(hourTokens.slice(0, 12).map((id) => p.transfer(id, "wallet_7")));
  const hourListings = hourTokens.slice(12).map((id, i) => p.listFixed(id, i % 2 ? "sBTC" : "STX", i % 2 ? 600 + 25 * i : 900_000 + 40_000 * i, h() + 2000));
  await chain.mine(hourListings);
  await chain.mine(hourListings.slice(0, 10).map((c) => p.buy(c.listing, "wallet_7")));
  const partHour = hourTokens[5];
  const hs = p.split(partHour, 2);
  await chain.mine([hs]);
  const claimDay = [day, day + DAY];
  const retireHours = [...hourTokens.slice(0, 20).filter((id) => id !== partHour && id !== hourTokens[17]), hs.children[0]];
  await chain.mine(retireHours.map((id) => p.retire(id, BENEFICIARIES[0], 2025, claimDay)));

  // A retired certificate is found to come from a fraudulent report: the report and the
  // certificate are revoked; the retirement stays, flagged for review.
  const retiredThenRevoked = p.retirements.map((r) => r.token).find((id) => p.tokens.get(id).parent === null && !p.tokens.get(id).facility.hourly && p.reports.get(p.tokens.get(id).report).status === "minted");
  const rtr = p.tokens.get(retiredThenRevoked).report;
  await chain.mine([
    p.revokeReport(rtr, otherVerifier(rtr), "generation double-reported to a second registry"),
    p.revokeToken(retiredThenRevoked, otherVerifier(rtr), "issued from a double-reported period"),
  ]);

  // Fork 2: a 3-block reorg whose orphaned branch carries its own trades, a split and a
  // retirement that never happened on the canonical chain.
  {
    const forkHeight = next();
    const f = await chain.fork("orphan-2");
    const ls = stillOpen().slice(0, 2).map((id) => p.listings.get(id));
    const w7tok = monthly("wallet_7");
    await f.mine(ls.map((l, i) => p.buyCall(l, buyers[i % 2])));
    const t7 = p.tokens.get(w7tok[0]);
    await f.mine([{ sender: "wallet_7", contract: "rec-nft", fn: "split", expect: "ok", args: [Cl.uint(t7.id), Cl.list([Cl.uint(t7.wh - t7.wh / 2n), Cl.uint(t7.wh / 2n)])], postConditions: [p.nftOut(t7.owner, t7.id)] }]);
    const t7b = p.tokens.get(w7tok[1]);
    await f.mine([{ sender: "wallet_7", contract: "rec-nft", fn: "retire", expect: "ok", args: [Cl.uint(t7b.id), ...p.claimArgs(BENEFICIARIES[0], 2026)] }]);
    const orphaned = f.headers.slice(-3).map((x) => x.index_block_hash);
    // Canonical: different buyers take the listings, and the chain grows one block longer.
    await chain.mine(ls.map((l, i) => p.buy(l.id, buyers[(i + 1) % 2])));
    await chain.mine([p.transfer(w7tok[0], "wallet_8")]);
    await chain.mine([p.retire(w7tok[1], BENEFICIARIES[2], 2025)]);
    await chain.mine([]);
    forks.push({ height: forkHeight, depth: 3, orphaned, canonical: chain.headers.slice(-4).map((x) => x.index_block_hash), orphaned_txids: orphaned.flatMap((x) => f.txidsByBlock.get(x)) });
  }
  // New offers stay open at the tip (the order book's depth), then closing blocks bury the forks.
  const offers = [];
  for (const [i, prod] of producers.entries()) {
    for (const [k, id] of monthly(prod).slice(0, 2).entries()) {
      const mwh = p.tokens.get(id).wh / 1_000_000n || 1n;
      offers.push(k ? p.listFixed(id, "sBTC", mwh * BigInt(3_000 + 500 * i), h() + 2000) : p.listFixed(id, "STX", mwh * BigInt(3_000_000 + 250_000 * i), h() + 2000));
    }
  }
  await chain.mine(offers);
  await chain.mine([]);
  await chain.mine([]);

  const sample = [1, 2, revokedToken, retiredThenRevoked, auctionTokens[0], auctionTokens[1], hourTokens[0], p.lastTokenId].filter((v, i, a) => a.indexOf(v) === i);
  const owners = crossCheck(chain, p, sample);
  return {
    project: p,
    forks,
    ipfs: p.ipfs,
    summary: { ...p.summary(), final_owners: owners },
    roles: {
      deployer: ["contract-owner", "treasury"],
      wallet_1: ["verifier"], wallet_2: ["verifier"], wallet_3: ["verifier"],
      wallet_4: ["producer"], wallet_5: ["producer"], wallet_6: ["producer"],
      wallet_7: ["buyer", "beneficiary"], wallet_8: ["buyer", "beneficiary"],
    },
    activity: makeActivity(chain, p),
    snapshot: () => p.snapshot(),
    restore: (snap) => p.restore(snap),
  };
}

/**
 * Live-market steps for `node --activity`, in a six-step rotation (one block each): a producer
 * lists at a fixed price, a producer opens a short STX auction, a buyer bids, a buyer buys the
 * listing, the other buyer outbids, and then anyone settles the ended auction (or, if none has
 * ended, another listing goes up). A step with nothing to do is skipped.
 */
function makeActivity(chain, p) {
  const producers = ["wallet_4", "wallet_5", "wallet_6"];
  const buyers = ["wallet_7", "wallet_8"];
  const open = (kind) => [...p.listings.values()].filter((l) => l.status === "active" && l.kind === kind);
  const list = (step, h) => {
    const id = p.held(producers[step % 3])[0];
    return id ? p.listFixed(id, "STX", 1_000_000n + BigInt(step) * 10_000n, h + 500) : null;
  };
  return (step) => {
    const h = p.height();
    switch (step % 6) {
      case 0:
        return list(step, h);
      case 1: {
        const id = p.held(producers[(step + 1) % 3])[0];
        // Five blocks leave room for both bids even when a tenure block falls in between.
        return id ? p.createAuction(id, "STX", 2_000_000, 2_500_000, 500_000, h + 5) : null;
      }
      case 3: {
        const l = open("fixed-price").find((x) => h < x.end);
        return l ? p.buy(l.id, buyers[step % 2]) : null;
      }
      case 2:
      case 4: {
        const l = open("auction").find((x) => h < x.end);
        if (!l) return null;
        const bidder = l.bidder === p.addr("wallet_7") ? "wallet_8" : "wallet_7";
        return p.bid(l.id, bidder, l.bidder ? l.bid + l.increment : l.price);
      }
      default: {
        const ended = open("auction").find((l) => h >= l.end);
        return ended ? p.settle(ended.id, buyers[step % 2]) : list(step, h);
      }
    }
  };
}

/**
 * `scale`: N certificates for benchmarks. Issuance in large blocks, then a market layer
 * proportional to N (a tenth listed and mostly bought, a tenth retired).
 */
export async function scaleScenario(chain, { certificates = 10000, log = () => {}, writeIpfs = false } = {}) {
  const p = new Project(chain, { writeIpfs });
  const verifiers = ["wallet_1", "wallet_2", "wallet_3"];
  await chain.mine(verifiers.map((v) => ({ sender: "deployer", contract: "verification", fn: "add-verifier", expect: "ok", args: [Cl.principal(p.addr(v)), Cl.stringUtf8(`Verifier ${v}`)] })));
  await chain.mine(["wallet_7", "wallet_8"].map((w) => ({ sender: "deployer", contract: "sbtc-token", fn: "mint", expect: "ok", args: [Cl.uint(1_000_000_000_000n), Cl.principal(p.addr(w))] })));
  await chain.mine(FACILITIES.map((f) => p.registerFacility(f)));
  await chain.mine(p.facilities.map((f, i) => ({ sender: verifiers[i % 3], contract: "verification", fn: "approve-facility", args: [Cl.uint(f.id)], expect: "ok" })));
  const perBlock = 60;
  const base = utc(2024, 1, 1);
  let day = 0;
  let made = 0;
  const started = Date.now();
  while (made < certificates) {
    const n = Math.min(perBlock, certificates - made);
    const subs = [];
    for (let i = 0; i < n; i++) {
      const f = p.facilities[(made + i) % p.facilities.length];
      const d = Math.floor((made + i) / p.facilities.length);
      day = Math.max(day, d);
      const start = base + d * DAY;
      subs.push(p.submitReport(f, start, start + DAY, Math.floor(f.capacity * 24 * CF[f.es])));
    }
    await chain.mine(subs);
    await chain.mine(subs.map((s) => p.attest(s.report, verifiers[s.report % 3])));
    await chain.mine(subs.map((s) => p.mint(s.report, p.reports.get(s.report).facility.owner)));
    made += n;
    if (made % 1200 === 0 || made === certificates) log(`scale: ${made}/${certificates} certificates (${Math.round((made / (Date.now() - started)) * 1000)}/s)`);
  }
  // Market layer.
  const producers = ["wallet_4", "wallet_5", "wallet_6"];
  const toList = [];
  for (const prod of producers) toList.push(...p.held(prod).slice(0, Math.floor(certificates / 30)));
  for (let i = 0; i < toList.length; i += perBlock) {
    await chain.mine(toList.slice(i, i + perBlock).map((id, j) => p.listFixed(id, (i + j) % 4 === 3 ? "sBTC" : "STX", (i + j) % 4 === 3 ? 50_000 : 10_000_000, p.height() + 100000)));
  }
  const listed = [...p.listings.keys()];
  const buys = listed.filter((_, i) => i % 5 !== 4);
  for (let i = 0; i < buys.length; i += perBlock) {
    await chain.mine(buys.slice(i, i + perBlock).map((id, j) => p.buy(id, (i + j) % 2 ? "wallet_7" : "wallet_8")));
  }
  const rets = [];
  for (const b of ["wallet_7", "wallet_8"]) rets.push(...p.held(b).map((id, k) => p.retire(id, BENEFICIARIES[k % 4], 2024 + (k % 2))));
  for (let i = 0; i < rets.length; i += perBlock) await chain.mine(rets.slice(i, i + perBlock));
  const splits = p.held("wallet_4").slice(0, Math.floor(certificates / 50));
  for (let i = 0; i < splits.length; i += 20) await chain.mine(splits.slice(i, i + 20).map((id) => p.split(id, 4)));
  return { project: p, forks: [], ipfs: p.ipfs, summary: p.summary(), roles: {} };
}

export const SCENARIOS = {
  demo: demoScenario,
  fixture: fixtureScenario,
};
