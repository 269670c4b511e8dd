// Shared fixtures for the simnet tests: accounts, a plain-JS view of Clarity values, and the
// happy-path steps (verifier, facility, report, mint) most tests start from.
import { Cl, ClarityType } from "@stacks/transactions";
import { expect } from "vitest";

export const accounts = simnet.getAccounts();
export const deployer = accounts.get("deployer");
export const verifier = accounts.get("wallet_1");
export const producer = accounts.get("wallet_2");
export const alice = accounts.get("wallet_3");
export const bob = accounts.get("wallet_4");
export const carol = accounts.get("wallet_5");
export const treasury2 = accounts.get("wallet_6");

export const VERIFICATION = `${deployer}.verification`;
export const REC = `${deployer}.rec-nft`;
export const MARKET = `${deployer}.marketplace`;
export const SBTC = `${deployer}.sbtc-token`;
export const REC_ASSET = `${REC}::rec`;

// 2024-01-01T00:00:00Z and one hour
export const JAN_2024 = 1704067200;
export const HOUR = 3600;

/** Clarity value -> plain JS: uint/int as BigInt, tuples as objects, optionals as value|null. */
export function js(cv) {
  switch (cv.type) {
    case ClarityType.UInt:
    case ClarityType.Int:
      return BigInt(cv.value);
    case ClarityType.BoolTrue:
      return true;
    case ClarityType.BoolFalse:
      return false;
    case ClarityType.PrincipalStandard:
    case ClarityType.PrincipalContract:
      return cv.value;
    case ClarityType.StringASCII:
    case ClarityType.StringUTF8:
      return cv.value;
    case ClarityType.Buffer:
      return cv.value;
    case ClarityType.OptionalNone:
      return null;
    case ClarityType.OptionalSome:
    case ClarityType.ResponseOk:
    case ClarityType.ResponseErr:
      return js(cv.value);
    case ClarityType.List:
      return cv.value.map(js);
    case ClarityType.Tuple:
      return Object.fromEntries(Object.entries(cv.value).map(([k, v]) => [k, js(v)]));
    default:
      throw new Error(`unhandled Clarity type ${cv.type}`);
  }
}

/** Printed tuples of a call, in order, as plain objects with their emitting contract. */
export function prints(events) {
  return events
    .filter((e) => e.event === "print_event")
    .map((e) => ({ ...js(e.data.value), _contract: e.data.contract_identifier }));
}

/** The single print of a given kind; fails when there is not exactly one. */
export function printed(events, kind) {
  const matching = prints(events).filter((p) => p.event === kind);
  expect(matching, `expected exactly one ${kind} event`).toHaveLength(1);
  return matching[0];
}

export function nativeEvents(events, type) {
  return events.filter((e) => e.event === type).map((e) => e.data);
}

export function call(contract, fn, args, sender) {
  return simnet.callPublicFn(contract, fn, args, sender);
}

export function ro(contract, fn, args = [], sender = deployer) {
  return simnet.callReadOnlyFn(contract, fn, args, sender).result;
}

/** Asserts `(err uCODE)` and that nothing was printed or moved. */
export function expectErr(res, code) {
  expect(res.result).toBeErr(Cl.uint(code));
  expect(res.events).toHaveLength(0);
}

export function addVerifier(who = verifier, name = "TUV Audit") {
  const res = call("verification", "add-verifier", [Cl.principal(who), Cl.stringUtf8(name)], deployer);
  expect(res.result).toBeOk(Cl.bool(true));
  return res;
}

export const facilityDefaults = {
  name: "Sunfield Solar Park",
  country: "US",
  subdivision: "US-TX",
  marketBoundary: "US-ERCOT",
  gridZone: "ERCOT-NORTH",
  latitude: 32776700,
  longitude: -96797000,
  energySource: "ES100",
  technology: "TC110",
  capacityW: 5_000_000,
  commissioningDate: 1577836800,
  repoweringDate: null,
  publicSupport: false,
  irecCode: "IREC-US-0001",
  meterGsrn: "643002406000000001",
  metadataUri: "ipfs://bafyfacility",
};

