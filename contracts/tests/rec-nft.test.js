import { Cl } from "@stacks/transactions";
import { describe, expect, it } from "vitest";
import {
  HOUR, JAN_2024, MARKET, carol, REC, REC_ASSET, activeFacility, addVerifier, alice, attestedReport, bob, call,
  claimArgs, deployer, expectErr, js, mintCertificate, nativeEvents, ownerOf, printed, prints, producer,
  ro, statusOf, submitReport, verifier,
} from "./helpers.js";

const cert = (id) => js(ro("rec-nft", "get-certificate", [Cl.uint(id)]));
const statusWh = (s) => js(ro("rec-nft", "get-status-wh", [Cl.stringAscii(s)]));
const transfer = (id, from, to, sender = from) =>
  call("rec-nft", "transfer", [Cl.uint(id), Cl.principal(from), Cl.principal(to)], sender);

describe("mint", () => {
  it("mints an attested report to the facility owner with every attribute in the event", () => {
    const { tokenId, facilityId, reportId, res } = mintCertificate({ wh: 2_500_000 });
    expect(tokenId).toBe(1);
    const ev = printed(res.events, "certificate-minted");
    expect(ev).toMatchObject({
      _contract: REC, "token-id": 1n, owner: producer, "facility-id": BigInt(facilityId),
      "report-id": BigInt(reportId), "period-start": BigInt(JAN_2024), "period-end": BigInt(JAN_2024 + HOUR),
      vintage: 2024n, wh: 2500000n, "serial-start": 0n, "serial-end": 2500000n,
      "token-uri": "ipfs://bafycert/{id}.json", status: "active", "parent-id": null,
      "issued-at": BigInt(simnet.stacksBlockHeight),
    });
    // report-minted comes first, from verification
    const all = prints(res.events);
    expect(all.map((p) => p.event)).toEqual(["report-minted", "certificate-minted"]);
    expect(all[0]).toMatchObject({ status: "minted", "token-id": 1n, "report-id": BigInt(reportId) });
    const mints = nativeEvents(res.events, "nft_mint_event");
    expect(mints).toHaveLength(1);
    expect(mints[0]).toMatchObject({ asset_identifier: REC_ASSET, recipient: producer });
    expect(ownerOf(1)).toBe(producer);
    expect(js(ro("rec-nft", "get-token-uri", [Cl.uint(1)]))).toBe("ipfs://bafycert/{id}.json");
    expect(js(ro("rec-nft", "get-last-token-id"))).toBe(1n);
    expect(js(ro("rec-nft", "get-wh", [Cl.uint(1)]))).toBe(2500000n);
    expect(js(ro("rec-nft", "get-vintage", [Cl.uint(1)]))).toBe(2024n);
    expect(js(ro("rec-nft", "get-facility-id", [Cl.uint(1)]))).toBe(BigInt(facilityId));
    expect(js(ro("rec-nft", "get-report-id", [Cl.uint(1)]))).toBe(BigInt(reportId));
    expect(js(ro("rec-nft", "get-parent-id", [Cl.uint(1)]))).toBe(null);
    expect(js(ro("rec-nft", "get-issued-at", [Cl.uint(1)]))).toBe(ev["issued-at"]);
    expect(js(ro("rec-nft", "get-period", [Cl.uint(1)]))).toEqual({ "period-start": BigInt(JAN_2024), "period-end": BigInt(JAN_2024 + HOUR) });
    expect(js(ro("rec-nft", "get-serials", [Cl.uint(1)]))).toEqual({ "serial-start": 0n, "serial-end": 2500000n });
    expect(js(ro("rec-nft", "get-issued-wh"))).toBe(2500000n);
    expect(statusWh("active")).toBe(2500000n);
  });

  it("serials of successive issuances are contiguous and disjoint", () => {
    mintCertificate({ wh: 100 });
    const fid = 1;
    const r2 = attestedReport(fid, JAN_2024 + HOUR, JAN_2024 + 2 * HOUR, 50);
    const res = call("rec-nft", "mint", [Cl.uint(r2), Cl.stringAscii("ipfs://b")], verifier);
    expect(res.result).toBeOk(Cl.uint(2));
    expect(printed(res.events, "certificate-minted")).toMatchObject({ "serial-start": 100n, "serial-end": 150n, owner: producer });
  });

  it.each([
    [1704067199, 2023n], // 2023-12-31T23:59:59Z
    [1704067200, 2024n],
    [1709164800, 2024n], // 2024-02-29
    [1735689599, 2024n], // 2024-12-31T23:59:59Z
    [951782400, 2000n], // 2000-02-29
    [0, 1970n],
    [4102444800, 2100n],
  ])("vintage of %i is %s", (ts, year) => {
    expect(js(ro("rec-nft", "year-of", [Cl.uint(ts)]))).toBe(year);
  });

  it("refuses unauthorised callers, bad URIs, wrong report states and double mints", () => {
    const fid = activeFacility();
    const r = attestedReport(fid, JAN_2024, JAN_2024 + HOUR, 10);
    const mint = (id, uri, who) => call("rec-nft", "mint", [Cl.uint(id), Cl.stringAscii(uri)], who);
    expectErr(mint(r, "ipfs://x", alice), 203);
    expectErr(mint(r, "https://x", producer), 207);
    expectErr(mint(99, "ipfs://x", producer), 204);
    const pending = Number(js(submitReport(fid, JAN_2024 + HOUR, JAN_2024 + 2 * HOUR, 10).result));
    expectErr(mint(pending, "ipfs://x", producer), 205);
    expect(mint(r, "ipfs://x", producer).result).toBeOk(Cl.uint(1));
    expectErr(mint(r, "ipfs://x", producer), 205);
    // a suspended facility cannot mint its attested reports
    call("verification", "attest-report", [Cl.uint(pending)], verifier);
    call("verification", "suspend-facility", [Cl.uint(fid), Cl.stringUtf8("audit")], verifier);
    expectErr(mint(pending, "ipfs://x", producer), 206);
    // a revoked report cannot mint
    call("verification", "reactivate-facility", [Cl.uint(fid), Cl.stringUtf8("ok")], verifier);
    call("verification", "revoke-report", [Cl.uint(pending), Cl.stringUtf8("fraud")], verifier);
    expectErr(mint(pending, "ipfs://x", producer), 205);
    expect(js(ro("rec-nft", "get-last-token-id"))).toBe(1n);
  });
});

