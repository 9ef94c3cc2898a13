// One worker: its figures, live charts that start from the stored history
// (GET /api/workers/{id}/history) and extend from the stream, and its tasks (live from
// the stream's task events: task_list.ts).

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

import { ApiError, getJson } from "./api";
import { type Cluster, stateOf } from "./cluster";
import { ago, bytes, el, figure, percent } from "./format";
import type { TopicSource } from "./stream";
import { LiveTaskList } from "./task_list";
import { tasksTable } from "./tasks_table";

const HISTORY_SECONDS = 3600;
const HISTORY_POINTS = 300;
const MAX_POINTS = 2000;
const METRICS = ["cpu_usage", "memory_usage", "gpu_usage"] as const;
const SHOWN_TASKS = 200; // the newest of the worker's tasks
const TASK_POLL_MS = 3000; // without the stream's task events

interface History {
  t: number[];
  series: Record<string, { avg: (number | null)[] }>;
  resolution?: number | string;
  tier?: string;
}

interface WorkerInfo {
  total_cpu: number;
  total_memory: number;
  total_storage: number;
  total_gpu: number;
  address: string;
  memory_total_bytes?: number | null;
}

function resolution(history: History): string {
  const r = Number(history.resolution);
  return Number.isFinite(r) && r > 0 ? ` (one per ${r < 60 ? `${r} s` : `${r / 60} min`})` : "";
}

export class WorkerView {
  readonly root: HTMLElement;
  private readonly figures = el("div", { class: "figures" });
  private readonly note = el("p", { class: "note", id: "history-note" }, "loading history…");
  private readonly chartBox = el("div", { class: "chart", id: "chart" });
  private readonly taskBox = el("div", { id: "worker-tasks" });
  private readonly taskLine = el("p", { class: "line" });
  private chart: uPlot | null = null;
  private data: [number[], (number | null)[], (number | null)[], (number | null)[]] = [[], [], [], []];
  private historyPoints = 0;
  private unlisten: () => void = () => {};
  private closed = false;
  private info: WorkerInfo | null = null;
  private readonly tasks: LiveTaskList;

  constructor(
    private readonly cluster: Cluster,
    private readonly workerId: string,
    private readonly admin: () => boolean,
    topics: TopicSource,
  ) {
    this.root = el(
      "section",
      { class: "worker", "data-worker-id": workerId },
      el("h1", {}, el("a", { href: "#/" }, "Workers"), " / ", workerId),
      this.figures,
      el("h2", {}, "CPU, memory and GPU (%)"),
      this.note,
      this.chartBox,
      el("h2", {}, "Tasks"),
      this.taskLine,
      this.taskBox,
    );
    this.tasks = new LiveTaskList(
      topics,
      {
        selection: () => ({
          query: `worker_id=${encodeURIComponent(workerId)}&limit=${SHOWN_TASKS}`,
          keeps: (task) => task.worker_id === workerId, // a retry placed elsewhere leaves
          limit: SHOWN_TASKS,
        }),
        changed: () => this.renderTasks(),
        failed: (message) => {
          this.taskLine.textContent = message;
        },
        liveChanged: (live) => {
          this.taskBox.dataset.live = String(live);
        },
      },
      TASK_POLL_MS,
    );
  }

  mount(parent: HTMLElement): void {
    parent.replaceChildren(this.root);
    this.makeChart();
    this.unlisten = this.cluster.listen((changed) => {
      if (changed.has(this.workerId)) this.onTelemetry();
    });
    this.onTelemetry();
    void this.loadHistory();
    void this.loadInfo();
    this.tasks.start();
    window.addEventListener("resize", this.onResize);
  }

  unmount(): void {
    this.closed = true;
    this.unlisten();
    this.tasks.stop();
    window.removeEventListener("resize", this.onResize);
    this.chart?.destroy();
  }

  private onResize = (): void => {
    this.chart?.setSize({ width: this.chartWidth(), height: 260 });
  };

  private chartWidth(): number {
    return Math.max(320, (this.chartBox.clientWidth || 800) - 14);
  }

  private makeChart(): void {
    const options: uPlot.Options = {
      width: this.chartWidth(),
      height: 260,
      scales: { y: { range: [0, 100] } },
      series: [
        {},
        { label: "CPU", stroke: "#1f8fd6", width: 1.5 },
        { label: "Memory", stroke: "#8e6bd8", width: 1.5 },
        { label: "GPU", stroke: "#d8873b", width: 1.5 },
      ],
      axes: [{}, { values: (_u, ticks) => ticks.map((v) => `${v}%`) }],
    };
    this.chart = new uPlot(options, this.data, this.chartBox);
  }

