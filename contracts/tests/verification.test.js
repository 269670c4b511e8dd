import { Cl } from "@stacks/transactions";
import { describe, expect, it } from "vitest";
import {
  EVIDENCE, HOUR, JAN_2024, VERIFICATION, activeFacility, addVerifier, alice, attestedReport, bob, call,
  deployer, expectErr, facilityArgs, facilityDefaults, js, printed, prints, producer,
  registerFacility, ro, submitReport, verifier,
} from "./helpers.js";

const facility = (id) => js(ro("verification", "get-facility", [Cl.uint(id)]));
const report = (id) => js(ro("verification", "get-report", [Cl.uint(id)]));

describe("verifier registry", () => {
  it("owner adds and revokes a verifier, printing both events", () => {
    const added = addVerifier();
    expect(printed(added.events, "verifier-added")).toMatchObject({
      verifier, name: "TUV Audit", active: true, by: deployer, _contract: VERIFICATION,
    });
    expect(js(ro("verification", "is-active-verifier", [Cl.principal(verifier)]))).toBe(true);
    const revoked = call("verification", "revoke-verifier", [Cl.principal(verifier)], deployer);
    expect(revoked.result).toBeOk(Cl.bool(true));
    expect(printed(revoked.events, "verifier-revoked")).toMatchObject({ verifier, active: false, name: "TUV Audit" });
    expect(js(ro("verification", "is-active-verifier", [Cl.principal(verifier)]))).toBe(false);
    // a revoked verifier can be re-added
    addVerifier(verifier, "TUV Audit 2");
    expect(js(ro("verification", "get-verifier", [Cl.principal(verifier)]))).toEqual({ name: "TUV Audit 2", active: true });
  });

  it("refuses non-owners, duplicates, empty names and unknown verifiers", () => {
    expectErr(call("verification", "add-verifier", [Cl.principal(verifier), Cl.stringUtf8("x")], alice), 100);
    expectErr(call("verification", "add-verifier", [Cl.principal(verifier), Cl.stringUtf8("")], deployer), 106);
    addVerifier();
    expectErr(call("verification", "add-verifier", [Cl.principal(verifier), Cl.stringUtf8("x")], deployer), 104);
    expectErr(call("verification", "revoke-verifier", [Cl.principal(verifier)], alice), 100);
    expectErr(call("verification", "revoke-verifier", [Cl.principal(bob)], deployer), 105);
    call("verification", "revoke-verifier", [Cl.principal(verifier)], deployer);
    expectErr(call("verification", "revoke-verifier", [Cl.principal(verifier)], deployer), 105);
  });
});