describe("transfer", () => {
  it("moves an active token and prints a transfer event", () => {
    const { tokenId } = mintCertificate();
    const res = transfer(tokenId, producer, alice);
    expect(res.result).toBeOk(Cl.bool(true));
    expect(printed(res.events, "certificate-transferred")).toMatchObject({
      "token-id": 1n, sender: producer, recipient: alice, kind: "transfer", status: "active",
    });
    expect(nativeEvents(res.events, "nft_transfer_event")[0]).toMatchObject({ sender: producer, recipient: alice, asset_identifier: REC_ASSET });
    expect(ownerOf(tokenId)).toBe(alice);
  });

  it("refuses non-owners, self transfers, unknown tokens and direct escrow", () => {
    const { tokenId } = mintCertificate();
    expectErr(transfer(tokenId, producer, alice, alice), 209);
    expectErr(transfer(tokenId, alice, bob), 209);
    expectErr(transfer(tokenId, producer, producer), 221);
    expectErr(transfer(9, producer, alice), 208);
    expectErr(transfer(tokenId, producer, MARKET), 211);
    expect(ownerOf(tokenId)).toBe(producer);
  });
});

describe("split", () => {
  it("splits into children with contiguous serials that sum to the parent", () => {
    const { tokenId } = mintCertificate({ wh: 1000 });
    const res = call("rec-nft", "split", [Cl.uint(tokenId), Cl.list([Cl.uint(600), Cl.uint(300), Cl.uint(100)])], producer);
    const children = [
      { "token-id": 2n, wh: 600n, "serial-start": 0n, "serial-end": 600n },
      { "token-id": 3n, wh: 300n, "serial-start": 600n, "serial-end": 900n },
      { "token-id": 4n, wh: 100n, "serial-start": 900n, "serial-end": 1000n },
    ];
    expect(js(res.result)).toEqual(children);
    expect(printed(res.events, "certificate-split")).toMatchObject({
      "parent-id": 1n, owner: producer, wh: 1000n, "serial-start": 0n, "serial-end": 1000n, children,
    });
    expect(nativeEvents(res.events, "nft_burn_event")).toHaveLength(1);
    expect(nativeEvents(res.events, "nft_mint_event").map((e) => e.recipient)).toEqual([producer, producer, producer]);
    expect(statusOf(1)).toBe("split");
    expect(ownerOf(1)).toBe(null);
    const parent = cert(1);
    for (const c of children) {
      const { "token-id": childId, ...interval } = c;
      const child = cert(Number(childId));
      expect(child).toMatchObject({ ...interval, status: "active", "parent-id": 1n, vintage: parent.vintage, "facility-id": parent["facility-id"], "report-id": parent["report-id"], "token-uri": parent["token-uri"], "issued-at": parent["issued-at"] });
      expect(ownerOf(Number(childId))).toBe(producer);
    }
    expect(js(ro("rec-nft", "get-last-token-id"))).toBe(4n);
    expect(statusWh("active")).toBe(1000n);
    // a child can be split again
    expect(call("rec-nft", "split", [Cl.uint(2), Cl.list([Cl.uint(1), Cl.uint(599)])], producer).result.type).toBe("ok");
    expect(cert(6)).toMatchObject({ "serial-start": 1n, "serial-end": 600n, "parent-id": 2n });
  });

  it("refuses bad splits", () => {
    const { tokenId } = mintCertificate({ wh: 1000 });
    const split = (amounts, who = producer, id = tokenId) =>
      call("rec-nft", "split", [Cl.uint(id), Cl.list(amounts.map((a) => Cl.uint(a)))], who);
    expectErr(split([1000]), 212);
    expectErr(split([1000, 0]), 212);
    expectErr(split([500, 499]), 213);
    expectErr(split([500, 501]), 213);
    expectErr(split([500, 500], alice), 209);
    expectErr(split([500, 500], producer, 42), 208);
    expect(split([500, 500]).result.type).toBe("ok");
    expectErr(split([500, 500]), 208);
  });
});

