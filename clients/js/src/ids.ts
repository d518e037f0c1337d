// Message ids and SSE cursors (docs/protocol.md).
//
// An id is `<ms>-<seq>`, two unsigned decimal integers, ordered as the pair
// (ms, seq) within its channel. Both parts are u64 on the server, so they are
// compared as decimal strings (length first), never as floating point.

const ID = /^(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})$/;

/** Whether `s` is a message id the server accepts (`<ms>-<seq>`). */
export function isMessageId(s: unknown): s is string {
  return typeof s === "string" && ID.test(s);
}

function compareDecimal(a: string, b: string): number {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Orders two ids of one channel: negative when `a` is older than `b`, zero
 * when equal, positive when newer. Throws on a malformed id.
 */
export function compareIds(a: string, b: string): number {
  const ma = ID.exec(a);
  const mb = ID.exec(b);
  if (!ma || !mb) throw new TypeError(`not a message id: ${JSON.stringify(ma ? b : a)}`);
  return compareDecimal(ma[1]!, mb[1]!) || compareDecimal(ma[2]!, mb[2]!);
}

/**
 * Parses an SSE cursor (`id:` line: one id per channel of the stream, in
 * `channels=` order, comma-separated). Returns null when it does not hold
 * exactly `count` valid ids.
 */
export function parseCursor(cursor: string, count: number): string[] | null {
  const parts = cursor.trim().split(",");
  if (parts.length !== count || !parts.every(isMessageId)) return null;
  return parts;
}

/** Writes the cursor of `positions` (one id per channel, in stream order). */
export function formatCursor(positions: readonly string[]): string {
  return positions.join(",");
}