  private async loadHistory(): Promise<void> {
    const to = Math.floor(Date.now() / 1000);
    const query = new URLSearchParams({
      metrics: METRICS.join(","),
      from: String(to - HISTORY_SECONDS),
      to: String(to),
      points: String(HISTORY_POINTS),
    });
    let history: History;
    try {
      history = await getJson<History>(
        `/api/workers/${encodeURIComponent(this.workerId)}/history?${query}`,
      );
    } catch (error) {
      if (this.closed) return;
      this.note.dataset.history = "none";
      this.note.textContent =
        error instanceof ApiError && error.status === 404
          ? "No history yet: the chart starts from the live stream."
          : `History not available (${error instanceof Error ? error.message : error}); the chart starts from the live stream.`;
      return;
    }
    if (this.closed) return;
    const [t, cpu, memory, gpu] = this.data;
    const live = t.map((time, i) => [time, cpu[i], memory[i], gpu[i]] as const);
    const first = live.length ? live[0][0] : Number.POSITIVE_INFINITY;
    const series = METRICS.map((m) => history.series?.[m]?.avg ?? []);
    const merged: typeof this.data = [[], [], [], []];
    let stored = 0;
    (history.t ?? []).forEach((time, i) => {
      if (time >= first) return; // the stream has it
      const values = [series[0][i] ?? null, series[1][i] ?? null, series[2][i] ?? null];
      const known = values.some((v) => v !== null);
      if (!known && stored === 0) return; // the chart starts at the first stored point
      if (known) stored++;
      merged[0].push(time);
      merged[1].push(values[0]);
      merged[2].push(values[1]);
      merged[3].push(values[2]);
    });
    this.historyPoints = stored;
    for (const row of live) row.forEach((v, k) => merged[k].push(v as number));
    this.data = merged;
    this.chart?.setData(this.data);
    this.note.dataset.history = String(this.historyPoints);
    this.note.textContent = this.historyPoints
      ? `${this.historyPoints} stored points${resolution(history)}, then live.`
      : "No history yet: the chart starts from the live stream.";
  }

  private async loadInfo(): Promise<void> {
    try {
      this.info = await getJson<WorkerInfo>(`/api/workers/${encodeURIComponent(this.workerId)}`);
      this.renderFigures();
    } catch {
      // the stream's figures are enough
    }
  }

  private renderTasks(): void {
    if (this.closed) return;
    const tasks = this.tasks.tasks;
    this.taskBox.replaceChildren(
      tasks.length
        ? tasksTable(tasks, this.admin(), (line) => {
            this.taskLine.textContent = line;
            if (!this.tasks.live) void this.tasks.load(); // else the task's event comes
          }, false)
        : el("p", { class: "empty" }, "No tasks."),
    );
  }

  private onTelemetry(): void {
    const entry = this.cluster.workers.get(this.workerId);
    this.renderFigures();
    if (entry === undefined || !entry.state.last_update) return;
    const w = entry.state;
    const [t, cpu, memory, gpu] = this.data;
    if (t.length && w.last_update <= t[t.length - 1]) return;
    t.push(w.last_update);
    cpu.push(w.cpu_usage);
    memory.push(w.memory_usage);
    gpu.push(w.gpu_usage);
    if (t.length > MAX_POINTS) for (const column of this.data) column.shift();
    this.chart?.setData(this.data);
    this.chartBox.dataset.points = String(t.length);
  }

  private renderFigures(): void {
    const w = this.cluster.workers.get(this.workerId)?.state;
    const info = this.info;
    const rows: [string, string][] = w
      ? [
          ["State", stateOf(w)],
          ["Last heartbeat", ago(w.last_update)],
          ["CPU", percent(w.cpu_usage)],
          ["Memory", percent(w.memory_usage)],
          ["GPU", percent(w.gpu_usage)],
          ["Storage", percent(w.storage_usage)],
          ["Running tasks", String(w.running_tasks?.length ?? 0)],
        ]
      : [["State", "not in the stream"]];
    if (info) {
      rows.push(
        ["Address", info.address || "–"],
        ["CPUs", String(info.total_cpu)],
        ["Memory size", info.memory_total_bytes ? bytes(info.memory_total_bytes) : `${info.total_memory} GiB`],
        ["Storage size", `${Number(info.total_storage).toFixed(1)} GiB`],
        ["GPUs", String(info.total_gpu)],
      );
    }
    this.figures.replaceChildren(...rows.map(([k, v]) => figure(k, v)));
  }
}