describe("facilities", () => {
  it("registration stores and prints every attribute, status pending", () => {
    const res = call("verification", "register-facility", facilityArgs({ repoweringDate: 1609459200, publicSupport: true }), producer);
    expect(res.result).toBeOk(Cl.uint(1));
    const ev = printed(res.events, "facility-registered");
    const expected = {
      "facility-id": 1n, owner: producer, actor: producer, reason: "", name: facilityDefaults.name,
      country: "US", subdivision: "US-TX", "market-boundary": "US-ERCOT", "grid-zone": "ERCOT-NORTH",
      latitude: 32776700n, longitude: -96797000n, "energy-source": "ES100", technology: "TC110",
      "capacity-w": 5000000n, "commissioning-date": 1577836800n, "repowering-date": 1609459200n,
      "public-support": true, "irec-code": "IREC-US-0001", "meter-gsrn": "643002406000000001",
      "metadata-uri": "ipfs://bafyfacility", status: "pending", verifier: null,
      "last-attested-end": 0n,
    };
    expect(ev).toMatchObject(expected);
    expect(ev["registered-at"]).toBe(BigInt(simnet.stacksBlockHeight));
    const { "facility-id": _id, actor: _a, reason: _r, event: _e, _contract, ...stored } = ev;
    expect(facility(1)).toEqual(stored);
    expect(js(ro("verification", "get-last-facility-id"))).toBe(1n);
  });

  it.each([
    [{ name: "" }, 106],
    [{ country: "U" }, 107],
    [{ marketBoundary: "" }, 107],
    [{ latitude: 90000001 }, 108],
    [{ latitude: -90000001 }, 108],
    [{ longitude: 180000001 }, 108],
    [{ longitude: -180000001 }, 108],
    [{ energySource: "XX100" }, 109],
    [{ energySource: "ES10" }, 109],
    [{ technology: "ES110" }, 109],
    [{ capacityW: 0 }, 110],
    [{ commissioningDate: 0 }, 111],
    [{ repoweringDate: 1577836800 }, 111],
    [{ metadataUri: "" }, 112],
  ])("rejects bad registration %o with err u%i", (override, code) => {
    expectErr(call("verification", "register-facility", facilityArgs(override), producer), code);
    expect(js(ro("verification", "get-last-facility-id"))).toBe(0n);
  });

  it("verifier approves, suspends, reactivates and terminates with full events", () => {
    addVerifier();
    const id = registerFacility();
    const steps = [
      ["approve-facility", [], "facility-approved", "active", ""],
      ["suspend-facility", [Cl.stringUtf8("meter tampering")], "facility-suspended", "suspended", "meter tampering"],
      ["reactivate-facility", [Cl.stringUtf8("cleared")], "facility-reactivated", "active", "cleared"],
      ["terminate-facility", [Cl.stringUtf8("decommissioned")], "facility-terminated", "terminated", "decommissioned"],
    ];
    for (const [fn, extra, kind, status, reason] of steps) {
      const res = call("verification", fn, [Cl.uint(id), ...extra], verifier);
      expect(res.result).toBeOk(Cl.uint(id));
      expect(printed(res.events, kind)).toMatchObject({
        "facility-id": BigInt(id), status, reason, actor: verifier, verifier, owner: producer,
        name: facilityDefaults.name, "energy-source": "ES100",
      });
      expect(facility(id).status).toBe(status);
    }
  });

  it("refuses wrong transitions, non-verifiers, conflicts and unknown ids", () => {
    addVerifier();
    const id = registerFacility();
    expectErr(call("verification", "approve-facility", [Cl.uint(id)], alice), 103);
    expectErr(call("verification", "approve-facility", [Cl.uint(99)], verifier), 113);
    expectErr(call("verification", "suspend-facility", [Cl.uint(id), Cl.stringUtf8("x")], verifier), 114);
    expectErr(call("verification", "reactivate-facility", [Cl.uint(id), Cl.stringUtf8("x")], verifier), 114);
    const own = registerFacility(verifier);
    expectErr(call("verification", "approve-facility", [Cl.uint(own)], verifier), 125);
    call("verification", "terminate-facility", [Cl.uint(id), Cl.stringUtf8("x")], verifier);
    expectErr(call("verification", "approve-facility", [Cl.uint(id)], verifier), 114);
    expectErr(call("verification", "terminate-facility", [Cl.uint(id), Cl.stringUtf8("x")], verifier), 114);
    expect(facility(id).status).toBe("terminated");
  });
});

