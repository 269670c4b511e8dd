// CIDs as `ipfs add --cid-version=1` assigns them to a file that fits in one chunk (< 256 KiB):
// the file is a single raw block, so the CID is v1, codec raw (0x55), multihash sha2-256,
// written in multibase base32 lower ("b" prefix, RFC 4648 alphabet, no padding).
import { createHash } from "node:crypto";

const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";
export const MAX_SINGLE_BLOCK = 256 * 1024;

export function base32(bytes) {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

export function rawCid(bytes) {
  if (bytes.length > MAX_SINGLE_BLOCK) {
    throw new RangeError(`file of ${bytes.length} bytes would be chunked; raw CID needs <= ${MAX_SINGLE_BLOCK}`);
  }
  const digest = createHash("sha256").update(bytes).digest();
  // 0x01 CIDv1, 0x55 raw, 0x12 sha2-256, 0x20 digest length
  return "b" + base32(Buffer.concat([Buffer.from([0x01, 0x55, 0x12, 0x20]), digest]));
}
