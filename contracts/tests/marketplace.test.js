import { Cl } from "@stacks/transactions";
import { describe, expect, it } from "vitest";
import {
  MARKET, REC_ASSET, SBTC, alice, bob, call, carol, claimArgs, deployer, expectErr, js, mintCertificate,
  nativeEvents, ownerOf, printed, prints, producer, ro, sbtcBalance, statusOf, stxBalance, treasury2, verifier,
} from "./helpers.js";

const STX = Cl.none();
const SBTC_FT = Cl.some(Cl.contractPrincipal(SBTC.split(".")[0], "sbtc-token"));
const SBTC_CUR = Cl.some(Cl.principal(SBTC));
const listing = (id) => js(ro("marketplace", "get-listing", [Cl.uint(id)]));
const end = (blocks = 100) => Cl.uint(simnet.stacksBlockHeight + blocks);

function listFixed(tokenId, price, { currency = STX, seller = producer, blocks = 100 } = {}) {
  return call("marketplace", "list-fixed", [Cl.uint(tokenId), currency, Cl.uint(price), end(blocks)], seller);
}
function auction(tokenId, start, reserve, inc, { currency = STX, seller = producer, blocks = 20 } = {}) {
  return call("marketplace", "create-auction",
    [Cl.uint(tokenId), currency, Cl.uint(start), Cl.uint(reserve), Cl.uint(inc), end(blocks)], seller);
}
const bid = (id, amount, who, ft = STX) => call("marketplace", "place-bid", [Cl.uint(id), Cl.uint(amount), ft], who);
const mintSbtc = (who, amount) =>
  expect(call("sbtc-token", "mint", [Cl.uint(amount), Cl.principal(who)], deployer).result).toBeOk(Cl.bool(true));

