// A list of tasks kept live (the tasks page, a worker's page): read with GET /api/tasks,
// then updated from the `tasks` events of the stream (follow.ts: read again when the
// subscription is in force, every 30 s, and every `pollMs` without the events). Each
// event carries the task as the list shows it, so a task is updated, inserted or dropped
// from the event alone.

import { getJson } from "./api";
import { TopicFollower } from "./follow";
import type { TopicSource } from "./stream";
import type { Task } from "./tasks_table";

const LIVE_REFRESH_MS = 30_000; // with the events: a safety net only

/** Which tasks the list holds: the query of its read, and the same rule for events. */
export interface TaskSelection {
  query: string; // of GET /api/tasks, `limit` included
  keeps(task: Task): boolean;
  limit: number;
}

export interface TaskListOwner {
  selection(): TaskSelection;
  changed(): void; // the tasks changed: redraw (at most once per animation frame)
  failed(message: string): void; // a read failed
  liveChanged?(live: boolean): void;
}

export function isTask(value: Record<string, unknown>): value is Record<string, unknown> & Task {
  return (
    typeof value.task_id === "string" &&
    typeof value.status === "string" &&
    typeof value.worker_id === "string" &&
    typeof value.submitted_at === "number"
  );
}

export class LiveTaskList {
  tasks: Task[] = []; // newest first
  private loaded = false;
  private kept: TaskSelection | null = null; // the selection of the list in `tasks`
  private generation = 0; // of the latest read: an older answer is dropped
  private readonly recording = new Set<Task[]>(); // events that came during each read
  private readonly follower: TopicFollower;
  private frame: number | undefined;
  private closed = false;

  constructor(
    topics: TopicSource,
    private readonly owner: TaskListOwner,
    pollMs: number,
  ) {
    this.follower = new TopicFollower(
      topics,
      "tasks",
      {
        read: () => this.read(),
        event: (event) => this.onEvent(event),
        liveChanged: (live) => owner.liveChanged?.(live),
      },
      LIVE_REFRESH_MS,
      pollMs,
    );
  }

  /** The stream's task events come. */
  get live(): boolean {
    return this.follower.live;
  }

  start(): void {
    this.follower.start();
  }

  stop(): void {
    this.closed = true;
    this.follower.stop();
    if (this.frame !== undefined) cancelAnimationFrame(this.frame);
  }

  /** Reads the list again now: when the selection changed, after an action whose
   *  outcome no event will bring. */
  load(): Promise<void> {
    return this.follower.read();
  }

  private async read(): Promise<boolean> {
    const selection = this.owner.selection();
    const generation = ++this.generation;
    const during: Task[] = [];
    this.recording.add(during);
    try {
      const tasks = await getJson<Task[]>(`/api/tasks?${selection.query}`);
      if (generation !== this.generation || this.closed) return false;
      tasks.reverse();
      this.tasks = tasks;
      this.kept = selection;
      this.loaded = true;
      // An event that came while the list was on its way may be newer than the list.
      for (const task of during) this.apply(task);
      this.owner.changed();
      return true;
    } catch (error) {
      if (generation === this.generation && !this.closed) {
        this.owner.failed(error instanceof Error ? error.message : String(error));
      }
      return false;
    } finally {
      this.recording.delete(during);
    }
  }

  private onEvent(event: Record<string, unknown>): void {
    if (!isTask(event)) return;
    for (const during of this.recording) during.push(event);
    if (this.loaded && this.apply(event)) this.schedule();
  }

  /** One redraw per animation frame, however many events came in between. */
  private schedule(): void {
    if (this.frame !== undefined || this.closed) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = undefined;
      this.owner.changed();
    });
  }

  /** Puts the task of an event in the list: in its place, or where its submission time
   *  says (newest first); out of it when the selection no longer keeps it. True when
   *  the list changed. */
  private apply(task: Task): boolean {
    const selection = this.kept;
    if (selection === null) return false;
    const index = this.tasks.findIndex((t) => t.task_id === task.task_id);
    const kept = selection.keeps(task);
    if (index >= 0) {
      if (kept) this.tasks[index] = task;
      else this.tasks.splice(index, 1);
      return true;
    }
    if (!kept) return false;
    let at = this.tasks.findIndex((t) => t.submitted_at <= task.submitted_at);
    if (at < 0) {
      if (this.tasks.length >= selection.limit) return false; // older than every task read
      at = this.tasks.length;
    }
    this.tasks.splice(at, 0, task);
    if (this.tasks.length > selection.limit) this.tasks.pop();
    return true;
  }
}