describe("retire", () => {
  it("retires with claim data, is final and the token never moves again", () => {
    const { tokenId, facilityId, reportId } = mintCertificate({ wh: 700 });
    const res = call("rec-nft", "retire", [Cl.uint(tokenId), ...claimArgs({ beneficiary: bob, purpose: "re100" })], producer);
    expect(res.result).toBeOk(Cl.bool(true));
    const ev = printed(res.events, "certificate-retired");
    expect(ev).toMatchObject({
      "token-id": 1n, owner: producer, wh: 700n, "facility-id": BigInt(facilityId), "report-id": BigInt(reportId),
      vintage: 2024n, "period-start": BigInt(JAN_2024), "period-end": BigInt(JAN_2024 + HOUR),
      "serial-start": 0n, "serial-end": 700n, "beneficiary-name": "Acme Corp", beneficiary: bob,
      "consumption-country": "US", "consumption-subdivision": "US-TX", "consumption-market-boundary": "US-ERCOT",
      "claim-period-start": BigInt(JAN_2024), "claim-period-end": BigInt(JAN_2024 + 366 * 86400),
      "reporting-year": 2024n, purpose: "re100", "retired-at": BigInt(simnet.stacksBlockHeight), status: "retired",
    });
    expect(res.events.filter((e) => e.event !== "print_event")).toHaveLength(0);
    expect(js(ro("rec-nft", "get-retirement", [Cl.uint(1)]))).toMatchObject({ owner: producer, purpose: "re100", beneficiary: bob });
    expect(statusOf(1)).toBe("retired");
    expect(statusWh("retired")).toBe(700n);
    expect(statusWh("active")).toBe(0n);
    expectErr(transfer(1, producer, alice), 210);
    expectErr(call("rec-nft", "retire", [Cl.uint(1), ...claimArgs()], producer), 210);
    expectErr(call("rec-nft", "split", [Cl.uint(1), Cl.list([Cl.uint(1), Cl.uint(699)])], producer), 210);
    expectErr(call("marketplace", "list-fixed", [Cl.uint(1), Cl.none(), Cl.uint(10), Cl.uint(1000)], producer), 210);
    expect(ownerOf(1)).toBe(producer);
  });

  it.each([
    [{ beneficiaryName: "" }, 216],
    [{ country: "USA".slice(0, 1) }, 217],
    [{ boundary: "" }, 217],
    [{ claimEnd: JAN_2024 }, 218],
    [{ year: 1999 }, 219],
    [{ year: 2201 }, 219],
    [{ purpose: "" }, 220],
  ])("refuses claim %o with err u%i", (override, code) => {
    const { tokenId } = mintCertificate();
    expectErr(call("rec-nft", "retire", [Cl.uint(tokenId), ...claimArgs(override)], producer), code);
    expect(statusOf(tokenId)).toBe("active");
  });

  it("only the owner retires", () => {
    const { tokenId } = mintCertificate();
    expectErr(call("rec-nft", "retire", [Cl.uint(tokenId), ...claimArgs()], alice), 209);
    expectErr(call("rec-nft", "retire", [Cl.uint(55), ...claimArgs()], alice), 208);
  });
});