describe("fixed-price listings", () => {
  it("listing escrows the token and prints the full listing", () => {
    const { tokenId } = mintCertificate();
    const endHeight = simnet.stacksBlockHeight + 100;
    const res = listFixed(tokenId, 5_000_000);
    expect(res.result).toBeOk(Cl.uint(1));
    const all = prints(res.events);
    expect(all.map((p) => p.event)).toEqual(["certificate-transferred", "listing-created"]);
    expect(all[0]).toMatchObject({ kind: "escrow", sender: producer, recipient: MARKET, status: "listed" });
    expect(all[1]).toMatchObject({
      _contract: MARKET, "listing-id": 1n, kind: "fixed-price", "token-id": 1n, seller: producer, currency: null,
      price: 5000000n, "reserve-price": 0n, "min-increment": 0n, "end-height": BigInt(endHeight), status: "active",
      "highest-bidder": null, "highest-bid": 0n, "bid-count": 0n, "start-height": BigInt(simnet.stacksBlockHeight),
    });
    expect(nativeEvents(res.events, "nft_transfer_event")[0]).toMatchObject({ asset_identifier: REC_ASSET, sender: producer, recipient: MARKET });
    expect(ownerOf(tokenId)).toBe(MARKET);
    expect(statusOf(tokenId)).toBe("listed");
    // escrowed: the seller can no longer move, split or retire it
    expectErr(call("rec-nft", "transfer", [Cl.uint(tokenId), Cl.principal(producer), Cl.principal(alice)], producer), 209);
    expectErr(call("rec-nft", "split", [Cl.uint(tokenId), Cl.list([Cl.uint(1), Cl.uint(999999)])], producer), 209);
    expectErr(call("rec-nft", "retire", [Cl.uint(tokenId), ...claimArgs()], producer), 209);
    // nor can anyone pull it out of the marketplace directly
    expectErr(call("rec-nft", "transfer", [Cl.uint(tokenId), Cl.principal(MARKET), Cl.principal(alice)], alice), 209);
    expectErr(listFixed(tokenId, 1), 209);
  });

  it("buy pays fee to treasury and proceeds to seller, then releases the token", () => {
    const { tokenId } = mintCertificate();
    listFixed(tokenId, 1_000_000);
    const sellerBefore = stxBalance(producer);
    const buyerBefore = stxBalance(alice);
    const treasuryBefore = stxBalance(deployer);
    const res = call("marketplace", "buy", [Cl.uint(1), STX], alice);
    expect(res.result).toBeOk(Cl.uint(tokenId));
    // 250 bps of 1,000,000 = 25,000
    expect(stxBalance(deployer) - treasuryBefore).toBe(25_000n);
    expect(stxBalance(producer) - sellerBefore).toBe(975_000n);
    expect(buyerBefore - stxBalance(alice)).toBe(1_000_000n);
    expect(ownerOf(tokenId)).toBe(alice);
    expect(statusOf(tokenId)).toBe("active");
    const sale = printed(res.events, "sale");
    expect(sale).toMatchObject({
      "listing-id": 1n, "token-id": BigInt(tokenId), kind: "fixed-price", seller: producer, buyer: alice,
      currency: null, price: 1000000n, fee: 25000n, "seller-proceeds": 975000n, treasury: deployer,
      "fee-bps": 250n, retired: false, status: "sold",
    });
    expect(prints(res.events).map((p) => p.event)).toEqual(["certificate-transferred", "sale"]);
    expect(printed(res.events, "certificate-transferred")).toMatchObject({ kind: "release", recipient: alice, status: "active" });
    expect(nativeEvents(res.events, "stx_transfer_event").map((e) => [e.recipient, e.amount])).toEqual([
      [deployer, "25000"], [producer, "975000"],
    ]);
    expect(listing(1).status).toBe("sold");
    expectErr(call("marketplace", "buy", [Cl.uint(1), STX], bob), 307);
  });

  it("buys in sBTC with a non-default fee and treasury", () => {
    const { tokenId } = mintCertificate();
    call("marketplace", "set-fee-bps", [Cl.uint(333)], deployer);
    call("marketplace", "set-treasury", [Cl.principal(treasury2)], deployer);
    mintSbtc(alice, 10_000_000);
    listFixed(tokenId, 1_234_567, { currency: SBTC_CUR });
    expectErr(call("marketplace", "buy", [Cl.uint(1), STX], alice), 312);
    const res = call("marketplace", "buy", [Cl.uint(1), SBTC_FT], alice);
    expect(res.result).toBeOk(Cl.uint(tokenId));
    const fee = (1_234_567n * 333n) / 10_000n;
    expect(sbtcBalance(treasury2)).toBe(fee);
    expect(sbtcBalance(producer)).toBe(1_234_567n - fee);
    expect(sbtcBalance(alice)).toBe(10_000_000n - 1_234_567n);
    expect(printed(res.events, "sale")).toMatchObject({ currency: SBTC, fee, treasury: treasury2, "fee-bps": 333n });
    expect(nativeEvents(res.events, "ft_transfer_event")).toHaveLength(2);
  });

  it("a zero fee skips the treasury transfer", () => {
    const { tokenId } = mintCertificate();
    call("marketplace", "set-fee-bps", [Cl.uint(0)], deployer);
    listFixed(tokenId, 100);
    const res = call("marketplace", "buy", [Cl.uint(1), STX], alice);
    expect(printed(res.events, "sale")).toMatchObject({ fee: 0n, "seller-proceeds": 100n });
    expect(nativeEvents(res.events, "stx_transfer_event")).toHaveLength(1);
  });

  it("buy-and-retire buys and retires for the buyer in one call", () => {
    const { tokenId } = mintCertificate({ wh: 4200 });
    listFixed(tokenId, 1000);
    const res = call("marketplace", "buy-and-retire", [Cl.uint(1), STX, ...claimArgs({ beneficiaryName: "Bob GmbH", country: "DE", subdivision: "DE-BY", boundary: "EU-AIB", purpose: "cdp" })], bob);
    expect(res.result).toBeOk(Cl.uint(tokenId));
    expect(prints(res.events).map((p) => p.event)).toEqual(["certificate-transferred", "sale", "certificate-retired"]);
    expect(printed(res.events, "sale")).toMatchObject({ retired: true, buyer: bob });
    expect(printed(res.events, "certificate-retired")).toMatchObject({ owner: bob, wh: 4200n, "beneficiary-name": "Bob GmbH", "consumption-market-boundary": "EU-AIB" });
    expect(statusOf(tokenId)).toBe("retired");
    expect(ownerOf(tokenId)).toBe(bob);
  });

  it("a bad claim in buy-and-retire undoes the purchase", () => {
    const { tokenId } = mintCertificate();
    listFixed(tokenId, 1000);
    const before = stxBalance(bob);
    expectErr(call("marketplace", "buy-and-retire", [Cl.uint(1), STX, ...claimArgs({ year: 1900 })], bob), 219);
    expect(stxBalance(bob)).toBe(before);
    expect(ownerOf(tokenId)).toBe(MARKET);
    expect(listing(1).status).toBe("active");
  });

  it("update-price, cancel and expiry", () => {
    const { tokenId } = mintCertificate();
    listFixed(tokenId, 1000, { blocks: 10 });
    expectErr(call("marketplace", "update-price", [Cl.uint(1), Cl.uint(900)], alice), 308);
    expectErr(call("marketplace", "update-price", [Cl.uint(1), Cl.uint(0)], producer), 304);
    expectErr(call("marketplace", "update-price", [Cl.uint(9), Cl.uint(5)], producer), 306);
    const up = call("marketplace", "update-price", [Cl.uint(1), Cl.uint(900)], producer);
    expect(printed(up.events, "listing-price-updated")).toMatchObject({ "old-price": 1000n, "new-price": 900n, seller: producer, "token-id": BigInt(tokenId), currency: null });
    expect(listing(1).price).toBe(900n);
    expectErr(call("marketplace", "expire-listing", [Cl.uint(1)], alice), 310);
    simnet.mineEmptyBlocks(10);
    expectErr(call("marketplace", "buy", [Cl.uint(1), STX], alice), 309);
    expectErr(call("marketplace", "update-price", [Cl.uint(1), Cl.uint(800)], producer), 309);
    const ex = call("marketplace", "expire-listing", [Cl.uint(1)], alice);
    expect(ex.result).toBeOk(Cl.bool(true));
    expect(printed(ex.events, "listing-expired")).toMatchObject({ seller: producer, kind: "fixed-price", status: "expired", "refunded-bidder": null, "refunded-amount": 0n });
    expect(printed(ex.events, "certificate-transferred")).toMatchObject({ kind: "release", recipient: producer });
    expect(ownerOf(tokenId)).toBe(producer);
    expectErr(call("marketplace", "expire-listing", [Cl.uint(1)], alice), 307);
    expectErr(call("marketplace", "cancel-listing", [Cl.uint(1)], producer), 307);

    listFixed(tokenId, 1000);
    expectErr(call("marketplace", "cancel-listing", [Cl.uint(2)], alice), 308);
    const c = call("marketplace", "cancel-listing", [Cl.uint(2)], producer);
    expect(printed(c.events, "listing-cancelled")).toMatchObject({ "listing-id": 2n, status: "cancelled", kind: "fixed-price" });
    expect(ownerOf(tokenId)).toBe(producer);
    expect(statusOf(tokenId)).toBe("active");
  });

  it("refuses bad listings and bad purchases", () => {
    const { tokenId } = mintCertificate();
    expectErr(listFixed(tokenId, 0), 304);
    expectErr(call("marketplace", "list-fixed", [Cl.uint(tokenId), STX, Cl.uint(5), Cl.uint(simnet.stacksBlockHeight)], producer), 305);
    expectErr(listFixed(tokenId, 5, { currency: Cl.some(Cl.principal(`${deployer}.rec-nft`)) }), 303);
    expectErr(listFixed(tokenId, 5, { seller: alice }), 209);
    expectErr(listFixed(999, 5), 208);
    listFixed(tokenId, 5);
    expectErr(call("marketplace", "buy", [Cl.uint(1), STX], producer), 313);
    expectErr(call("marketplace", "buy", [Cl.uint(1), SBTC_FT], alice), 312);
    expectErr(call("marketplace", "buy", [Cl.uint(7), STX], alice), 306);
    expectErr(call("marketplace", "place-bid", [Cl.uint(1), Cl.uint(10), STX], alice), 311);
    expectErr(call("marketplace", "settle-auction", [Cl.uint(1), STX], alice), 311);
    // a buyer without funds gets a payment error and nothing changes
    call("marketplace", "update-price", [Cl.uint(1), Cl.uint(10n ** 15n)], producer);
    expectErr(call("marketplace", "buy", [Cl.uint(1), STX], alice), 319);
    expect(ownerOf(tokenId)).toBe(MARKET);
  });

  it("a certificate revoked in escrow cannot be bought but returns to the seller on cancel", () => {
    const { tokenId } = mintCertificate();
    listFixed(tokenId, 5);
    const rv = call("rec-nft", "revoke", [Cl.uint(tokenId), Cl.stringUtf8("fraud")], verifier);
    expect(printed(rv.events, "certificate-revoked")).toMatchObject({ owner: MARKET, "previous-status": "listed" });
    expectErr(call("marketplace", "buy", [Cl.uint(1), STX], alice), 318);
    const c = call("marketplace", "cancel-listing", [Cl.uint(1)], producer);
    expect(c.result).toBeOk(Cl.bool(true));
    expect(printed(c.events, "certificate-transferred")).toMatchObject({ kind: "release", status: "revoked" });
    expect(ownerOf(tokenId)).toBe(producer);
    expect(statusOf(tokenId)).toBe("revoked");
    expect(js(ro("rec-nft", "get-escrowed-count"))).toBe(0n);
  });
});