describe("generation reports", () => {
  it("submit then attest prints full reports and advances last-attested-end", () => {
    const fid = activeFacility();
    const sub = submitReport(fid, JAN_2024, JAN_2024 + HOUR, 4_000_000);
    expect(sub.result).toBeOk(Cl.uint(1));
    expect(printed(sub.events, "report-submitted")).toMatchObject({
      "report-id": 1n, actor: producer, "facility-id": BigInt(fid), "period-start": BigInt(JAN_2024),
      "period-end": BigInt(JAN_2024 + HOUR), wh: 4000000n, "evidence-hash": EVIDENCE, submitter: producer,
      verifier: null, "revoked-by": null, status: "submitted", reason: "", "token-id": null,
    });
    const att = call("verification", "attest-report", [Cl.uint(1)], verifier);
    expect(att.result).toBeOk(Cl.uint(1));
    expect(printed(att.events, "report-attested")).toMatchObject({ status: "attested", verifier, actor: verifier, wh: 4000000n });
    expect(facility(fid)["last-attested-end"]).toBe(BigInt(JAN_2024 + HOUR));
    expect(report(1).status).toBe("attested");
  });

  it("refuses invalid submissions", () => {
    const fid = activeFacility();
    expectErr(submitReport(99, JAN_2024, JAN_2024 + HOUR, 1), 113);
    expectErr(submitReport(fid, JAN_2024, JAN_2024 + HOUR, 1, alice), 115);
    expectErr(submitReport(fid, JAN_2024 + HOUR, JAN_2024 + HOUR, 1), 117);
    expectErr(submitReport(fid, JAN_2024, JAN_2024 + HOUR, 0), 118);
    // 5 MW for one hour is 5,000,000 Wh at most
    expectErr(submitReport(fid, JAN_2024, JAN_2024 + HOUR, 5_000_001), 119);
    expect(submitReport(fid, JAN_2024, JAN_2024 + HOUR, 5_000_000).result).toBeOk(Cl.uint(1));
    const pending = registerFacility();
    expectErr(submitReport(pending, JAN_2024, JAN_2024 + HOUR, 1), 116);
  });

  it("a facility's attested periods never overlap", () => {
    const fid = activeFacility();
    attestedReport(fid, JAN_2024, JAN_2024 + 2 * HOUR, 1000);
    // overlapping start is refused at submission
    expectErr(submitReport(fid, JAN_2024 + HOUR, JAN_2024 + 3 * HOUR, 1000), 120);
    // two pending reports for the same period: only the first can be attested
    const a = Number(js(submitReport(fid, JAN_2024 + 2 * HOUR, JAN_2024 + 3 * HOUR, 1000).result));
    const b = Number(js(submitReport(fid, JAN_2024 + 2 * HOUR, JAN_2024 + 3 * HOUR, 1000).result));
    expect(call("verification", "attest-report", [Cl.uint(a)], verifier).result).toBeOk(Cl.uint(a));
    expectErr(call("verification", "attest-report", [Cl.uint(b)], verifier), 120);
    expect(report(b).status).toBe("submitted");
    // adjacent and gapped periods are fine; the half-open end is not an overlap
    attestedReport(fid, JAN_2024 + 5 * HOUR, JAN_2024 + 6 * HOUR, 1000);
    expect(facility(fid)["last-attested-end"]).toBe(BigInt(JAN_2024 + 6 * HOUR));
  });

  it("revoking an attested report does not free its period", () => {
    const fid = activeFacility();
    const id = attestedReport(fid, JAN_2024, JAN_2024 + HOUR, 1000);
    const res = call("verification", "revoke-report", [Cl.uint(id), Cl.stringUtf8("bad meter")], verifier);
    expect(res.result).toBeOk(Cl.uint(id));
    expect(printed(res.events, "report-revoked")).toMatchObject({ status: "revoked", reason: "bad meter", verifier, "revoked-by": verifier });
    expectErr(submitReport(fid, JAN_2024, JAN_2024 + HOUR, 1000), 120);
    expectErr(call("verification", "revoke-report", [Cl.uint(id), Cl.stringUtf8("x")], verifier), 122);
  });

  it("a revocation keeps the attesting verifier and records the revoking one beside it", () => {
    addVerifier(alice, "Second Body");
    const fid = activeFacility();
    const id = attestedReport(fid, JAN_2024, JAN_2024 + HOUR, 1000);
    expect(report(id).verifier).toBe(verifier);
    expect(report(id)["revoked-by"]).toBe(null);
    const res = call("verification", "revoke-report", [Cl.uint(id), Cl.stringUtf8("audit finding")], alice);
    expect(res.result).toBeOk(Cl.uint(id));
    expect(printed(res.events, "report-revoked")).toMatchObject({
      status: "revoked", verifier, "revoked-by": alice, actor: alice, reason: "audit finding",
    });
    expect(report(id)).toMatchObject({ status: "revoked", verifier, "revoked-by": alice });
    // a rejection names its verifier in `verifier`; nothing was revoked
    const r = Number(js(submitReport(fid, JAN_2024 + HOUR, JAN_2024 + 2 * HOUR, 10).result));
    const rej = call("verification", "reject-report", [Cl.uint(r), Cl.stringUtf8("x")], alice);
    expect(printed(rej.events, "report-rejected")).toMatchObject({ verifier: alice, "revoked-by": null });
  });

  it("reject and withdraw are final and checked", () => {
    const fid = activeFacility();
    const r1 = Number(js(submitReport(fid, JAN_2024, JAN_2024 + HOUR, 10).result));
    const rej = call("verification", "reject-report", [Cl.uint(r1), Cl.stringUtf8("evidence missing")], verifier);
    expect(rej.result).toBeOk(Cl.uint(r1));
    expect(printed(rej.events, "report-rejected")).toMatchObject({ status: "rejected", reason: "evidence missing" });
    expectErr(call("verification", "attest-report", [Cl.uint(r1)], verifier), 122);
    expectErr(call("verification", "withdraw-report", [Cl.uint(r1)], producer), 122);
    const r2 = Number(js(submitReport(fid, JAN_2024, JAN_2024 + HOUR, 10).result));
    expectErr(call("verification", "withdraw-report", [Cl.uint(r2)], alice), 123);
    expectErr(call("verification", "withdraw-report", [Cl.uint(99)], producer), 121);
    const wd = call("verification", "withdraw-report", [Cl.uint(r2)], producer);
    expect(wd.result).toBeOk(Cl.uint(r2));
    expect(printed(wd.events, "report-withdrawn")).toMatchObject({ status: "withdrawn", actor: producer });
    expectErr(call("verification", "reject-report", [Cl.uint(r2), Cl.stringUtf8("x")], verifier), 122);
    expectErr(call("verification", "attest-report", [Cl.uint(99)], verifier), 121);
  });

  it("verifiers cannot decide on their own facility; non-verifiers cannot decide at all", () => {
    addVerifier();
    addVerifier(alice, "Second");
    const fid = registerFacility(verifier);
    call("verification", "approve-facility", [Cl.uint(fid)], alice);
    const r = Number(js(submitReport(fid, JAN_2024, JAN_2024 + HOUR, 10, verifier).result));
    expectErr(call("verification", "attest-report", [Cl.uint(r)], verifier), 125);
    expectErr(call("verification", "attest-report", [Cl.uint(r)], bob), 103);
    expectErr(call("verification", "reject-report", [Cl.uint(r), Cl.stringUtf8("x")], bob), 103);
  });

  it("attest requires the facility to still be active", () => {
    const fid = activeFacility();
    const r = Number(js(submitReport(fid, JAN_2024, JAN_2024 + HOUR, 10).result));
    call("verification", "suspend-facility", [Cl.uint(fid), Cl.stringUtf8("audit")], verifier);
    expectErr(call("verification", "attest-report", [Cl.uint(r)], verifier), 116);
  });

  it("mark-minted is reserved to rec-nft", () => {
    const fid = activeFacility();
    const r = attestedReport(fid, JAN_2024, JAN_2024 + HOUR, 10);
    expectErr(call("verification", "mark-minted", [Cl.uint(r), Cl.uint(1)], producer), 124);
    expectErr(call("verification", "mark-minted", [Cl.uint(r), Cl.uint(1)], deployer), 124);
    expectErr(call("verification", "mark-minted", [Cl.uint(77), Cl.uint(1)], deployer), 121);
    expect(report(r).status).toBe("attested");
  });
});

