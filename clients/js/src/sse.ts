// Server-Sent Events over `fetch` streaming, in browsers and Node alike.
//
// Why not EventSource: it hides the HTTP status (a 401 `token_expired` and a
// 503 `draining` look the same), hides `: ping` comments (no liveness check)
// and gives up for good on an error status. With fetch the client sees all
// of it and resumes by itself with the cursor as `lastEventId`.

/** One dispatched event: its type, data, and its `id:` when it had one. */
export interface SseEvent {
  event: string;
  data: string;
  id: string | undefined;
}

/**
 * Incremental `text/event-stream` parser (the WHATWG rules that Push uses:
 * `event`, `data`, `id`, `retry` fields, `:` comments, LF / CRLF / CR line
 * ends). Holds at most `maxEventBytes` characters of one event: a longer one
 * throws, so a broken stream cannot grow memory without bound.
 */
export class SseParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];
  private dataLength = 0;
  private id: string | undefined;
  private sawCr = false;

  constructor(
    private readonly onEvent: (e: SseEvent) => void,
    private readonly maxEventBytes = 4 * 1024 * 1024,
  ) {}

  /** Feeds decoded text; calls onEvent for every complete event. */
  feed(text: string): void {
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 10 /* \n */ && this.sawCr) {
        // The LF of a CRLF whose CR ended the previous line.
        this.sawCr = false;
        start = i + 1;
        continue;
      }
      this.sawCr = false;
      if (c === 10 || c === 13) {
        this.line(this.buffer + text.slice(start, i));
        this.buffer = "";
        start = i + 1;
        this.sawCr = c === 13;
      }
    }
    this.buffer += text.slice(start);
    if (this.buffer.length + this.dataLength > this.maxEventBytes) {
      throw new Error(`server-sent event larger than ${this.maxEventBytes} bytes`);
    }
  }

  private line(line: string): void {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) return; // comment (`: ping`)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        this.dataLength += value.length + 1;
        if (this.dataLength > this.maxEventBytes) {
          throw new Error(`server-sent event larger than ${this.maxEventBytes} bytes`);
        }
        break;
      case "id":
        if (!value.includes("\0")) this.id = value;
        break;
      default:
        break; // `retry` and unknown fields: the client keeps its own policy
    }
  }

  private dispatch(): void {
    const e: SseEvent = { event: this.event || "message", data: this.data.join("\n"), id: this.id };
    const any = this.data.length > 0 || this.id !== undefined || this.event !== "";
    this.event = "";
    this.data = [];
    this.dataLength = 0;
    this.id = undefined;
    if (any) this.onEvent(e);
  }
}