describe("auctions", () => {
  it("escrows bids, refunds the outbid bidder and settles to the winner with the fee", () => {
    const { tokenId } = mintCertificate();
    const created = auction(tokenId, 1000, 1500, 100);
    expect(printed(created.events, "listing-created")).toMatchObject({ kind: "auction", price: 1000n, "reserve-price": 1500n, "min-increment": 100n });
    expectErr(bid(1, 999, alice), 314);
    expectErr(bid(1, 1000, producer), 313);
    const b1 = bid(1, 1000, alice);
    expect(b1.result).toBeOk(Cl.bool(true));
    expect(printed(b1.events, "bid-placed")).toMatchObject({ bidder: alice, amount: 1000n, "bid-count": 1n, "refunded-bidder": null, "refunded-amount": 0n });
    expect(stxBalance(MARKET)).toBe(1000n);
    expectErr(bid(1, 1099, bob), 314);
    const aliceBefore = stxBalance(alice);
    const b2 = bid(1, 1600, bob);
    expect(printed(b2.events, "bid-placed")).toMatchObject({ bidder: bob, amount: 1600n, "bid-count": 2n, "refunded-bidder": alice, "refunded-amount": 1000n });
    expect(stxBalance(alice) - aliceBefore).toBe(1000n);
    expect(stxBalance(MARKET)).toBe(1600n);
    expectErr(call("marketplace", "cancel-listing", [Cl.uint(1)], producer), 315);
    expectErr(call("marketplace", "settle-auction", [Cl.uint(1), STX], carol), 310);
    simnet.mineEmptyBlocks(20);
    expectErr(bid(1, 5000, carol), 309);
    const sellerBefore = stxBalance(producer);
    const treasuryBefore = stxBalance(deployer);
    const s = call("marketplace", "settle-auction", [Cl.uint(1), STX], carol);
    expect(s.result).toBeOk(Cl.bool(true));
    expect(printed(s.events, "sale")).toMatchObject({ kind: "auction", buyer: bob, seller: producer, price: 1600n, fee: 40n, "seller-proceeds": 1560n });
    expect(stxBalance(deployer) - treasuryBefore).toBe(40n);
    expect(stxBalance(producer) - sellerBefore).toBe(1560n);
    expect(stxBalance(MARKET)).toBe(0n);
    expect(ownerOf(tokenId)).toBe(bob);
    expect(listing(1)).toMatchObject({ status: "sold", "highest-bidder": bob, "highest-bid": 1600n });
    expectErr(call("marketplace", "settle-auction", [Cl.uint(1), STX], carol), 307);
  });

  it("reserve not met: the bidder is refunded and the token returns to the seller", () => {
    const { tokenId } = mintCertificate();
    mintSbtc(alice, 50_000);
    auction(tokenId, 1000, 9000, 10, { currency: SBTC_CUR });
    expectErr(bid(1, 2000, alice), 312);
    bid(1, 2000, alice, SBTC_FT);
    expect(sbtcBalance(alice)).toBe(48_000n);
    simnet.mineEmptyBlocks(20);
    expectErr(call("marketplace", "settle-auction", [Cl.uint(1), STX], carol), 312);
    const s = call("marketplace", "settle-auction", [Cl.uint(1), SBTC_FT], carol);
    expect(s.result).toBeOk(Cl.bool(true));
    expect(printed(s.events, "listing-expired")).toMatchObject({ kind: "auction", "refunded-bidder": alice, "refunded-amount": 2000n, status: "expired" });
    expect(sbtcBalance(alice)).toBe(50_000n);
    expect(sbtcBalance(MARKET)).toBe(0n);
    expect(ownerOf(tokenId)).toBe(producer);
  });

  it("no bid: settle returns the token; cancel works before any bid", () => {
    const { tokenId } = mintCertificate();
    auction(tokenId, 10, 10, 1);
    expect(call("marketplace", "cancel-listing", [Cl.uint(1)], producer).result).toBeOk(Cl.bool(true));
    auction(tokenId, 10, 10, 1);
    simnet.mineEmptyBlocks(20);
    const s = call("marketplace", "settle-auction", [Cl.uint(2), STX], alice);
    expect(printed(s.events, "listing-expired")).toMatchObject({ "refunded-bidder": null, "refunded-amount": 0n });
    expect(ownerOf(tokenId)).toBe(producer);
    expectErr(call("marketplace", "expire-listing", [Cl.uint(2)], alice), 311);
    expectErr(call("marketplace", "update-price", [Cl.uint(2), Cl.uint(3)], producer), 311);
  });

  it("revoked during the auction: no more bids and settlement refunds", () => {
    const { tokenId } = mintCertificate();
    auction(tokenId, 10, 10, 1);
    bid(1, 50, alice);
    call("rec-nft", "revoke", [Cl.uint(tokenId), Cl.stringUtf8("fraud")], verifier);
    expectErr(bid(1, 100, bob), 318);
    simnet.mineEmptyBlocks(20);
    const before = stxBalance(alice);
    const s = call("marketplace", "settle-auction", [Cl.uint(1), STX], bob);
    expect(printed(s.events, "listing-expired")).toMatchObject({ "refunded-bidder": alice, "refunded-amount": 50n });
    expect(stxBalance(alice) - before).toBe(50n);
    expect(ownerOf(tokenId)).toBe(producer);
  });

  it("refuses bad auction parameters", () => {
    const { tokenId } = mintCertificate();
    expectErr(auction(tokenId, 100, 99, 1), 304);
    expectErr(auction(tokenId, 100, 100, 0), 317);
    expectErr(auction(tokenId, 0, 0, 1), 304);
    expectErr(bid(5, 100, alice), 306);
  });
});

