// One channel's subscription: its resume position and its dedup.
//
// Invariant: `lastId` is the newest id handed to the handlers (or the
// position the subscription started from). Ids increase within a channel and
// every (re)subscription resumes after `lastId`, so a message with an id at
// or below it has already been handled: it is a redelivery or a duplicate
// and is dropped. The only exception is an acked message whose handler
// failed: its redelivery is the retry (see `failed`).

import { Emitter } from "./emitter.js";
import { compareIds } from "./ids.js";
import type {
  ErrorEvent,
  GapEvent,
  Message,
  SubscribedEvent,
  SubscriptionEvents,
  SubscriptionState,
} from "./types.js";

/** Ids of failed acked handlers kept for retry, per subscription. */
const MAX_FAILED = 1024;

/** What a subscription needs from its client. */
export interface SubscriptionHost {
  /** Sends an ack on the connection `conn` if it is still the current one. */
  sendAck(channel: string, id: string, conn: number): void;
  removeSubscription(sub: Subscription): void;
  reportListenerError(e: unknown): void;
}

export class Subscription extends Emitter<SubscriptionEvents> {
  readonly channel: string;
  readonly ack: boolean;
  /** The resume position: newest id handled (see the invariant above). */
  private last: string | null;
  private current: SubscriptionState = "subscribing";
  private everSubscribed = false;
  /** Acked messages whose handlers are running. */
  private readonly inFlight = new Set<string>();
  /** Acked messages whose handlers failed: a redelivery retries them. */
  private readonly failed = new Set<string>();
  /** `reset` seen on the SSE stream being opened. */
  pendingReset = false;

  /** @internal Use `client.subscribe`. */
  constructor(
    private readonly host: SubscriptionHost,
    channel: string,
    opts: { since?: string | undefined; ack?: boolean | undefined },
  ) {
    super((e) => host.reportListenerError(e));
    this.channel = channel;
    this.ack = opts.ack === true;
    this.last = opts.since ?? null;
  }

  get state(): SubscriptionState {
    return this.current;
  }

  /** The id the subscription resumes after (null: from now). */
  get lastId(): string | null {
    return this.last;
  }

  /** Stops the subscription (also on the server, when connected). */
  unsubscribe(): void {
    if (this.current === "unsubscribed") return;
    this.current = "unsubscribed";
    this.host.removeSubscription(this);
  }

  // ---- called by the client -------------------------------------------

  /** @internal The connection was lost: the subscription is sent again on the next one. */
  _reset(): void {
    if (this.current !== "unsubscribed") this.current = "subscribing";
    this.pendingReset = false;
  }

  /** @internal Sets the position when the client has none (SSE cursor). */
  _adopt(position: string): void {
    if (this.last === null) this.last = position;
  }

  /** @internal */
  _subscribed(recovered: boolean, position: string, reason: GapEvent["reason"], brokerGap: boolean): void {
    if (this.current !== "subscribing") return;
    const since = this.last;
    this.current = "subscribed";
    const resubscribed = this.everSubscribed;
    this.everSubscribed = true;
    if (!recovered) {
      // What follows is what the server still holds after `since`; the
      // gap is told, and dedup restarts from what arrives.
      this.last = null;
      this.emit("gap", { channel: this.channel, reason, since, brokerGap });
    }
    if (this.last === null) this.last = position;
    const e: SubscribedEvent = { channel: this.channel, recovered, position: recovered && since ? since : position, resubscribed };
    this.emit("subscribed", e);
  }

  /** @internal */
  _error(e: ErrorEvent): void {
    this.emit("error", e);
  }

  /** @internal A message arrived on connection `conn` (acks only when `ackable`). */
  _message(id: string, data: unknown, conn: number, ackable: boolean): void {
    if (this.current !== "subscribed") return;
    let isNew: boolean;
    try {
      isNew = this.last === null || compareIds(id, this.last) > 0;
    } catch {
      return; // not an id: not a Push message
    }
    const acking = this.ack && ackable;
    if (!isNew) {
      // A redelivery. Only a failed acked handler runs again.
      if (acking && this.failed.has(id) && !this.inFlight.has(id)) {
        this.failed.delete(id);
        this.handle(id, data, conn, acking);
      }
      return;
    }
    this.last = id;
    this.handle(id, data, conn, acking);
  }

  private handle(id: string, data: unknown, conn: number, acking: boolean): void {
    const m: Message = { channel: this.channel, id, data };
    const results = this.emitCollect("message", m);
    if (acking) this.inFlight.add(id);
    Promise.all(results).then(
      () => {
        if (!acking) return;
        this.inFlight.delete(id);
        this.host.sendAck(this.channel, id, conn);
      },
      (cause: unknown) => {
        if (acking) {
          this.inFlight.delete(id);
          this.failed.add(id);
          if (this.failed.size > MAX_FAILED) {
            const oldest = this.failed.values().next().value;
            if (oldest !== undefined) this.failed.delete(oldest);
          }
        }
        this.emit("error", {
          code: "handler_failed",
          message: `message handler failed: ${cause instanceof Error ? cause.message : String(cause)}`,
          channel: this.channel,
          id,
          cause,
        });
      },
    );
  }
}
