// Following one topic of the stream: what a page shows is read from the API when the
// subscription is in force (at the start and after every reconnect, so no event is
// missed), then kept current by the topic's events; it is read again every `liveMs` as
// a safety net, or every `pollMs` while the events do not flow (the stream is down, or
// the master does not send them).

import type { TopicSource } from "./stream";

export interface Follower {
  /** Read the whole state again; true when it was read. */
  read(): Promise<boolean>;
  event(event: Record<string, unknown>): void;
  liveChanged?(live: boolean): void;
}

export class TopicFollower {
  live = false; // the topic's events come
  private loaded = false; // a read succeeded
  private timer: number | undefined;
  private timerMs = 0;
  private stopEvents: (() => void) | null = null;
  private closed = false;

  constructor(
    private readonly topics: TopicSource,
    private readonly topic: string,
    private readonly follower: Follower,
    private readonly liveMs: number,
    private readonly pollMs: number,
  ) {}

  start(): void {
    this.every(this.pollMs); // until the stream answers
    this.stopEvents = this.topics.subscribe(this.topic, {
      ready: () => {
        this.setLive(true);
        void this.read(); // from now on no event is missed
      },
      lost: () => {
        this.setLive(false);
        if (!this.loaded) void this.read();
      },
      event: (event) => this.follower.event(event),
    });
  }

  stop(): void {
    this.closed = true;
    this.stopEvents?.();
    this.stopEvents = null;
    window.clearInterval(this.timer);
  }

  /** Read now (also: at a page's start, after an action no event reports). */
  async read(): Promise<void> {
    if (this.closed) return;
    if (await this.follower.read()) this.loaded = true;
  }

  private setLive(live: boolean): void {
    this.live = live;
    this.follower.liveChanged?.(live);
    this.every(live ? this.liveMs : this.pollMs);
  }

  private every(ms: number): void {
    if (this.closed || ms === this.timerMs) return;
    window.clearInterval(this.timer);
    this.timerMs = ms;
    this.timer = window.setInterval(() => void this.read(), ms);
  }
}