describe("revoke", () => {
  it("a verifier revokes; a revoked token cannot move, split or retire", () => {
    const { tokenId } = mintCertificate({ wh: 300 });
    expectErr(call("rec-nft", "revoke", [Cl.uint(tokenId), Cl.stringUtf8("x")], alice), 214);
    const res = call("rec-nft", "revoke", [Cl.uint(tokenId), Cl.stringUtf8("meter fraud")], verifier);
    expect(res.result).toBeOk(Cl.bool(true));
    expect(printed(res.events, "certificate-revoked")).toMatchObject({
      "token-id": 1n, owner: producer, verifier, reason: "meter fraud", "previous-status": "active", status: "revoked",
    });
    expect(statusWh("revoked")).toBe(300n);
    expectErr(call("rec-nft", "revoke", [Cl.uint(tokenId), Cl.stringUtf8("x")], verifier), 215);
    expectErr(transfer(tokenId, producer, alice), 210);
    expectErr(call("rec-nft", "split", [Cl.uint(tokenId), Cl.list([Cl.uint(1), Cl.uint(299)])], producer), 210);
    expectErr(call("rec-nft", "retire", [Cl.uint(tokenId), ...claimArgs()], producer), 210);
    expectErr(call("rec-nft", "revoke", [Cl.uint(99), Cl.stringUtf8("x")], verifier), 208);
  });

  it("revoking a retired certificate keeps the retirement record", () => {
    const { tokenId } = mintCertificate({ wh: 300 });
    call("rec-nft", "retire", [Cl.uint(tokenId), ...claimArgs()], producer);
    const res = call("rec-nft", "revoke", [Cl.uint(tokenId), Cl.stringUtf8("double issuance")], verifier);
    expect(printed(res.events, "certificate-revoked")["previous-status"]).toBe("retired");
    expect(js(ro("rec-nft", "get-retirement", [Cl.uint(tokenId)]))).not.toBe(null);
    expect(statusWh("retired")).toBe(0n);
    expect(statusWh("revoked")).toBe(300n);
  });

  it("a split parent cannot be revoked (its children can)", () => {
    const { tokenId } = mintCertificate({ wh: 10 });
    call("rec-nft", "split", [Cl.uint(tokenId), Cl.list([Cl.uint(5), Cl.uint(5)])], producer);
    expectErr(call("rec-nft", "revoke", [Cl.uint(tokenId), Cl.stringUtf8("x")], verifier), 215);
    expect(call("rec-nft", "revoke", [Cl.uint(2), Cl.stringUtf8("x")], verifier).result).toBeOk(Cl.bool(true));
  });
});