describe("verification admin", () => {
  it("two-step ownership hand-over", () => {
    expectErr(call("verification", "transfer-ownership", [Cl.principal(alice)], alice), 100);
    const start = call("verification", "transfer-ownership", [Cl.principal(alice)], deployer);
    expect(start.result).toBeOk(Cl.bool(true));
    expect(printed(start.events, "ownership-transfer-started")).toMatchObject({ owner: deployer, "pending-owner": alice });
    expect(js(ro("verification", "get-pending-owner"))).toBe(alice);
    // the old owner keeps its powers until acceptance
    addVerifier();
    expectErr(call("verification", "accept-ownership", [], bob), 101);
    const acc = call("verification", "accept-ownership", [], alice);
    expect(acc.result).toBeOk(Cl.bool(true));
    expect(printed(acc.events, "ownership-transferred")).toMatchObject({ "previous-owner": deployer, "new-owner": alice });
    expect(js(ro("verification", "get-contract-owner"))).toBe(alice);
    expectErr(call("verification", "add-verifier", [Cl.principal(bob), Cl.stringUtf8("b")], deployer), 100);
    expect(call("verification", "add-verifier", [Cl.principal(bob), Cl.stringUtf8("b")], alice).result).toBeOk(Cl.bool(true));
    expectErr(call("verification", "accept-ownership", [], alice), 101);
  });

  it("pause blocks facility and report changes until unpaused", () => {
    const fid = activeFacility();
    const r = Number(js(submitReport(fid, JAN_2024, JAN_2024 + HOUR, 10).result));
    expectErr(call("verification", "set-paused", [Cl.bool(true)], alice), 100);
    const p = call("verification", "set-paused", [Cl.bool(true)], deployer);
    expect(printed(p.events, "pause-changed")).toMatchObject({ paused: true, by: deployer });
    expect(js(ro("verification", "is-paused"))).toBe(true);
    expectErr(call("verification", "register-facility", facilityArgs(), producer), 102);
    expectErr(submitReport(fid, JAN_2024 + HOUR, JAN_2024 + 2 * HOUR, 10), 102);
    expectErr(call("verification", "attest-report", [Cl.uint(r)], verifier), 102);
    expectErr(call("verification", "reject-report", [Cl.uint(r), Cl.stringUtf8("x")], verifier), 102);
    expectErr(call("verification", "withdraw-report", [Cl.uint(r)], producer), 102);
    expectErr(call("verification", "suspend-facility", [Cl.uint(fid), Cl.stringUtf8("x")], verifier), 102);
    // verifier management stays available
    expect(call("verification", "add-verifier", [Cl.principal(bob), Cl.stringUtf8("b")], deployer).result).toBeOk(Cl.bool(true));
    call("verification", "set-paused", [Cl.bool(false)], deployer);
    expect(call("verification", "attest-report", [Cl.uint(r)], verifier).result).toBeOk(Cl.uint(r));
    expect(prints(p.events)).toHaveLength(1);
  });
});