describe("marketplace admin", () => {
  it("fee, treasury and currency whitelist are owner-only and validated", () => {
    expectErr(call("marketplace", "set-fee-bps", [Cl.uint(100)], alice), 300);
    expectErr(call("marketplace", "set-fee-bps", [Cl.uint(1001)], deployer), 316);
    const f = call("marketplace", "set-fee-bps", [Cl.uint(1000)], deployer);
    expect(printed(f.events, "fee-updated")).toMatchObject({ "old-fee-bps": 250n, "new-fee-bps": 1000n });
    expect(js(ro("marketplace", "get-fee-bps"))).toBe(1000n);
    expect(js(ro("marketplace", "quote-fee", [Cl.uint(12345)]))).toEqual({ fee: 1234n, "seller-proceeds": 11111n });
    expectErr(call("marketplace", "set-treasury", [Cl.principal(alice)], alice), 300);
    expectErr(call("marketplace", "set-treasury", [Cl.principal(MARKET)], deployer), 320);
    const t = call("marketplace", "set-treasury", [Cl.principal(alice)], deployer);
    expect(printed(t.events, "treasury-updated")).toMatchObject({ "old-treasury": deployer, "new-treasury": alice });
    expect(js(ro("marketplace", "get-treasury"))).toBe(alice);
    expectErr(call("marketplace", "set-currency", [Cl.principal(SBTC), Cl.bool(false)], alice), 300);
    const c = call("marketplace", "set-currency", [Cl.principal(SBTC), Cl.bool(false)], deployer);
    expect(printed(c.events, "currency-updated")).toMatchObject({ currency: SBTC, allowed: false });
    expect(js(ro("marketplace", "is-currency-allowed", [SBTC_CUR]))).toBe(false);
    expect(js(ro("marketplace", "is-currency-allowed", [STX]))).toBe(true);
    const { tokenId } = mintCertificate();
    expectErr(listFixed(tokenId, 5, { currency: SBTC_CUR }), 303);
  });

  it("pause blocks trading but never strands tokens or bids", () => {
    const a = mintCertificate().tokenId;
    const r2 = call("verification", "submit-report", [Cl.uint(1), Cl.uint(1704070800), Cl.uint(1704074400), Cl.uint(10), Cl.bufferFromHex("00".repeat(32))], producer);
    call("verification", "attest-report", [r2.result.value], verifier);
    const b = Number(js(call("rec-nft", "mint", [r2.result.value, Cl.stringAscii("ipfs://b")], producer).result));
    listFixed(a, 100, { blocks: 5 });
    auction(b, 10, 10, 1, { blocks: 5 });
    bid(2, 10, alice);
    expectErr(call("marketplace", "set-paused", [Cl.bool(true)], alice), 300);
    const p = call("marketplace", "set-paused", [Cl.bool(true)], deployer);
    expect(printed(p.events, "pause-changed")).toMatchObject({ paused: true, _contract: MARKET });
    expectErr(call("marketplace", "buy", [Cl.uint(1), STX], bob), 302);
    expectErr(call("marketplace", "buy-and-retire", [Cl.uint(1), STX, ...claimArgs()], bob), 302);
    expectErr(bid(2, 20, bob), 302);
    expectErr(call("marketplace", "update-price", [Cl.uint(1), Cl.uint(5)], producer), 302);
    expectErr(call("marketplace", "list-fixed", [Cl.uint(a), STX, Cl.uint(5), end()], producer), 302);
    expectErr(auction(a, 1, 1, 1), 302);
    // with rec-nft paused too, unwinding still works
    call("rec-nft", "set-paused", [Cl.bool(true)], deployer);
    expect(call("marketplace", "cancel-listing", [Cl.uint(1)], producer).result).toBeOk(Cl.bool(true));
    simnet.mineEmptyBlocks(5);
    expect(call("marketplace", "settle-auction", [Cl.uint(2), STX], carol).result).toBeOk(Cl.bool(true));
    expect(ownerOf(a)).toBe(producer);
    expect(ownerOf(b)).toBe(alice);
    expect(stxBalance(MARKET)).toBe(0n);
  });

  it("two-step ownership hand-over", () => {
    call("marketplace", "transfer-ownership", [Cl.principal(bob)], deployer);
    expect(js(ro("marketplace", "get-pending-owner"))).toBe(bob);
    expectErr(call("marketplace", "accept-ownership", [], alice), 301);
    expect(call("marketplace", "accept-ownership", [], bob).result).toBeOk(Cl.bool(true));
    expect(js(ro("marketplace", "get-contract-owner"))).toBe(bob);
    expectErr(call("marketplace", "set-paused", [Cl.bool(true)], deployer), 300);
    expect(call("marketplace", "set-paused", [Cl.bool(true)], bob).result).toBeOk(Cl.bool(true));
    expect(js(ro("marketplace", "is-paused"))).toBe(true);
    expect(js(ro("marketplace", "get-last-listing-id"))).toBe(0n);
  });

  it("devnet sBTC: only the deployer mints; transfers need the owner", () => {
    expectErr(call("sbtc-token", "mint", [Cl.uint(5), Cl.principal(alice)], alice), 400);
    expectErr(call("sbtc-token", "mint", [Cl.uint(0), Cl.principal(alice)], deployer), 402);
    mintSbtc(alice, 5);
    expectErr(call("sbtc-token", "transfer", [Cl.uint(5), Cl.principal(alice), Cl.principal(bob), Cl.none()], bob), 401);
    expect(call("sbtc-token", "transfer", [Cl.uint(5), Cl.principal(alice), Cl.principal(bob), Cl.some(Cl.bufferFromHex("01"))], alice).result).toBeOk(Cl.bool(true));
    expect(sbtcBalance(bob)).toBe(5n);
    expect(js(ro("sbtc-token", "get-decimals"))).toBe(8n);
    expect(js(ro("sbtc-token", "get-symbol"))).toBe("sBTC");
    expect(js(ro("sbtc-token", "get-total-supply"))).toBe(5n);
  });
});
