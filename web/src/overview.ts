// The cluster overview: totals, and a live table of every worker (sortable, filterable)
// that renders only the rows in view (a virtualised list over a fixed row height), with
// a canvas sparkline per row. The table redraws once per animation frame, and only the
// rows whose worker changed.

import { type Cluster, type WorkerEntry, stateOf } from "./cluster";
import { ago, el, percent } from "./format";
import { drawSparkline, makeSparkCanvas } from "./sparkline";

const ROW_HEIGHT = 30;
const OVERSCAN = 6;
const RESORT_MS = 1000; // value changes re-sort at most this often (rows do not jump about)

type SortKey = "id" | "state" | "cpu" | "memory" | "gpu" | "storage" | "tasks" | "seen";

interface Column {
  key: SortKey | null;
  title: string;
  cls: string;
}

const COLUMNS: Column[] = [
  { key: "id", title: "Worker", cls: "c-id" },
  { key: "state", title: "State", cls: "c-state" },
  { key: "cpu", title: "CPU", cls: "c-num" },
  { key: "memory", title: "Memory", cls: "c-num" },
  { key: "gpu", title: "GPU", cls: "c-num" },
  { key: "storage", title: "Storage", cls: "c-num" },
  { key: "tasks", title: "Tasks", cls: "c-num" },
  { key: null, title: "CPU / memory", cls: "c-spark" },
  { key: "seen", title: "Last heartbeat", cls: "c-seen" },
];

const STATE_ORDER: Record<string, number> = {
  inactive: 0,
  suspect: 1,
  unknown: 2,
  authorised: 3,
  registered: 4,
  active: 5,
};

function sortValue(entry: WorkerEntry, key: SortKey): number | string {
  const w = entry.state;
  switch (key) {
    case "id":
      return w.worker_id;
    case "state":
      return STATE_ORDER[stateOf(w)] ?? 9;
    case "cpu":
      return w.cpu_usage;
    case "memory":
      return w.memory_usage;
    case "gpu":
      return w.gpu_usage;
    case "storage":
      return w.storage_usage ?? 0;
    case "tasks":
      return w.running_tasks?.length ?? 0;
    case "seen":
      return w.last_update || 0;
  }
}

interface RowSlot {
  node: HTMLAnchorElement;
  cells: HTMLElement[];
  canvas: HTMLCanvasElement;
  workerId: string | null;
  version: number;
  seen: string;
}

export class OverviewView {
  readonly root: HTMLElement;
  private readonly totals: HTMLElement;
  private readonly viewport: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly header: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly filterInput: HTMLInputElement;
  private readonly stateSelect: HTMLSelectElement;
  private slots: RowSlot[] = [];
  private order: string[] = [];
  private orderMembership = -1;
  private orderedAt = 0;
  private orderDirty = true;
  private sortKey: SortKey = "id";
  private sortDescending = false;
  private unlisten: () => void = () => {};
  private ticker: number | undefined;
  private frame: number | undefined;

  constructor(private readonly cluster: Cluster) {
    this.totals = el("div", { class: "totals", id: "totals" });
    this.filterInput = el("input", {
      type: "search",
      id: "filter",
      placeholder: "filter: worker id or state",
      "aria-label": "filter workers",
    });
    this.stateSelect = el(
      "select",
      { id: "state-filter", "aria-label": "state" },
      el("option", { value: "" }, "every state"),
      el("option", { value: "active" }, "active"),
      el("option", { value: "inactive" }, "not active"),
    );
    this.header = el("div", { class: "row head", role: "row" });
    for (const column of COLUMNS) {
      const cell = el("span", { class: column.cls, role: "columnheader" }, column.title);
      if (column.key) {
        const key = column.key;
        cell.classList.add("sortable");
        cell.dataset.sort = key;
        cell.addEventListener("click", () => this.sortBy(key));
      }
      this.header.append(cell);
    }
    this.spacer = el("div", { class: "spacer" });
    this.viewport = el("div", { class: "viewport", id: "workers", role: "table" }, this.spacer);
    this.empty = el("p", { class: "empty" }, "No workers yet.");
    this.root = el(
      "section",
      { class: "overview" },
      this.totals,
      el("div", { class: "toolbar" }, this.filterInput, this.stateSelect),
      el("div", { class: "table" }, this.header, this.viewport),
      this.empty,
    );
    this.filterInput.addEventListener("input", () => this.invalidateOrder());
    this.stateSelect.addEventListener("change", () => this.invalidateOrder());
    this.viewport.addEventListener("scroll", () => this.requestRender(), { passive: true });
    this.markSort();
  }

  mount(parent: HTMLElement): void {
    parent.replaceChildren(this.root);
    this.unlisten = this.cluster.listen(() => this.render());
    this.ticker = window.setInterval(() => this.render(), 1000); // "N s ago"
    window.addEventListener("resize", this.onResize);
    this.invalidateOrder();
  }

  unmount(): void {
    this.unlisten();
    window.clearInterval(this.ticker);
    window.removeEventListener("resize", this.onResize);
  }

  private onResize = (): void => this.requestRender();