describe("rec-nft admin", () => {
  it("pause blocks mint, transfer, split and retire but not revoke", () => {
    const { tokenId } = mintCertificate({ wh: 10 });
    const r = attestedReport(1, JAN_2024 + HOUR, JAN_2024 + 2 * HOUR, 10);
    expectErr(call("rec-nft", "set-paused", [Cl.bool(true)], alice), 200);
    const p = call("rec-nft", "set-paused", [Cl.bool(true)], deployer);
    expect(printed(p.events, "pause-changed")).toMatchObject({ paused: true, by: deployer, _contract: REC });
    expectErr(call("rec-nft", "mint", [Cl.uint(r), Cl.stringAscii("ipfs://x")], producer), 202);
    expectErr(transfer(tokenId, producer, alice), 202);
    expectErr(call("rec-nft", "split", [Cl.uint(tokenId), Cl.list([Cl.uint(5), Cl.uint(5)])], producer), 202);
    expectErr(call("rec-nft", "retire", [Cl.uint(tokenId), ...claimArgs()], producer), 202);
    expect(call("rec-nft", "revoke", [Cl.uint(tokenId), Cl.stringUtf8("x")], verifier).result).toBeOk(Cl.bool(true));
    call("rec-nft", "set-paused", [Cl.bool(false)], deployer);
    expect(js(ro("rec-nft", "is-paused"))).toBe(false);
    expect(call("rec-nft", "mint", [Cl.uint(r), Cl.stringAscii("ipfs://x")], producer).result).toBeOk(Cl.uint(2));
  });

  it("two-step ownership and set-marketplace guarded by escrow", () => {
    expectErr(call("rec-nft", "accept-ownership", [], alice), 201);
    expectErr(call("rec-nft", "transfer-ownership", [Cl.principal(alice)], alice), 200);
    call("rec-nft", "transfer-ownership", [Cl.principal(alice)], deployer);
    const acc = call("rec-nft", "accept-ownership", [], alice);
    expect(printed(acc.events, "ownership-transferred")).toMatchObject({ "previous-owner": deployer, "new-owner": alice });
    expect(js(ro("rec-nft", "get-contract-owner"))).toBe(alice);
    expectErr(call("rec-nft", "set-marketplace", [Cl.principal(bob)], deployer), 200);

    const { tokenId } = mintCertificate();
    expect(call("marketplace", "list-fixed", [Cl.uint(tokenId), Cl.none(), Cl.uint(10), Cl.uint(1000)], producer).result.type).toBe("ok");
    expect(js(ro("rec-nft", "get-escrowed-count"))).toBe(1n);
    expectErr(call("rec-nft", "set-marketplace", [Cl.principal(bob)], alice), 222);
    call("marketplace", "cancel-listing", [Cl.uint(1)], producer);
    const second = tokenId;
    expect(transfer(second, producer, bob).result).toBeOk(Cl.bool(true));
    const set = call("rec-nft", "set-marketplace", [Cl.principal(bob)], alice);
    expect(set.result).toBeOk(Cl.bool(true));
    expect(printed(set.events, "marketplace-changed")).toMatchObject({ "old-marketplace": MARKET, "new-marketplace": bob });
    expect(js(ro("rec-nft", "get-marketplace"))).toBe(bob);
    expect(js(ro("rec-nft", "get-pending-owner"))).toBe(null);
    // a principal that becomes the escrow keeps control of tokens it already owned (fuzz finding)
    expect(js(ro("rec-nft", "is-escrowed", [Cl.uint(second)]))).toBe(false);
    expect(transfer(second, bob, carol).result).toBeOk(Cl.bool(true));
  });

  it("addVerifier helper is idempotent across tests", () => {
    addVerifier();
    expect(js(ro("verification", "is-active-verifier", [Cl.principal(verifier)]))).toBe(true);
  });
});
