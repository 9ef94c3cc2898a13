// The one WebSocket for live data (/ws/telemetry): the first message after a connect is
// the snapshot, then deltas. Reconnects by itself with capped exponential back-off and
// jitter (0.5 s doubling up to 10 s, reset after a good connect). Messages are applied
// to the cluster as they come (a cheap merge) and views redraw once per animation frame.
//
// A view may also listen to an event topic (the tasks page: `tasks`): the stream then
// subscribes to it with a control message, on this connection and after every reconnect,
// and unsubscribes when the last listener goes. The overview alone asks for nothing more
// than the telemetry, as before. Event frames (`{"topic": ..., "event": ...}`) go to the
// topic's listeners, never to the cluster.

import { streamUrl } from "./api";
import type { Cluster } from "./cluster";

export type Connection = "connecting" | "live" | "reconnecting";

/** A listener of one event topic of the stream (docs/WEBSOCKET_TELEMETRY.md). */
export interface TopicListener {
  /** The master sends the topic's events on this connection from now on (after every
   *  (re)connect): what the API is asked from now on misses none of them. */
  ready(): void;
  /** The events do not come now: the connection is down, or the master refused the topic. */
  lost(): void;
  /** One event, in the master's order. */
  event(event: Record<string, unknown>): void;
}

export interface TopicSource {
  /** Listen to ``topic``; the answer stops listening. Tells ``lost`` at once when the
   *  stream is not connected. */
  subscribe(topic: string, listener: TopicListener): () => void;
}

interface Topic {
  listeners: Set<TopicListener>;
  ready: boolean;
  asked: number; // the control message that subscribes it on this connection (0: none yet)
}

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

export class TelemetryStream implements TopicSource {
  private socket: WebSocket | null = null;
  private readonly topics = new Map<string, Topic>();
  private flowing = false; // the snapshot of this connection came: control messages may go
  private controlsSent = 0;
  private controlsAnswered = 0;
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

  subscribe(topic: string, listener: TopicListener): () => void {
    let entry = this.topics.get(topic);
    if (entry === undefined) {
      entry = { listeners: new Set(), ready: false, asked: 0 };
      this.topics.set(topic, entry);
      entry.asked = this.control({ subscribe: { topics: [topic] } });
    }
    const subscribed = entry;
    subscribed.listeners.add(listener);
    if (subscribed.ready) listener.ready();
    else if (!this.flowing) listener.lost();
    return () => {
      subscribed.listeners.delete(listener);
      if (subscribed.listeners.size || this.topics.get(topic) !== subscribed) return;
      this.topics.delete(topic);
      this.control({ unsubscribe: { topics: [topic] } });
    };
  }

  /** Sends a control message on a flowing connection; its number there (0: not sent). */
  private control(message: unknown): number {
    if (!this.flowing || this.socket === null) return 0;
    this.socket.send(JSON.stringify(message));
    return ++this.controlsSent;
  }

  /** A frame with a topic: an answer to a control message, or an event. */
  private onEvent(topic: string, event: unknown): void {
    if (typeof event !== "object" || event === null || Array.isArray(event)) return;
    if (topic === "subscription" || topic === "error") {
      // Every control message gets one answer, in order.
      const answered = ++this.controlsAnswered;
      const inForce = topic === "subscription" ? (event as { topics?: unknown }).topics : [];
      for (const [name, entry] of this.topics) {
        if (entry.ready || entry.asked !== answered) continue;
        entry.asked = 0;
        const yes = Array.isArray(inForce) && inForce.includes(name);
        entry.ready = yes;
        for (const listener of [...entry.listeners]) {
          if (yes) listener.ready();
          else listener.lost();
        }
      }
      return;
    }
    const entry = this.topics.get(topic);
    if (entry === undefined) return;
    for (const listener of [...entry.listeners]) listener.event(event as Record<string, unknown>);
  }

  /** The connection's snapshot came: subscribe again to every topic listened to. */
  private onFlowing(): void {
    this.flowing = true;
    if (this.topics.size === 0) return;
    const asked = this.control({ subscribe: { topics: [...this.topics.keys()] } });
    for (const entry of this.topics.values()) entry.asked = asked;
  }

  private onClosed(): void {
    const wasFlowing = this.flowing;
    this.flowing = false;
    this.controlsSent = 0;
    this.controlsAnswered = 0;
    for (const entry of this.topics.values()) {
      const told = entry.ready || wasFlowing;
      entry.ready = false;
      entry.asked = 0;
      if (told) for (const listener of [...entry.listeners]) listener.lost();
    }
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
      const frame = message as Record<string, unknown>;
      if (typeof frame.topic === "string") {
        // Not telemetry (its values are workers' objects, never a string).
        this.onEvent(frame.topic, frame.event);
        return;
      }
      this.messages++;
      this.cluster.apply(frame, first);
      if (first) this.onFlowing();
      first = false;
      this.schedule();
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.onClosed();
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
