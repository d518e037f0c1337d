// Reconnect delays: exponential backoff with full jitter
// (delay = random(0, min(max, base * 2^attempt))), unless the server said
// when to come back (`reconnect.retry_ms`, `Retry-After`).

export interface BackoffOptions {
  /** Base of the exponential (ms): the cap of the first retry. */
  minDelayMs: number;
  /** Largest cap (ms). */
  maxDelayMs: number;
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry).
 * `random` returns a number in [0, 1), `Math.random` by default.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const exp = Math.min(Math.max(0, Math.floor(attempt)), 30);
  const cap = Math.min(opts.maxDelayMs, opts.minDelayMs * 2 ** exp);
  return Math.floor(random() * cap);
}

/**
 * The delay to wait when the server asked for one: its `retry_ms` (already
 * jittered by the server) or a `Retry-After` (seconds) spread by ±50 % so
 * that clients refused together do not come back together; never less than
 * the backoff delay.
 */
export function serverDelay(
  backoffMs: number,
  server: { retryMs?: number | undefined; retryAfterS?: number | undefined },
  random: () => number = Math.random,
): number {
  let wanted = 0;
  if (server.retryMs !== undefined && Number.isFinite(server.retryMs)) wanted = server.retryMs;
  else if (server.retryAfterS !== undefined && Number.isFinite(server.retryAfterS))
    wanted = server.retryAfterS * 1000 * (0.5 + random());
  return Math.max(backoffMs, Math.min(wanted, 10 * 60_000));
}
