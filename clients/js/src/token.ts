// What the client reads in a JWT, without verifying it (the server does):
// `exp`, to fetch a new token before connecting with an expired one, and
// `publish`, to publish over the WebSocket when the token allows it.

export interface TokenClaims {
  exp?: number;
  publish?: string[];
}

function base64UrlDecode(s: string): string | null {
  try {
    const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4);
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TextDecoder().decode(bytes);
  } catch {
    return null;
  }
}

/** The claims of a JWT, or null when `token` is not one (opaque tokens are fine). */
export function readClaims(token: string): TokenClaims | null {
  const parts = token.split(".");
  if (parts.length !== 3 || !parts[1]) return null;
  const json = base64UrlDecode(parts[1]);
  if (json === null) return null;
  try {
    const v: unknown = JSON.parse(json);
    if (typeof v !== "object" || v === null) return null;
    const o = v as Record<string, unknown>;
    const claims: TokenClaims = {};
    if (typeof o.exp === "number") claims.exp = o.exp;
    if (Array.isArray(o.publish)) claims.publish = o.publish.filter((p): p is string => typeof p === "string");
    return claims;
  } catch {
    return null;
  }
}

/** Whether a `channels`/`publish` pattern list grants `channel` (exact, or prefix with `*`). */
export function grants(patterns: readonly string[] | undefined, channel: string): boolean {
  if (!patterns) return false;
  return patterns.some((p) => (p.endsWith("*") ? channel.startsWith(p.slice(0, -1)) : p === channel));
}

/**
 * Whether the token is expired at `nowMs`, as the server sees it (it allows
 * 5 s of leeway). Unknown (not a JWT, no exp): false.
 */
export function isExpired(claims: TokenClaims | null, nowMs: number): boolean {
  return claims?.exp !== undefined && claims.exp + 5 <= Math.floor(nowMs / 1000);
}