export function facilityArgs(overrides = {}) {
  const f = { ...facilityDefaults, ...overrides };
  return [
    Cl.stringUtf8(f.name),
    Cl.stringAscii(f.country),
    Cl.stringAscii(f.subdivision),
    Cl.stringAscii(f.marketBoundary),
    Cl.stringAscii(f.gridZone),
    Cl.int(f.latitude),
    Cl.int(f.longitude),
    Cl.stringAscii(f.energySource),
    Cl.stringAscii(f.technology),
    Cl.uint(f.capacityW),
    Cl.uint(f.commissioningDate),
    f.repoweringDate === null ? Cl.none() : Cl.some(Cl.uint(f.repoweringDate)),
    Cl.bool(f.publicSupport),
    Cl.stringAscii(f.irecCode),
    Cl.stringAscii(f.meterGsrn),
    Cl.stringAscii(f.metadataUri),
  ];
}

export function registerFacility(owner = producer, overrides = {}) {
  const res = call("verification", "register-facility", facilityArgs(overrides), owner);
  expect(res.result.type).toBe(ClarityType.ResponseOk);
  return Number(js(res.result));
}

/** A verifier and an approved facility owned by `owner`; returns the facility id. */
export function activeFacility(owner = producer, overrides = {}) {
  if (!js(ro("verification", "is-active-verifier", [Cl.principal(verifier)]))) {
    addVerifier();
  }
  const id = registerFacility(owner, overrides);
  expect(call("verification", "approve-facility", [Cl.uint(id)], verifier).result).toBeOk(Cl.uint(id));
  return id;
}

export const EVIDENCE = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

export function submitReport(facilityId, start, end, wh, owner = producer) {
  return call(
    "verification",
    "submit-report",
    [Cl.uint(facilityId), Cl.uint(start), Cl.uint(end), Cl.uint(wh), Cl.bufferFromHex(EVIDENCE)],
    owner,
  );
}

export function attestedReport(facilityId, start, end, wh, owner = producer) {
  const sub = submitReport(facilityId, start, end, wh, owner);
  expect(sub.result.type).toBe(ClarityType.ResponseOk);
  const id = Number(js(sub.result));
  expect(call("verification", "attest-report", [Cl.uint(id)], verifier).result).toBeOk(Cl.uint(id));
  return id;
}

/** Registers whatever is missing and mints one certificate to `owner`; returns its token id. */
export function mintCertificate({ owner = producer, wh = 1_000_000, start = JAN_2024, hours = 1, uri = "ipfs://bafycert/{id}.json" } = {}) {
  const facilityId = activeFacility(owner);
  const reportId = attestedReport(facilityId, start, start + hours * HOUR, wh, owner);
  const res = call("rec-nft", "mint", [Cl.uint(reportId), Cl.stringAscii(uri)], owner);
  expect(res.result.type).toBe(ClarityType.ResponseOk);
  return { tokenId: Number(js(res.result)), facilityId, reportId, res };
}

export function claimArgs(overrides = {}) {
  const c = {
    beneficiaryName: "Acme Corp",
    beneficiary: null,
    country: "US",
    subdivision: "US-TX",
    boundary: "US-ERCOT",
    claimStart: JAN_2024,
    claimEnd: JAN_2024 + 366 * 86400,
    year: 2024,
    purpose: "voluntary-scope2",
    ...overrides,
  };
  return [
    Cl.stringUtf8(c.beneficiaryName),
    c.beneficiary === null ? Cl.none() : Cl.some(Cl.principal(c.beneficiary)),
    Cl.stringAscii(c.country),
    Cl.stringAscii(c.subdivision),
    Cl.stringAscii(c.boundary),
    Cl.uint(c.claimStart),
    Cl.uint(c.claimEnd),
    Cl.uint(c.year),
    Cl.stringAscii(c.purpose),
  ];
}

export function stxBalance(who) {
  return simnet.getAssetsMap().get("STX")?.get(who) ?? 0n;
}

export function sbtcBalance(who) {
  return simnet.getAssetsMap().get(`.sbtc-token.sbtc`)?.get(who) ?? 0n;
}

export function ownerOf(tokenId) {
  return js(ro("rec-nft", "get-owner", [Cl.uint(tokenId)]));
}

export function statusOf(tokenId) {
  return js(ro("rec-nft", "get-status", [Cl.uint(tokenId)]));
}
