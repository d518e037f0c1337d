// A small typed event emitter. A listener that throws does not stop the
// others nor the client: the error goes to `onListenerError`.

export type Listener<T> = (value: T) => unknown;

export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  constructor(private readonly onListenerError: (e: unknown) => void) {}

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, fn: Listener<Events[K]>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn as Listener<never>);
    return () => this.off(event, fn);
  }

  /** Adds a listener called at most once. */
  once<K extends keyof Events>(event: K, fn: Listener<Events[K]>): () => void {
    const off = this.on(event, (v) => {
      off();
      return fn(v);
    });
    return off;
  }

  off<K extends keyof Events>(event: K, fn: Listener<Events[K]>): void {
    this.listeners.get(event)?.delete(fn as Listener<never>);
  }

  listenerCount<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  /** Calls every listener; a throw or a rejected promise goes to onListenerError. */
  protected emit<K extends keyof Events>(event: K, value: Events[K]): void {
    for (const r of this.emitCollect(event, value)) {
      if (r !== null && typeof (r as { then?: unknown })?.then === "function") {
        // A failing `error` listener is not reported as an error again (no loop).
        Promise.resolve(r).catch((e: unknown) => {
          if (event !== "error") this.onListenerError(e);
        });
      }
    }
  }

  /**
   * Calls every listener and returns what each returned, a throw as a
   * rejected promise (for the caller to handle: message acks).
   */
  protected emitCollect<K extends keyof Events>(event: K, value: Events[K]): unknown[] {
    const set = this.listeners.get(event);
    if (!set || set.size === 0) return [];
    const out: unknown[] = [];
    for (const fn of [...set]) {
      try {
        out.push((fn as Listener<Events[K]>)(value));
      } catch (e) {
        out.push(Promise.reject(e));
      }
    }
    return out;
  }
}