  private requestRender(): void {
    if (this.frame !== undefined) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = undefined;
      this.render();
    });
  }

  private invalidateOrder(): void {
    this.orderDirty = true;
    this.requestRender();
  }

  private sortBy(key: SortKey): void {
    if (this.sortKey === key) this.sortDescending = !this.sortDescending;
    else {
      this.sortKey = key;
      this.sortDescending = key !== "id" && key !== "state";
    }
    this.markSort();
    this.invalidateOrder();
  }

  private markSort(): void {
    for (const cell of this.header.querySelectorAll<HTMLElement>("[data-sort]")) {
      const on = cell.dataset.sort === this.sortKey;
      cell.setAttribute("aria-sort", on ? (this.sortDescending ? "descending" : "ascending") : "none");
    }
  }

  private computeOrder(now: number): void {
    const filter = this.filterInput.value.trim().toLowerCase();
    const wanted = this.stateSelect.value;
    const ids: string[] = [];
    const keys = new Map<string, number | string>();
    for (const [id, entry] of this.cluster.workers) {
      const state = stateOf(entry.state);
      if (wanted === "active" && !entry.state.is_active) continue;
      if (wanted === "inactive" && entry.state.is_active) continue;
      if (filter && !id.toLowerCase().includes(filter) && !state.includes(filter)) continue;
      ids.push(id);
      keys.set(id, sortValue(entry, this.sortKey));
    }
    const sign = this.sortDescending ? -1 : 1;
    ids.sort((a, b) => {
      const x = keys.get(a) as number | string;
      const y = keys.get(b) as number | string;
      if (x < y) return -sign;
      if (x > y) return sign;
      return a < b ? -1 : a > b ? 1 : 0;
    });
    this.order = ids;
    this.orderMembership = this.cluster.membership;
    this.orderedAt = now;
    this.orderDirty = false;
  }

  private renderTotals(): void {
    let active = 0;
    let suspect = 0;
    let tasks = 0;
    let cpu = 0;
    let memory = 0;
    let reporting = 0;
    for (const { state } of this.cluster.workers.values()) {
      if (state.is_active) active++;
      if (state.state === "suspect") suspect++;
      tasks += state.running_tasks?.length ?? 0;
      if (state.is_active && state.last_update) {
        cpu += state.cpu_usage;
        memory += state.memory_usage;
        reporting++;
      }
    }
    const total = this.cluster.workers.size;
    const cards: [string, string, string][] = [
      ["total", "Workers", String(total)],
      ["active", "Active", String(active)],
      ["inactive", "Not active", String(total - active)],
      ["suspect", "Suspect", String(suspect)],
      ["tasks", "Running tasks", String(tasks)],
      ["cpu", "Average CPU", reporting ? percent(cpu / reporting) : "–"],
      ["memory", "Average memory", reporting ? percent(memory / reporting) : "–"],
    ];
    if (this.totals.childElementCount !== cards.length) {
      this.totals.replaceChildren(
        ...cards.map(([key, label]) =>
          el("div", { class: "card", "data-total": key }, el("b"), el("span", {}, label)),
        ),
      );
    }
    cards.forEach(([, , value], i) => {
      const b = this.totals.children[i].firstElementChild as HTMLElement;
      if (b.textContent !== value) b.textContent = value;
    });
  }

  private makeSlot(): RowSlot {
    const node = el("a", { class: "row", role: "row" });
    const cells = COLUMNS.map((column) => el("span", { class: column.cls, role: "cell" }));
    const canvas = makeSparkCanvas();
    cells[7].append(canvas);
    node.append(...cells);
    this.spacer.append(node);
    return { node, cells, canvas, workerId: null, version: -1, seen: "" };
  }

  private fill(slot: RowSlot, entry: WorkerEntry, now: number): void {
    const w = entry.state;
    if (slot.workerId !== w.worker_id) {
      slot.workerId = w.worker_id;
      slot.node.href = `#/worker/${encodeURIComponent(w.worker_id)}`;
      slot.node.dataset.workerId = w.worker_id;
      slot.cells[0].textContent = w.worker_id;
      slot.cells[0].title = w.worker_id;
      slot.version = -1;
      slot.seen = "";
    }
    if (slot.version !== entry.version) {
      slot.version = entry.version;
      const state = stateOf(w);
      slot.node.dataset.state = state;
      slot.cells[1].textContent = state;
      slot.cells[1].dataset.state = state;
      slot.cells[2].textContent = percent(w.cpu_usage);
      slot.cells[3].textContent = percent(w.memory_usage);
      slot.cells[4].textContent = percent(w.gpu_usage);
      slot.cells[5].textContent = percent(w.storage_usage);
      slot.cells[6].textContent = String(w.running_tasks?.length ?? 0);
      drawSparkline(slot.canvas, entry.cpu, entry.memory);
    }
    const seen = ago(w.last_update, now);
    if (slot.seen !== seen) {
      slot.seen = seen;
      slot.cells[8].textContent = seen;
    }
  }

  render(): void {
    const nowMs = performance.now();
    if (
      this.orderDirty ||
      this.orderMembership !== this.cluster.membership ||
      (this.sortKey !== "id" && nowMs - this.orderedAt > RESORT_MS)
    ) {
      this.computeOrder(nowMs);
    }
    this.renderTotals();
    const count = this.order.length;
    this.empty.hidden = this.cluster.workers.size > 0;
    this.spacer.style.height = `${count * ROW_HEIGHT}px`;
    const height = this.viewport.clientHeight || 600;
    const first = Math.max(0, Math.floor(this.viewport.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const visible = Math.ceil(height / ROW_HEIGHT) + 2 * OVERSCAN;
    while (this.slots.length < Math.min(visible, count)) this.slots.push(this.makeSlot());
    const now = Date.now() / 1000;
    for (let i = 0; i < this.slots.length; i++) {
      const slot = this.slots[i];
      const index = first + i;
      const entry = index < count ? this.cluster.workers.get(this.order[index]) : undefined;
      if (entry === undefined) {
        slot.node.hidden = true;
        continue;
      }
      slot.node.hidden = false;
      slot.node.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
      this.fill(slot, entry, now);
    }
  }
}
