// The one WebSocket for live data (/ws/telemetry): the first message after a connect is
// the snapshot, then deltas. Reconnects by itself with capped exponential back-off and
// jitter (0.5 s doubling up to 10 s, reset after a good connect). Messages are applied
// to the cluster as they come (a cheap merge) and views redraw once per animation frame.

import { streamUrl } from "./api";
import type { Cluster } from "./cluster";

export type Connection = "connecting" | "live" | "reconnecting";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

export class TelemetryStream {
  private socket: WebSocket | null = null;
  private delay = FIRST_DELAY_MS;
  private retry: number | undefined;
  private frame: number | undefined;
  private stopped = false;
  /** Messages received since the page loaded (the tests and the status line read it). */
  messages = 0;
  /** The last 4,096 redraws' durations, ms (the frame-time measurement reads them). */
  readonly redraws = new Float32Array(4096);
  redrawCount = 0;
  reconnects = 0;

  constructor(
    private readonly cluster: Cluster,
    private readonly onConnection: (state: Connection, detail: string) => void,
    private readonly onDrop: () => void,
  ) {}

  start(): void {
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.retry);
    this.socket?.close(1000);
    this.socket = null;
  }

  private open(): void {
    this.onConnection(this.reconnects ? "reconnecting" : "connecting", "connecting");
    const socket = new WebSocket(streamUrl("/ws/telemetry"));
    this.socket = socket;
    let first = true;
    socket.onopen = () => {
      this.delay = FIRST_DELAY_MS;
      this.onConnection("live", "live");
    };
    socket.onmessage = (event: MessageEvent) => {
      if (typeof event.data !== "string") return;
      let message: unknown;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof message !== "object" || message === null || Array.isArray(message)) return;
      this.messages++;
      this.cluster.apply(message as Record<string, unknown>, first);
      first = false;
      this.schedule();
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      this.reconnects++;
      const wait = this.delay * (0.5 + Math.random() / 2);
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
      this.onConnection("reconnecting", `reconnecting in ${(wait / 1000).toFixed(1)} s`);
      this.onDrop();
      this.retry = window.setTimeout(() => this.open(), wait);
    };
  }

  /** One redraw per animation frame, however many messages came in between. */
  private schedule(): void {
    if (this.frame !== undefined) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = undefined;
      const start = performance.now();
      this.cluster.flush();
      this.redraws[this.redrawCount++ % this.redraws.length] = performance.now() - start;
    });
  }
}
