// The cluster as the telemetry stream tells it: a map of worker id -> latest state,
// plus a short ring of recent figures per worker for the sparklines. Snapshots replace,
// deltas merge; a worker whose state is "removed" is dropped.

export interface RunningTask {
  task_id: string;
  status: string;
  cpu_allocated?: number;
  memory_allocated?: number;
  gpu_allocated?: number;
  cpu_usage?: number;
  memory_used_bytes?: number;
}

export interface WorkerState {
  worker_id: string;
  cpu_usage: number;
  memory_usage: number;
  gpu_usage: number;
  storage_usage?: number;
  running_tasks: RunningTask[];
  last_update: number;
  is_active: boolean;
  state?: string;
  [key: string]: unknown;
}

export const SPARK_POINTS = 60;

/** A fixed ring of the last SPARK_POINTS samples (NaN where none yet). */
export class Ring {
  readonly values = new Float32Array(SPARK_POINTS).fill(Number.NaN);
  head = 0; // index of the next write
  push(value: number): void {
    this.values[this.head] = value;
    this.head = (this.head + 1) % SPARK_POINTS;
  }
}

export interface WorkerEntry {
  state: WorkerState;
  cpu: Ring;
  memory: Ring;
  version: number; // bumped on every change: views redraw what changed only
}

export function stateOf(worker: WorkerState): string {
  return worker.state ?? (worker.is_active ? "active" : "inactive");
}

function isWorker(value: unknown): value is WorkerState {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { worker_id?: unknown }).worker_id === "string"
  );
}

export class Cluster {
  readonly workers = new Map<string, WorkerEntry>();
  /** Bumped on every change of the set or of any worker. */
  version = 0;
  /** Bumped when workers are added or removed (lists re-sort then). */
  membership = 0;
  private listeners = new Set<(changed: Set<string>) => void>();
  private changed = new Set<string>();

  /** Applies one stream message. ``snapshot``: it is the full state. */
  apply(message: Record<string, unknown>, snapshot: boolean): void {
    if (snapshot) {
      for (const id of this.workers.keys()) {
        if (!(id in message)) {
          this.workers.delete(id);
          this.changed.add(id);
          this.membership++;
        }
      }
    }
    for (const [id, value] of Object.entries(message)) {
      if (!isWorker(value)) continue; // not a worker's object (an event, an ack): ignored
      if (value.state === "removed") {
        if (this.workers.delete(id)) this.membership++;
        this.changed.add(id);
        continue;
      }
      const entry = this.workers.get(id);
      if (entry === undefined) {
        const fresh: WorkerEntry = { state: value, cpu: new Ring(), memory: new Ring(), version: 1 };
        if (value.last_update) {
          fresh.cpu.push(value.cpu_usage);
          fresh.memory.push(value.memory_usage);
        }
        this.workers.set(id, fresh);
        this.membership++;
      } else {
        if (value.last_update !== entry.state.last_update) {
          entry.cpu.push(value.cpu_usage);
          entry.memory.push(value.memory_usage);
        }
        entry.state = value;
        entry.version++;
      }
      this.changed.add(id);
    }
    this.version++;
  }

  /** Listeners hear the ids that changed since the last ``flush``. */
  listen(listener: (changed: Set<string>) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  flush(): void {
    if (this.changed.size === 0) return;
    const changed = this.changed;
    this.changed = new Set();
    for (const listener of this.listeners) listener(changed);
  }

  clear(): void {
    this.workers.clear();
    this.version++;
    this.membership++;
  }
}
